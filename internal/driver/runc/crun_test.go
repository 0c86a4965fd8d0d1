package runc

import (
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestCrun runs the lifecycle, limits, a tty exec, logs and attaching to a
// workload with a terminal with crun, which on this kind of host needs the
// hybrid-cgroup wrapper.
func TestCrun(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "crun")
	if d.name != "crun" {
		t.Fatalf("driver for crun calls itself %q", d.name)
	}
	t.Logf("crun command: %s", d.rt.Command)
	testLifecycle(t, d)

	cfg := testConfig(testRootfs(t), "sh", "-c", "echo hello from crun; sleep 1000")
	cfg.Spec.Cores, cfg.Spec.MemoryMiB = 0.25, 48
	drivertest.Run(t, testCtx(t), d, cfg)
	if detectCgroups() != cgroupUnified {
		testLimits(t, d, cfg)
	}
	out := &testutil.LockedBuffer{}
	resize := make(chan driver.TermSize, 1)
	resize <- driver.TermSize{Rows: 21, Cols: 61}
	code, err := d.Exec(testCtx(t), cfg.ID, driver.ExecConfig{Args: []string{"sh", "-c", "stty size; exit 6"}, IO: driver.IO{Stdout: out, Tty: true, Resize: resize}})
	if err != nil || code != 6 {
		t.Fatalf("crun tty exec: %d, %v; output %q", code, err, out.String())
	}
	mustContain(t, "crun tty exec", out.String(), "21 61")
	testutil.WaitFor(t, waitLimit, "crun workload's log", func() bool {
		return drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}) == "hello from crun\n"
	})

	// A workload with a terminal, attached before and after a new Driver
	// takes it over.
	tty := ttyConfig(testRootfs(t))
	drivertest.Run(t, testCtx(t), d, tty)
	echoes(t, d, tty.ID, "crun", driver.TermSize{Rows: 22, Cols: 62})

	d.Close()
	d2 := restarted(t, d)
	if st, err := d2.Recover(testCtx(t), tty); err != nil || st.State != driver.StateRunning {
		t.Fatalf("crun Recover of the tty workload: %+v, %v", st, err)
	}
	echoes(t, d2, tty.ID, "crun-again", driver.TermSize{Rows: 23, Cols: 63})
	st, err := d2.Recover(testCtx(t), cfg)
	if err != nil || st.State != driver.StateRunning {
		t.Fatalf("crun Recover: %+v, %v", st, err)
	}
	if err := d2.Stop(testCtx(t), cfg.ID, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := d2.Start(testCtx(t), cfg.ID); err != nil {
		t.Fatalf("crun restart: %v", err)
	}
	drivertest.ExecOK(t, testCtx(t), d2, cfg.ID, "true")
}
