package procwatch

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// orphan starts script in a shell that exits at once, so the script's
// process is reparented to this test process (a subreaper), and returns
// its pid. The caller holds Hold.
func orphan(t *testing.T, script string) int {
	t.Helper()
	out, err := exec.Command("sh", "-c", "sh -c '"+script+"' >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestWaitReadsExitCodeOfAdoptedOrphan(t *testing.T) {
	if err := Enable(); err != nil {
		t.Fatal(err)
	}
	release := Hold()
	pid := orphan(t, "sleep 0.2; exit 5")
	p, err := Open(pid, 0)
	release()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.Child {
		t.Fatalf("pid %d should have been reparented to the subreaper", pid)
	}
	exit, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 5 || exit.Reason != "" {
		t.Fatalf("exit = %+v, want code 5", exit)
	}
}

func TestWaitOnExitedBeforeOpen(t *testing.T) {
	if err := Enable(); err != nil {
		t.Fatal(err)
	}
	release := Hold()
	// It outlives its first parent, a shell that could reap it itself,
	// and is a zombie of ours, kept by Hold, well before Open.
	pid := orphan(t, "sleep 0.05; exit 7")
	time.Sleep(300 * time.Millisecond)
	p, err := Open(pid, 0)
	release()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if exit, err := p.Wait(); err != nil || exit.Code != 7 {
		t.Fatalf("exit = %+v, %v; want code 7", exit, err)
	}
}

func TestKilledBySignal(t *testing.T) {
	if err := Enable(); err != nil {
		t.Fatal(err)
	}
	release := Hold()
	pid := orphan(t, "sleep 30")
	p, err := Open(pid, 0)
	release()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Signal(9); err != nil {
		t.Fatal(err)
	}
	if exit, err := p.Wait(); err != nil || exit.Code != 137 {
		t.Fatalf("exit = %+v, %v; want 137", exit, err)
	}
}

func TestReapOrphansSparesOthersChildren(t *testing.T) {
	if err := Enable(); err != nil {
		t.Fatal(err)
	}
	// An orphan nobody watches is reaped...
	release := Hold()
	pid := orphan(t, "exit 0")
	release()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ReapOrphans()
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d was not reaped", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// ...while os/exec's own child, a zombie until Wait, is left to Wait.
	cmd := exec.Command("sh", "-c", "exit 3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	for range 3 {
		ReapOrphans()
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("cmd.Wait = %v, want exit status 3 (the reaper must not take os/exec's children)", err)
	}
}

func TestOpenChecksStartTime(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cmd.Process.Pid, st+1); !errors.Is(err, ErrGone) {
		t.Fatalf("Open with a wrong start time = %v, want ErrGone", err)
	}
	p, err := Open(cmd.Process.Pid, st)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}
