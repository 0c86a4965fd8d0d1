package runc

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestDeleteRemovesCgroups runs workloads under a cgroup parent of their
// own, as a node does, and checks that Delete leaves none of their cgroups
// behind, even when the runtime could not remove one, and that the parent
// goes once it is empty.
func TestDeleteRemovesCgroups(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	d.opts.CgroupParent = "/hypercore/test-" + spec.NewID().String()[:8]
	t.Cleanup(func() { _ = RemoveCgroupParent(d.opts.CgroupParent) })
	ctx := testCtx(t)

	plain := testConfig(testRootfs(t), "sleep", "1000")
	drivertest.Run(t, ctx, d, plain)
	if len(testutil.CgroupDirs(t, plain.ID.String())) == 0 {
		t.Fatal("the running workload has no cgroup below any /sys/fs/cgroup/.../hypercore; the test looks in the wrong place")
	}
	if err := d.Delete(ctx, plain.ID); err != nil {
		t.Fatal(err)
	}
	if left := testutil.CgroupDirs(t, plain.ID.String()); len(left) > 0 {
		t.Errorf("cgroups left after Delete: %q", left)
	}

	// A process that is not the workload's sits in its stopped cgroup:
	// the runtime fails to remove the cgroup and forgets the container
	// anyway. Delete must say so and leave the process alone; once the
	// process is gone, Delete must remove the cgroup.
	busy := testConfig(testRootfs(t), "sleep", "1000")
	drivertest.Run(t, ctx, d, busy)
	if err := d.Stop(ctx, busy.ID, 0); err != nil {
		t.Fatal(err)
	}
	intruder := exec.Command("sleep", "1000")
	if err := intruder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = intruder.Process.Kill(); _ = intruder.Wait() })
	pid := strconv.Itoa(intruder.Process.Pid)
	moved := 0
	for _, dir := range testutil.CgroupDirs(t, busy.ID.String()) {
		if os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0) == nil {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("could not move a process into the workload's cgroup")
	}
	err := d.Delete(ctx, busy.ID)
	t.Logf("Delete with a process in the cgroup: %v", err)
	if err == nil || !strings.Contains(err.Error(), pid) {
		t.Errorf("Delete with process %s in the workload's cgroup: %v, want an error naming it", pid, err)
	}
	if !alive(intruder.Process.Pid) {
		t.Error("Delete killed the process in the workload's cgroup")
	}
	_ = intruder.Process.Kill()
	_ = intruder.Wait()
	if err := d.Delete(ctx, busy.ID); err != nil {
		t.Fatalf("Delete once the cgroup is empty: %v", err)
	}
	if left := testutil.CgroupDirs(t, busy.ID.String()); len(left) > 0 {
		t.Errorf("cgroups left after Delete: %q", left)
	}

	if err := RemoveCgroupParent(d.opts.CgroupParent); err != nil {
		t.Fatal(err)
	}
	if left := testutil.CgroupDirs(t, path.Base(d.opts.CgroupParent)); len(left) > 0 {
		t.Errorf("empty cgroup parent left after RemoveCgroupParent: %q", left)
	}
}

// alive reports whether process pid exists and has not exited: a child
// that was killed stays a zombie until waited for.
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(data), ") ")
	return after != "" && after[0] != 'Z'
}
