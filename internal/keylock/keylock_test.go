package keylock

import (
	"runtime"
	"sync"
	"testing"
)

func TestSerializesPerKeyAndForgets(t *testing.T) {
	var l Map
	// One plain counter per key: keys run in parallel, so they must not
	// share a map, while the increments of one key rely on Lock alone.
	counts := map[string]*int{"a": new(int), "b": new(int)}
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		key := []string{"a", "b"}[i%2]
		n := counts[key]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := l.Lock(key)
			v := *n
			runtime.Gosched() // widen the window a lost update needs
			*n = v + 1
			unlock()
		}()
	}
	wg.Wait()
	if *counts["a"] != 100 || *counts["b"] != 100 {
		t.Fatalf("counts a=%d b=%d, want 100 each", *counts["a"], *counts["b"])
	}
	if l.Len() != 0 {
		t.Fatalf("%d keys left after all unlocked", l.Len())
	}
}
