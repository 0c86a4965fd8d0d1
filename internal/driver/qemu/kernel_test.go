package qemu

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/guest"
)

// The prepared kernel's module list names every module the guest needs,
// each after the modules it depends on, and every file it names is there.
func TestPreparedModules(t *testing.T) {
	k, _ := testKernel(t)
	f, err := os.Open(filepath.Join(k.ModulesDir(), "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			t.Fatalf("malformed line %q", sc.Text())
		}
		for _, d := range strings.Fields(deps) {
			if !seen[d] {
				t.Errorf("%s is listed before its dependency %s", mod, d)
			}
		}
		if _, err := os.Stat(filepath.Join(k.ModulesDir(), mod)); err != nil {
			t.Errorf("listed module missing: %v", err)
		}
		seen[mod] = true
	}
	for _, m := range GuestModules {
		if !seen[m+".ko"] {
			t.Errorf("guest module %s is not prepared", m)
		}
	}
}

func TestVersionLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		less bool
	}{
		{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", true},
		{"6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64", false},
		{"5.10.0-30-cloud-amd64", "6.1.0-1-cloud-amd64", true},
		{"6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64", false},
	} {
		if got := versionLess(c.a, c.b); got != c.less {
			t.Errorf("versionLess(%s, %s) = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}

// The accelerator probe's boot: the agent, in probe mode, reports on the
// console and the VM ends by itself. Run here with TCG, the one
// accelerator every machine has; DetectAccel runs it with KVM.
func TestProbeBoot(t *testing.T) {
	d := newTestDriver(t)
	out, ok := probeBoot(testCtx(t), d.QEMU(), "tcg", d.opts.Kernel, d.Initramfs())
	if !ok {
		t.Errorf("probe boot did not report %q; console:\n%s", guest.ProbeReady, out)
	}
}
