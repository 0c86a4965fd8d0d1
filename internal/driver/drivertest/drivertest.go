// Package drivertest holds what the tests of the drivers share. Its helpers
// work through the driver.Driver interface only, so a test of one driver
// reads like the same test of another, and they fail the test instead of
// returning errors: what they do is setup or observation, not what a test
// checks.
package drivertest

import (
	"bytes"
	"context"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Create creates cfg and deletes it when the test ends, so that a test that
// fails halfway leaves no workload, mount or cgroup behind on the host.
func Create(t testing.TB, ctx context.Context, d driver.Driver, cfg driver.Config) {
	t.Helper()
	t.Cleanup(func() {
		// Not ctx: it may have ended by the time the test is cleaned up.
		if err := d.Delete(context.Background(), cfg.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := d.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// Run creates and starts cfg as Create does, and fails the test unless the
// workload then runs with a pid: tests that go on to exec or read logs
// would otherwise fail later with a less telling error.
func Run(t testing.TB, ctx context.Context, d driver.Driver, cfg driver.Config) {
	t.Helper()
	Create(t, ctx, d, cfg)
	if err := d.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != driver.StateRunning || st.Pid <= 0 {
		t.Fatalf("after Start: status %+v, want running with a pid", st)
	}
}

// Exec runs args in workload id and returns its stdout and stderr as they
// interleaved, and its exit code.
func Exec(t testing.TB, ctx context.Context, d driver.Driver, id spec.ID, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code, err := d.Exec(ctx, id, driver.ExecConfig{Args: args, IO: driver.IO{Stdout: &out, Stderr: &out}})
	if err != nil {
		t.Fatalf("exec %q: %v", args, err)
	}
	return out.String(), code
}

// ExecOK is Exec for a command that must succeed: it fails the test, with
// the output, unless args exit 0.
func ExecOK(t testing.TB, ctx context.Context, d driver.Driver, id spec.ID, args ...string) string {
	t.Helper()
	out, code := Exec(t, ctx, d, id, args...)
	if code != 0 {
		t.Fatalf("exec %q exited %d: %s", args, code, out)
	}
	return out
}

// Logs returns workload id's log as opts select it, read to its end. With
// opts.Follow it returns only once ctx ends or the workload is deleted.
func Logs(t testing.TB, ctx context.Context, d driver.Driver, id spec.ID, opts driver.LogOptions) string {
	t.Helper()
	r, err := d.Logs(ctx, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
