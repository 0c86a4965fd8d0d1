package gvisor

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// TestRunTellsExitCode checks that a sandbox started in one runsc call is
// watched through the process runsc names in its pid file (the sandbox,
// which is the daemon's child once runsc exits), and that the code its
// workload exits with is the code told.
func TestRunTellsExitCode(t *testing.T) {
	d := newTestDriver(t)
	ch := make(chan driver.Exit, 1)
	d.NotifyExit(func(_ spec.ID, e driver.Exit) { ch <- e })
	ctx := testCtx(t)
	cfg := testConfig(t, "sh", "-c", "sleep 1; exit 5")
	if err := d.Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(ctx, cfg.ID)
	if err != nil || st.State != driver.StateRunning {
		t.Fatalf("Status after Run: %+v %v", st, err)
	}
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/comm")
	t.Logf("pid file names pid %d (%s)", st.Pid, strings.TrimSpace(string(comm)))
	select {
	case e := <-ch:
		if e.Code != 5 {
			t.Errorf("told exit %+v, want code 5", e)
		}
	case <-time.After(time.Minute):
		t.Fatal("no exit told")
	}
	if err := d.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
}
