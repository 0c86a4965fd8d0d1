package qemu

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// KernelPackage is the Debian metapackage whose dependency names the
// current cloud kernel. The cloud flavour is small and has virtio, vsock
// and overlayfs as modules, which the initramfs carries.
const KernelPackage = "linux-image-cloud-amd64"

// DefaultCacheDir keeps downloaded kernels outside any data dir and
// outside the repository, so test runs and nodes on one machine share them.
const DefaultCacheDir = "/var/cache/hypercore"

// GuestModules are the modules the guest agent needs, by name; their
// dependencies come along. virtio_mmio first: microvm's devices sit on it.
// virtio_balloon is for free page reporting, which hands memory the guest
// frees back to the host.
var GuestModules = []string{
	"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "overlay", "vmw_vsock_virtio_transport",
	"virtio_balloon",
}

// readyContent is what readyFile holds: the version and the module list,
// so a kernel prepared for another list is prepared again.
func readyContent(version string) string {
	return version + "\n" + strings.Join(GuestModules, ",") + "\n"
}

// isReady reports whether dir holds a kernel of version prepared for the
// current GuestModules.
func isReady(dir, version string) bool {
	b, err := os.ReadFile(filepath.Join(dir, readyFile))
	return err == nil && string(b) == readyContent(version)
}

// Kernel is a prepared guest kernel.
type Kernel struct {
	// Version is the kernel release, what `uname -r` says in the guest.
	Version string
	// Dir holds vmlinuz, modules/ and the readyFile.
	Dir string
}

// Vmlinuz is the kernel image's path.
func (k Kernel) Vmlinuz() string { return filepath.Join(k.Dir, "vmlinuz") }

// ModulesDir holds the .ko files and modules.dep.
func (k Kernel) ModulesDir() string { return filepath.Join(k.Dir, "modules") }

// readyFile is written last, so a directory without it is unfinished work.
const readyFile = "ready"

// KernelDir is where a data dir keeps its kernels.
func KernelDir(dataDir string) string { return filepath.Join(dataDir, "vm", "kernel") }

// FindKernel returns the newest prepared kernel in dir (a KernelDir).
func FindKernel(dir string) (Kernel, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Kernel{}, fmt.Errorf("list guest kernels in %s: %w", dir, err)
	}
	var versions []string
	for _, e := range entries {
		if isReady(filepath.Join(dir, e.Name()), e.Name()) {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) == 0 {
		return Kernel{}, fmt.Errorf("no guest kernel in %s; run `hypercore vm prepare`", dir)
	}
	sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
	v := versions[len(versions)-1]
	return Kernel{Version: v, Dir: filepath.Join(dir, v)}, nil
}

// versionLess orders kernel releases by their numbers, so 6.1.0-56 is
// newer than 6.1.0-9.
func versionLess(a, b string) bool {
	num := regexp.MustCompile(`\d+|\D+`)
	pa, pb := num.FindAllString(a, -1), num.FindAllString(b, -1)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscan(pa[i], &na)
		_, eb := fmt.Sscan(pb[i], &nb)
		if ea == nil && eb == nil {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

// PrepareOptions says where Prepare works.
type PrepareOptions struct {
	// CacheDir keeps downloaded .debs and unpacked kernels by version.
	CacheDir string
	// DataDir, when set, receives a copy under KernelDir(DataDir).
	DataDir string
	// Deb, when set, is a kernel .deb to use instead of asking apt.
	Deb string
	// Log, when set, gets one line per step that does work.
	Log func(format string, args ...any)
}

// Prepare makes sure a guest kernel is unpacked in the cache (and copied
// into the data dir), downloading Debian's current cloud kernel with apt
// when the cache does not have it. It does nothing that is already done.
func Prepare(ctx context.Context, opts PrepareOptions) (Kernel, error) {
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	cacheKernels := filepath.Join(opts.CacheDir, "vm", "kernel")
	deb := opts.Deb
	var version string
	if deb == "" {
		pkg, err := currentKernelPackage(ctx)
		if err != nil {
			// Offline: a kernel cached earlier is as good.
			k, ferr := FindKernel(cacheKernels)
			if ferr != nil {
				return Kernel{}, fmt.Errorf("%w (and no kernel is cached: %w)", err, ferr)
			}
			opts.Log("apt is unavailable (%v); using cached kernel %s", err, k.Version)
			return copyToDataDir(k, opts)
		}
		version = strings.TrimPrefix(pkg, "linux-image-")
		if k := (Kernel{Version: version, Dir: filepath.Join(cacheKernels, version)}); isReady(k.Dir, version) {
			return copyToDataDir(k, opts)
		}
		if deb, err = download(ctx, pkg, filepath.Join(opts.CacheDir, "debs"), opts.Log); err != nil {
			return Kernel{}, err
		}
	}
	k, err := unpack(ctx, deb, cacheKernels, version, opts.Log)
	if err != nil {
		return Kernel{}, err
	}
	return copyToDataDir(k, opts)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// currentKernelPackage asks apt which package the metapackage points at.
func currentKernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--important", KernelPackage).Output()
	if err != nil {
		return "", fmt.Errorf("ask apt for %s (is this Debian, with `apt-get update` run?): %w", KernelPackage, err)
	}
	re := regexp.MustCompile(`Depends:\s*(linux-image-\S+-cloud-amd64)`)
	m := re.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("apt names no kernel package for %s:\n%s", KernelPackage, out)
	}
	return string(m[1]), nil
}

// download fetches pkg's .deb into dir unless it is there already.
func download(ctx context.Context, pkg, dir string, log func(string, ...any)) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create kernel download cache %s: %w", dir, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb")); len(m) > 0 {
		return m[len(m)-1], nil
	}
	log("downloading %s into %s", pkg, dir)
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
	}
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(m) == 0 {
		return "", fmt.Errorf("apt-get download %s left no .deb in %s", pkg, dir)
	}
	return m[len(m)-1], nil
}

