package keylock

import (
	"sync"
	"testing"
)

func TestSerializesPerKeyAndForgets(t *testing.T) {
	var l Map
	counts := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		key := []string{"a", "b"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := l.Lock(key)
			counts[key]++ // a data race here fails under -race if Lock does not serialize
			unlock()
		}()
	}
	wg.Wait()
	if counts["a"] != 100 || counts["b"] != 100 {
		t.Fatalf("counts %v", counts)
	}
	if l.Len() != 0 {
		t.Fatalf("%d keys left after all unlocked", l.Len())
	}
}
