package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing the test once limit has
// passed. Tests wait on what real processes do in their own time, so they
// poll rather than sleep a guess; limit only bounds how long a broken test
// hangs, and nothing should assert on how long the wait took.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
