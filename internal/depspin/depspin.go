// Package depspin holds the module's dependencies in go.mod while packages
// that use them are being written. It is removed once they are all imported.
package depspin

import (
	_ "connectrpc.com/connect"
	_ "github.com/containerd/console"
	_ "github.com/containerd/go-runc"
	_ "github.com/google/go-containerregistry/pkg/authn"
	_ "github.com/google/go-containerregistry/pkg/v1/cache"
	_ "github.com/google/go-containerregistry/pkg/v1/layout"
	_ "github.com/google/go-containerregistry/pkg/v1/mutate"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/google/nftables"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/net/http2"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "google.golang.org/protobuf/proto"
)
