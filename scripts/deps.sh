#!/usr/bin/env bash
# Installs what hypercore needs on Debian 12, and nothing that is already
# there. Called by `make run` and `make test`; safe to run again.
#   scripts/deps.sh          runtime and test needs
#   scripts/deps.sh --bench  also the benchmark peers (containerd, nginx, wrk)
set -euo pipefail

# command-name:debian-package
need=(
  runc:runc
  crun:crun
  nft:nftables
  ip:iproute2
  busybox:busybox-static
  mkfs.ext4:e2fsprogs
  file:file
  curl:curl
  nsenter:util-linux
)
if [[ "${1:-}" == "--bench" ]]; then
  need+=(ctr:containerd nginx:nginx-light wrk:wrk)
fi

missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# busybox may exist as the dynamic build; tests need the static one.
if command -v busybox >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
  missing+=(busybox-static)
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go 1.26 is required (https://go.dev/doc/install), with go on PATH" >&2
  exit 1
fi

# Go tools the tests run, built from the Go module proxy into a cache
# outside the repository, one directory per version, so a version bump
# installs next to the old one and nothing lands in the work tree.
#   Pebble: Let's Encrypt's test ACME CA, and its DNS/challenge test server,
#   for the ACME tests (internal/proxy, test/e2e).
tools=${HYPERCORE_TOOLS:-/var/cache/hypercore/tools}
pebble_version=v2.10.1
pebble_dir=$tools/pebble-$pebble_version
if [[ ! -x $pebble_dir/pebble || ! -x $pebble_dir/pebble-challtestsrv ]]; then
  echo "deps: installing Pebble $pebble_version into $pebble_dir"
  mkdir -p "$pebble_dir" || { echo "deps: cannot create $pebble_dir; set HYPERCORE_TOOLS to a writable directory" >&2; exit 1; }
  # GOFLAGS cleared: a -mod setting of the caller's would break 'go install pkg@version'.
  GOBIN=$pebble_dir GOFLAGS= go install \
    "github.com/letsencrypt/pebble/v2/cmd/pebble@$pebble_version" \
    "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$pebble_version"
fi
