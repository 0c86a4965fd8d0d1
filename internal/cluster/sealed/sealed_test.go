package sealed

import (
	"bytes"
	"testing"
)

func TestSealOpen(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	b, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	value := []byte("hunter2-very-secret")
	s1, s2 := b.Seal("db", value), b.Seal("db", value)
	if bytes.Contains(s1, value) || bytes.Equal(s1, s2) {
		t.Fatal("sealed value holds the plain value, or two seals are equal (nonce reused)")
	}
	got, err := b.Open("db", s1)
	if err != nil || !bytes.Equal(got, value) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := b.Open("other", s1); err == nil {
		t.Error("a value sealed for db opened as other")
	}
	bad := bytes.Clone(s1)
	bad[len(bad)-1] ^= 1
	if _, err := b.Open("db", bad); err == nil {
		t.Error("a changed sealed value opened")
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Open("db", s1); err == nil {
		t.Error("another cluster's key opened the value")
	}
	// The derived key is not the gossip key itself.
	if direct, err := rawGCM(key); err == nil {
		if _, err := direct.Open(nil, s1[1:13], s1[13:], []byte("db")); err == nil {
			t.Error("the gossip key itself opens the value; the key must be derived")
		}
	}
	if _, err := b.Open("db", []byte{1, 2, 3}); err == nil {
		t.Error("a short value opened")
	}
}
