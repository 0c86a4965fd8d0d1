package qemu

import (
	"slices"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// secretEnvs keeps each VM's secret environment in memory, from Create to
// Delete: the VM's state file on disk holds its guest config without
// them, and Start adds them to the main process's environment as it hands
// the config to the guest agent over the VM's virtio-serial channel. A VM
// started again by a new daemon is created again, with its secrets.
type secretEnvs struct {
	mu sync.Mutex
	m  map[spec.ID][]string
}

func (s *secretEnvs) put(id spec.ID, env []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(env) == 0 {
		delete(s.m, id)
		return
	}
	if s.m == nil {
		s.m = map[spec.ID][]string{}
	}
	s.m[id] = slices.Clone(env)
}

func (s *secretEnvs) get(id spec.ID) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.m[id])
}

func (s *secretEnvs) drop(id spec.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}