// unpack extracts the kernel image and the GuestModules closure of deb
// into dir/<version>. The .deb carries no modules.dep (depmod makes it at
// install), so dependencies come from each module's .modinfo.
func unpack(ctx context.Context, deb, dir, version string, log func(string, ...any)) (Kernel, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("create kernel cache %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(dir, ".unpack-")
	if err != nil {
		return Kernel{}, fmt.Errorf("create kernel cache %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp)
	log("unpacking %s", filepath.Base(deb))
	x := filepath.Join(tmp, "x")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
		return Kernel{}, fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, bytes.TrimSpace(out))
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return Kernel{}, fmt.Errorf("%s holds %d kernel images, want 1", deb, len(vmlinuz))
	}
	if version == "" {
		version = strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	}
	modRoot := ""
	for _, cand := range []string{"lib/modules", "usr/lib/modules"} {
		if p := filepath.Join(x, cand, version); exists(p) {
			modRoot = p
		}
	}
	if modRoot == "" {
		return Kernel{}, fmt.Errorf("%s has no modules for %s", deb, version)
	}
	out := filepath.Join(tmp, "kernel")
	if err := os.MkdirAll(filepath.Join(out, "modules"), 0o755); err != nil {
		return Kernel{}, err
	}
	if err := copyFile(vmlinuz[0], filepath.Join(out, "vmlinuz")); err != nil {
		return Kernel{}, err
	}
	dep, err := moduleClosure(modRoot, GuestModules)
	if err != nil {
		return Kernel{}, err
	}
	var lines strings.Builder
	for _, m := range dep {
		if err := copyFile(m.path, filepath.Join(out, "modules", m.name+".ko")); err != nil {
			return Kernel{}, err
		}
		fmt.Fprintf(&lines, "%s.ko:", m.name)
		for _, d := range m.deps {
			fmt.Fprintf(&lines, " %s.ko", d)
		}
		lines.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(out, "modules", "modules.dep"), []byte(lines.String()), 0o644); err != nil {
		return Kernel{}, err
	}
	if err := os.WriteFile(filepath.Join(out, readyFile), []byte(readyContent(version)), 0o644); err != nil {
		return Kernel{}, err
	}
	final := filepath.Join(dir, version)
	if err := os.RemoveAll(final); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(out, final); err != nil {
		return Kernel{}, fmt.Errorf("move unpacked kernel into place: %w", err)
	}
	return Kernel{Version: version, Dir: final}, nil
}

type module struct {
	name string
	path string
	deps []string
}

// moduleClosure finds want and what they depend on under root, ordered so
// each module comes after its dependencies.
func moduleClosure(root string, want []string) ([]module, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			paths[normModule(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []module
	seen := map[string]bool{}
	var visit func(name string, depth int) error
	visit = func(name string, depth int) error {
		name = normModule(name)
		if seen[name] {
			return nil
		}
		if depth > 32 {
			return fmt.Errorf("module %s: dependency loop", name)
		}
		seen[name] = true
		p, ok := paths[name]
		if !ok {
			return fmt.Errorf("kernel module %s is not in %s; is this a kernel built with it as a module?", name, root)
		}
		deps, err := moduleDeps(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		order = append(order, module{name: name, path: p, deps: deps})
		return nil
	}
	for _, w := range want {
		if err := visit(w, 0); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func normModule(n string) string { return strings.ReplaceAll(n, "-", "_") }

// moduleDeps reads the depends= entry of a module's .modinfo section.
func moduleDeps(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo of %s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var out []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					out = append(out, normModule(d))
				}
			}
			return out, nil
		}
	}
	return nil, nil
}

// copyToDataDir puts a copy of k under opts.DataDir, hard-linking where
// the two are on one filesystem.
func copyToDataDir(k Kernel, opts PrepareOptions) (Kernel, error) {
	if opts.DataDir == "" {
		return k, nil
	}
	dst := filepath.Join(KernelDir(opts.DataDir), k.Version)
	if isReady(dst, k.Version) {
		return Kernel{Version: k.Version, Dir: dst}, nil
	}
	opts.Log("installing guest kernel %s into %s", k.Version, dst)
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return Kernel{}, err
	}
	err := filepath.WalkDir(k.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(k.Dir, p)
		target := filepath.Join(tmp, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if os.Link(p, target) == nil {
			return nil
		}
		return copyFile(p, target)
	})
	if err != nil {
		return Kernel{}, fmt.Errorf("copy guest kernel into %s: %w", dst, err)
	}
	if err := os.RemoveAll(dst); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return Kernel{}, fmt.Errorf("copy guest kernel into %s: %w", dst, err)
	}
	return Kernel{Version: k.Version, Dir: dst}, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
