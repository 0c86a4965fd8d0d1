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
  newuidmap:uidmap         # rootless nodes (unshare --map-auto), docs/hpc.md
  rootlesskit:rootlesskit  # scripts/hypercore.slurm
  slirp4netns:slirp4netns  # scripts/hypercore.slurm
  munged:munge             # the Slurm test (test/e2e/slurm_test.go)
  slurmctld:slurmctld
  slurmd:slurmd
  sbatch:slurm-client
  qemu-system-x86_64:qemu-system-x86 # microVMs (isolation: microvm)
  containerd:containerd # the CRI endpoint the cri driver's tests run against
)
if [[ "${1:-}" == "--bench" ]]; then
  need+=(nginx:nginx-light wrk:wrk)
fi

missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# The CNI plugins are not commands on PATH.
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
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

# gVisor's runsc, for `isolation: gvisor`, with the systrap platform (no KVM
# needed). Bookworm's runsc (2022-12) predates systrap. bookworm-backports
# has 2024-07, built with the Go gVisor supports; sid's build of the same
# version uses a Go too new for gVisor's goroutine-id code and panics in the
# sandbox, so it is not used. The .deb is fetched with a private apt config
# (sources list, lists and archives under $tools/apt-<suite>) that leaves
# the system's sources and dpkg alone, unpacked into $tools/runsc-<suite>-
# <version>/, and /usr/local/bin/runsc is linked to it: the daemon finds it
# on PATH. A runsc that is not our link is used as it is if it has systrap.
runsc_suite=bookworm-backports
runsc_link=/usr/local/bin/runsc
runsc_have=$(command -v runsc || true)
if [[ $runsc_have == "$runsc_link" && $(readlink "$runsc_link") != "$tools/runsc-$runsc_suite-"* ]]; then
  runsc_have= # an older deps.sh's link, to sid's build
fi
# (runsc prints its flags to stderr; a pipe to grep -q would fail on SIGPIPE.)
if [[ -z $runsc_have || $("$runsc_have" flags 2>&1) != *systrap* ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: runsc with systrap is missing; run as root to install it" >&2
    exit 1
  fi
  apt_dir=$tools/apt-$runsc_suite
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $runsc_suite main" >"$apt_dir/sources.list"
  apt_suite=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
    -o APT::Architectures::=amd64 -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false)
  apt-get "${apt_suite[@]}" update -q >/dev/null
  version=$(apt-cache "${apt_suite[@]}" policy runsc | awk '/Candidate:/ {print $2}')
  if [[ -z $version || $version == "(none)" ]]; then
    echo "deps: Debian $runsc_suite has no runsc package; install a runsc with systrap by hand (https://gvisor.dev/docs/user_guide/install/)" >&2
    exit 1
  fi
  dir=$tools/runsc-$runsc_suite-${version//[^A-Za-z0-9.+-]/_}
  if [[ ! -x $dir/runsc ]]; then
    echo "deps: installing runsc $version from Debian $runsc_suite into $dir"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/deb"
    chown _apt "$dir.tmp/deb" 2>/dev/null || true # apt downloads as _apt
    (cd "$dir.tmp/deb" && apt-get "${apt_suite[@]}" download runsc >/dev/null)
    dpkg-deb -x "$dir.tmp/deb"/runsc_*.deb "$dir.tmp/root"
    mv "$dir.tmp/root/usr/bin/runsc" "$dir.tmp/runsc"
    rm -rf "$dir.tmp/deb" "$dir.tmp/root"
    mv "$dir.tmp" "$dir"
  fi
  ln -sfn "$dir/runsc" "$runsc_link"
fi
