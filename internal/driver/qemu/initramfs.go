package qemu

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/guest"
)

// The initramfs is an uncompressed cpio "newc" archive: the kernel
// unpacks it faster than any compressed one, which matters most under
// TCG, and the format is simple enough that a dependency would not earn
// its place.

// cpioWriter writes a newc archive.
type cpioWriter struct {
	w   *bufio.Writer
	ino uint32
	n   int64
	err error
}

func (c *cpioWriter) header(name string, mode, size, rdevMajor, rdevMinor uint32) {
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *cpioWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(p)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFCHR = 0o020000
)

func (c *cpioWriter) dir(name string) { c.header(name, sIFDIR|0o755, 0, 0, 0) }

func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.header(name, sIFREG|perm, uint32(len(data)), 0, 0)
	c.write(data)
	c.pad()
}

func (c *cpioWriter) fileFrom(name string, perm uint32, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		if c.err == nil {
			c.err = err
		}
		return
	}
	c.file(name, perm, data)
}

func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// initramfsKey names an initramfs by what goes into it: the agent binary's
// content and the kernel's version.
func initramfsKey(agent string, k Kernel) (string, error) {
	f, err := os.Open(agent)
	if err != nil {
		return "", fmt.Errorf("read guest agent binary %s: %w", agent, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read guest agent binary %s: %w", agent, err)
	}
	fmt.Fprintf(h, "\x00%s\x00v2", k.Version)
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// BuildInitramfs returns an initramfs for k with agent as /init, building
// it into dir unless one for the same binary and kernel is there. agent is
// normally the running hypercore binary. A static binary goes in alone; a
// dynamically linked one brings its ELF interpreter and libraries from the
// host, so a `go build` with cgo on works too.
func BuildInitramfs(agent string, k Kernel, dir string) (string, error) {
	key, err := initramfsKey(agent, k)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, key+".cpio")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create initramfs cache %s: %w", dir, err)
	}
	libs, err := sharedLibs(agent)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".initramfs-")
	if err != nil {
		return "", fmt.Errorf("create initramfs in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	c := &cpioWriter{w: bufio.NewWriterSize(tmp, 1<<20)}
	for _, d := range []string{"dev", "proc", "sys", "run", "lib", "lib/modules"} {
		c.dir(d)
	}
	c.header("dev/console", sIFCHR|0o600, 0, 5, 1)
	c.file(strings.TrimPrefix(guest.Marker, "/"), 0o644, nil)
	c.fileFrom("init", 0o755, agent)
	mods, err := os.ReadDir(k.ModulesDir())
	if err != nil {
		return "", fmt.Errorf("read guest kernel modules: %w", err)
	}
	for _, m := range mods {
		c.fileFrom("lib/modules/"+m.Name(), 0o644, filepath.Join(k.ModulesDir(), m.Name()))
	}
	made := map[string]bool{"lib": true}
	for _, lib := range libs {
		rel := strings.TrimPrefix(lib, "/")
		parts := strings.Split(filepath.Dir(rel), "/")
		for i := range parts {
			d := strings.Join(parts[:i+1], "/")
			if d != "." && !made[d] {
				made[d] = true
				c.dir(d)
			}
		}
		c.fileFrom(rel, 0o755, lib)
	}
	if err := c.close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("move initramfs into place: %w", err)
	}
	// Older ones were for a binary or kernel this node no longer runs.
	// VMs booted from them keep running: QEMU has read the file.
	if old, err := filepath.Glob(filepath.Join(dir, "*.cpio")); err == nil {
		for _, o := range old {
			if o != out {
				_ = os.Remove(o)
			}
		}
	}
	return out, nil
}

// sharedLibs lists what a dynamically linked binary needs at run time:
// its interpreter and, transitively, its DT_NEEDED libraries, found where
// Debian keeps them. A static binary needs nothing.
func sharedLibs(bin string) ([]string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("read guest agent binary %s: %w", bin, err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, fmt.Errorf("read ELF interpreter of %s: %w", bin, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return nil, nil
	}
	found := map[string]bool{interp: true}
	queue := []string{bin}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		ef, err := elf.Open(cur)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", cur, err)
		}
		needed, err := ef.ImportedLibraries()
		ef.Close()
		if err != nil {
			return nil, fmt.Errorf("read libraries of %s: %w", cur, err)
		}
		for _, n := range needed {
			p, err := findLib(n)
			if err != nil {
				return nil, err
			}
			if !found[p] {
				found[p] = true
				queue = append(queue, p)
			}
		}
	}
	out := make([]string, 0, len(found))
	for p := range found {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func findLib(name string) (string, error) {
	for _, d := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("library " + name + " of the guest agent binary is not on this host; build hypercore with CGO_ENABLED=0")
}
