package membership

import (
	"net"
	"strconv"

	"github.com/hashicorp/serf/serf"

	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// State is what the cluster believes about a member.
type State string

// The states a member can be in.
const (
	// StateAlive members answer probes.
	StateAlive State = "alive"
	// StateLeaving members announced a graceful leave that is still
	// spreading.
	StateLeaving State = "leaving"
	// StateLeft members left gracefully; their workloads were stopped on
	// purpose.
	StateLeft State = "left"
	// StateFailed members stopped answering probes: crashed, cut off or
	// badly overloaded. Their workloads need failover.
	StateFailed State = "failed"
	// StateUnknown is a status this package does not know, from a newer
	// serf; treat it as not alive.
	StateUnknown State = "unknown"
)

func stateOf(s serf.MemberStatus) State {
	switch s {
	case serf.StatusAlive:
		return StateAlive
	case serf.StatusLeaving:
		return StateLeaving
	case serf.StatusLeft:
		return StateLeft
	case serf.StatusFailed:
		return StateFailed
	}
	return StateUnknown
}

// Member is one node as this node sees it.
type Member struct {
	Name string
	// Addr is the gossip address, IP:port.
	Addr  string
	State State
	// Tags are the decoded tags. When TagsErr is set, the fields that
	// could not be read are zero.
	Tags Tags
	// TagsErr says which tags were missing or garbled; nil when all were
	// read. A member with TagsErr is most likely a different version or
	// not a hypercore node, and should not be trusted with workloads.
	TagsErr error
}

func memberOf(m serf.Member) Member {
	t, err := decodeTags(m.Tags)
	return Member{
		Name:    m.Name,
		Addr:    net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
		State:   stateOf(m.Status),
		Tags:    t,
		TagsErr: err,
	}
}

// SchedulerNode converts m for placement. Only capacity and what the node
// offers come from gossip; UsedMemoryMiB, UsedCores and TakenPorts are left
// empty for the caller to fill from its own record of placements, which is
// the truth about reservations (FreeMemoryMiB is the host's view, not that).
// The role is not part of scheduler.Node: callers that keep servers free of
// workloads filter on Tags.Role before converting.
//
// Alive is State == StateAlive, and additionally false when TagsErr is set:
// a garbled port range decodes as "any port", so a node whose tags could
// not be read must not receive workloads on a guess.
func (m Member) SchedulerNode() scheduler.Node {
	isos := make([]spec.Isolation, len(m.Tags.Isolations))
	for i, iso := range m.Tags.Isolations {
		isos[i] = spec.Isolation(iso)
	}
	return scheduler.Node{
		Name:       m.Name,
		Alive:      m.State == StateAlive && m.TagsErr == nil,
		Public:     m.Tags.Public,
		Isolations: isos,
		Cores:      m.Tags.Cores,
		MemoryMiB:  m.Tags.MemoryMiB,
		PortMin:    m.Tags.PortMin,
		PortMax:    m.Tags.PortMax,
	}
}
