package cri_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// runtimeClient is a plain CRI client, as crictl is, to look at the
// endpoint from outside the driver.
func runtimeClient(t *testing.T, c *testutil.Containerd) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(c.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}
