package runc

import (
	"fmt"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// idLocks serialises lifecycle changes per workload, so that, say, a Stop
// and a Delete of the same workload do not interleave.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	sync.Mutex
	refs int
}

func (l *idLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*idLock{}
	}
	e := l.m[id]
	if e == nil {
		e = &idLock{}
		l.m[id] = e
	}
	e.refs++
	l.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}

// checkID refuses ids that are not workload ids, before they become paths.
func checkID(id string) error {
	if err := spec.ValidateID(id); err != nil {
		return fmt.Errorf("runc driver: %w", err)
	}
	return nil
}
