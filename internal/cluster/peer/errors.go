package peer

import (
	"errors"
	"fmt"
	"strconv"

	"connectrpc.com/connect"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// ErrUnreachable means a peer could not be reached: it is down, or the
// network between the two nodes is. Its workloads keep their place until
// the cluster's failover moves them. It is workload.ErrUnreachable, which
// the API answers 503.
var ErrUnreachable = workload.ErrUnreachable

// errorKinds are the errors that must keep their meaning across a peer
// call. The peer names the kind in a header beside the Connect code, so
// the caller tells them apart even where codes coincide (a peer that is
// not the leader and a registry that is down are both "unavailable", as
// is a peer that cannot be reached at all). The first error of a kind is
// what the caller gets back; the others are only recognised on the way
// out.
var errorKinds = []struct {
	kind string
	errs []error
	code connect.Code
}{
	{"exists", []error{raftstore.ErrExists}, connect.CodeAlreadyExists},
	{"conflict", []error{raftstore.ErrConflict}, connect.CodeAborted},
	{"port-taken", []error{raftstore.ErrPortTaken}, connect.CodeResourceExhausted},
	// The node's own store says not found too, for a workload it does
	// not hold, and its driver for one whose container or VM is gone; to
	// the caller (and the API, which answers 404) all mean the same.
	{"not-found", []error{workload.ErrNotFound, store.ErrNotFound, driver.ErrNotFound}, connect.CodeNotFound},
	{"no-image", []error{image.ErrNotFound}, connect.CodeInvalidArgument},
	{"registry", []error{image.ErrRegistry}, connect.CodeUnavailable},
	{"no-capacity", []error{node.ErrNoCapacity}, connect.CodeResourceExhausted},
	{"unsupported", []error{node.ErrUnsupported}, connect.CodeFailedPrecondition},
}

// Headers of a peer's error answer.
const (
	// kindHeader carries an errorKinds kind, or "not-leader".
	kindHeader = "Hypercore-Error"
	// indexHeader carries the log index of a refused Apply: a refused
	// command is in the log too, and the caller waits for it.
	indexHeader = "Hypercore-Raft-Index"
)

// toConnect turns an error of this node into a Connect error that names
// its kind, for fromConnect on the caller's side. An error that already
// is a Connect error (a bad request the handler refused) passes as it is.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := err.(*connect.Error); ok {
		return ce
	}
	code, kind := connect.CodeInternal, ""
	var nl raftstore.ErrNotLeader
	if errors.As(err, &nl) {
		code, kind = connect.CodeUnavailable, "not-leader"
	} else {
	kinds:
		for _, k := range errorKinds {
			for _, e := range k.errs {
				if errors.Is(err, e) {
					code, kind = k.code, k.kind
					break kinds
				}
			}
		}
	}
	ce := connect.NewError(code, err)
	if kind != "" {
		ce.Meta().Set(kindHeader, kind)
	}
	return ce
}

// fromConnect turns a peer's answer back into an error that errors.Is
// and errors.As recognise, keeping the peer's message. An unavailable
// answer the peer did not write itself means the peer was not reached
// (ErrUnreachable).
func fromConnect(node string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	kind := ce.Meta().Get(kindHeader)
	if kind == "not-leader" {
		return fmt.Errorf("node %s: %w", node, raftstore.ErrNotLeader{})
	}
	for _, k := range errorKinds {
		if kind == k.kind {
			return fmt.Errorf("%w: on node %s: %s", k.errs[0], node, ce.Message())
		}
	}
	if kind == "" && ce.Code() == connect.CodeUnavailable {
		return fmt.Errorf("%w: %s: %s", ErrUnreachable, node, ce.Message())
	}
	return fmt.Errorf("node %s: %s", node, ce.Message())
}

// withIndex is toConnect for a refused Apply, with the index the refused
// command took in the log.
func withIndex(err error, index uint64) error {
	ce := toConnect(err).(*connect.Error) // toConnect makes nothing else
	ce.Meta().Set(indexHeader, strconv.FormatUint(index, 10))
	return ce
}

// indexOf is the log index a refused Apply's error carries, or 0.
func indexOf(err error) uint64 {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0
	}
	index, _ := strconv.ParseUint(ce.Meta().Get(indexHeader), 10, 64)
	return index
}

// invalid is a request this node refuses to act on.
func invalid(err error) error {
	return connect.NewError(connect.CodeInvalidArgument, err)
}
