package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrSubnetFull is returned by Attach when every address in the subnet is
// leased. Callers can tell it apart from a broken host with errors.Is.
var ErrSubnetFull = errors.New("no free address left in the workload subnet")

// Two buckets so that both questions, "what does id hold" and "who holds this
// address", are answered by one lookup inside the same transaction. The
// address index is what stops two ids from ever sharing an address.
var (
	bucketByID = []byte("lease-by-id") // id -> 4-byte address
	bucketByIP = []byte("lease-by-ip") // 4-byte address -> id
)

// leases is the durable record of who holds which address. It is written
// before any interface is made, so after a crash it is the truth that the
// kernel objects are repaired from.
type leases struct {
	db     *bolt.DB
	subnet netip.Prefix
}

func openLeases(path string, subnet netip.Prefix) (*leases, error) {
	// A timeout turns a second daemon on the same state dir into an error
	// instead of a process that hangs forever on the file lock.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open lease database %s (is another hypercore running on this state dir?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketByID, bucketByIP} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare lease database %s (delete it if it is corrupt; Reconcile then cleans up): %w", path, err)
	}
	return &leases{db: db, subnet: subnet}, nil
}

func (l *leases) close() error { return l.db.Close() }

// acquire returns id's address, leasing the lowest free one if it has none.
// A lease left over from a different subnet is moved into the current one,
// so changing the configured subnet does not strand workloads.
func (l *leases) acquire(id spec.ID) (netip.Addr, error) {
	var got netip.Addr
	err := l.db.Update(func(tx *bolt.Tx) error {
		byID, byIP := tx.Bucket(bucketByID), tx.Bucket(bucketByIP)
		if v := byID.Get([]byte(id)); v != nil {
			addr, ok := netip.AddrFromSlice(v)
			if ok && l.subnet.Contains(addr) {
				got = addr
				return nil
			}
			if err := byIP.Delete(v); err != nil {
				return err
			}
		}
		addr, err := lowestFree(byIP, l.subnet)
		if err != nil {
			return err
		}
		key := addr.AsSlice()
		if owner := byIP.Get(key); owner != nil {
			return fmt.Errorf("lease index says %s is free but %s holds it; the lease database is damaged", addr, owner)
		}
		if err := byID.Put([]byte(id), key); err != nil {
			return err
		}
		if err := byIP.Put(key, []byte(id)); err != nil {
			return err
		}
		got = addr
		return nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lease an address for %s in %s: %w", id, l.subnet, err)
	}
	return got, nil
}

// lowestFree walks the address index, which bbolt keeps sorted, so finding
// the first gap costs one pass over the leases and no scan of the subnet.
func lowestFree(byIP *bolt.Bucket, subnet netip.Prefix) (netip.Addr, error) {
	first, last := hostRange(subnet)
	cand := first
	c := byIP.Cursor()
	for k, _ := c.Seek(u32Bytes(first)); k != nil && len(k) == 4; k, _ = c.Next() {
		n := binary.BigEndian.Uint32(k)
		if n > cand {
			break
		}
		if n == cand {
			cand++
		}
	}
	if cand > last {
		return netip.Addr{}, fmt.Errorf("%w: all %d addresses of %s are taken; remove workloads or give the node a larger subnet with --subnet (HYPERCORE_SUBNET)", ErrSubnetFull, last-first+1, subnet)
	}
	return u32Addr(cand), nil
}

func (l *leases) get(id spec.ID) (netip.Addr, bool, error) {
	var addr netip.Addr
	var ok bool
	err := l.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketByID).Get([]byte(id)); v != nil {
			addr, ok = netip.AddrFromSlice(v)
		}
		return nil
	})
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("read lease of %s: %w", id, err)
	}
	return addr, ok, nil
}

// release frees the lease stored under key, a workload id or, for a
// damaged database, whatever key Reconcile found; freeing a lease that does
// not exist is not an error because Release must be safe to repeat.
func (l *leases) release(key string) error {
	err := l.db.Update(func(tx *bolt.Tx) error {
		byID, byIP := tx.Bucket(bucketByID), tx.Bucket(bucketByIP)
		v := byID.Get([]byte(key))
		if v == nil {
			return nil
		}
		// Only drop the index entry if it still points at key, so a
		// damaged database cannot make us free someone else's address.
		if owner := byIP.Get(v); owner != nil && string(owner) == key {
			if err := byIP.Delete(v); err != nil {
				return err
			}
		}
		return byID.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("free lease of %s: %w", key, err)
	}
	return nil
}

// all lists the leases by their keys as stored, which the caller parses.
func (l *leases) all() (map[string]netip.Addr, error) {
	out := map[string]netip.Addr{}
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketByID).ForEach(func(k, v []byte) error {
			if addr, ok := netip.AddrFromSlice(v); ok {
				out[string(k)] = addr
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return out, nil
}

// hostRange is the span of addresses workloads may get: everything but the
// network address, the gateway (first address) and the broadcast address.
func hostRange(subnet netip.Prefix) (first, last uint32) {
	network := addrU32(subnet.Masked().Addr())
	broadcast := network | (1<<(32-subnet.Bits()) - 1)
	return network + 2, broadcast - 1
}

func gatewayOf(subnet netip.Prefix) netip.Addr {
	return u32Addr(addrU32(subnet.Masked().Addr()) + 1)
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func u32Addr(n uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

func u32Bytes(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}
