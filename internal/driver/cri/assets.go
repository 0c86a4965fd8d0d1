package cri

import _ "embed"

// CNIConfList is the CNI network configuration hypercore ships for an
// endpoint: a bridge with host-local addresses, portmap for host ports,
// and the firewall plugin. Put it in the endpoint's CNI conf_dir (for
// containerd, /etc/cni/net.d) with the plugins in /usr/lib/cni.
//
//go:embed cni.conflist
var CNIConfList []byte
