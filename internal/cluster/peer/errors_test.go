package peer

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestErrorKinds: every kind survives the trip with its message, even
// where two kinds share a Connect code (a registry that is down is not a
// peer that is down).
func TestErrorKinds(t *testing.T) {
	for _, k := range errorKinds {
		for _, e := range k.errs {
			sent := fmt.Errorf("pulling: %w (try again)", e)
			got := fromConnect("alpha", toConnect(sent))
			if !errors.Is(got, k.errs[0]) || !strings.Contains(got.Error(), "try again") || !strings.Contains(got.Error(), "alpha") {
				t.Errorf("%v came back as %v", sent, got)
			}
			if errors.Is(got, ErrUnreachable) {
				t.Errorf("%v came back as unreachable", sent)
			}
		}
	}
	if got := fromConnect("alpha", toConnect(store.ErrNotFound)); !errors.Is(got, workload.ErrNotFound) {
		t.Errorf("the node store's not-found came back as %v", got)
	}
	// Exec or logs of a workload whose container is gone: 404 here as on
	// the host itself.
	if got := fromConnect("alpha", toConnect(fmt.Errorf("exec: %w", driver.ErrNotFound))); !errors.Is(got, workload.ErrNotFound) {
		t.Errorf("the driver's not-found came back as %v", got)
	}
	if got := fromConnect("alpha", toConnect(image.ErrRegistry)); !errors.Is(got, image.ErrRegistry) || errors.Is(got, ErrUnreachable) {
		t.Errorf("a registry that is down came back as %v", got)
	}
	// A port taken in raft is "no room" to the API on the caller's side too.
	if got := fromConnect("alpha", toConnect(raftstore.ErrPortTaken)); !errors.Is(got, raftstore.ErrPortTaken) || !errors.Is(got, workload.ErrNoCapacity) {
		t.Errorf("a port taken in raft came back as %v, not a workload.ErrNoCapacity", got)
	}
	var nl raftstore.ErrNotLeader
	if got := fromConnect("alpha", toConnect(fmt.Errorf("apply: %w", raftstore.ErrNotLeader{}))); !errors.As(got, &nl) {
		t.Errorf("not-leader came back as %v", got)
	}
	// Unavailable without a kind: the peer itself was not reached.
	if got := fromConnect("alpha", connect.NewError(connect.CodeUnavailable, errors.New("dial tcp: refused"))); !errors.Is(got, ErrUnreachable) || !errors.Is(got, workload.ErrUnreachable) {
		t.Errorf("a transport failure came back as %v, not a workload.ErrUnreachable", got)
	}
	// Anything else keeps its message and no kind.
	got := fromConnect("alpha", toConnect(errors.New("disk full")))
	if !strings.Contains(got.Error(), "disk full") || errors.Is(got, workload.ErrNotFound) || errors.Is(got, ErrUnreachable) {
		t.Errorf("a plain error came back as %v", got)
	}
	if toConnect(nil) != nil {
		t.Error("toConnect(nil) is not nil")
	}
}
