package node

import (
	"path/filepath"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/store"
)

// TestReservableMemory: the node offers the scheduler the memory its
// config gives (the daemon's --memory), and the host's total without it.
func TestReservableMemory(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, c := range []struct {
		cfg, want int64
	}{{cfg: 123456, want: 123456}, {cfg: 0, want: totalMemoryMiB()}} {
		n, err := New(Config{Name: "n", MemoryMiB: c.cfg}, Parts{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Info().MemoryMiB; got != c.want {
			t.Errorf("config %d MiB: the node offers %d MiB, want %d", c.cfg, got, c.want)
		}
	}
	if totalMemoryMiB() <= 1024 {
		t.Errorf("host total memory read as %d MiB; /proc/meminfo was not read", totalMemoryMiB())
	}
}
