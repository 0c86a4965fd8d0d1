// Package e2e starts real hypercore daemons in network namespaces the tests
// make, and drives them the way a user and the black-box checks do.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

var hypercoreBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, needs root (network namespaces, runc)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "hypercore-e2e-bin")
	if err != nil {
		panic(err)
	}
	hypercoreBin, err = harness.Build(dir, "../..")
	if err != nil {
		fmt.Println("e2e: build hypercore:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newNode starts a node in a fresh namespace with a registry serving the
// busybox httpd image, and returns the node and the image reference.
func newNode(t *testing.T, args ...string) (*harness.Node, string) {
	ns := harness.NewNetNS(t)
	ref := harness.StartRegistry(t, ns, testutil.HTTPDImage(t))
	return harness.StartNode(t, ns, hypercoreBin, filepath.Join(t.TempDir(), "data"), args...), ref
}
