#!/bin/bash
# What a bigger mount table costs `runc run`. Every container's mount
# namespace starts as a copy of the one runc runs in, which runc then makes
# a slave, pivots away from and detaches, and runc reads mountinfo on the
# way: all of it grows with the mounts there. hypercore's daemon adds a few
# mounts per workload (overlay rootfs, disk, netns, user namespace), so
# this is the part of the spawn that grows with the node's workloads.
#
#   bench/density/mountcost.sh [K...]        # default: 0 500 1000 2000
#   bench/density/mountcost.sh --ns PID      # alternate runs in PID's mount
#                                            # namespace (a running daemon's)
#                                            # and in a fresh one
#
# Each K runs in a private mount namespace of its own with K tmpfs mounts
# added, and prints the median of 15 `runc run -d` of a busybox sleep.
# Needs root, runc and busybox.
set -euo pipefail
work=$(mktemp -d /tmp/mountcost.XXXXXX)
trap 'for c in $(runc --root "$work/state" list -q 2>/dev/null); do runc --root "$work/state" delete -f "$c"; done; rm -rf "$work"' EXIT
b=$work/bundle
mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/dev" "$b/rootfs/sys"
cp "$(command -v busybox)" "$b/rootfs/bin/busybox"
ln -s busybox "$b/rootfs/bin/sleep"
(cd "$b" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sleep", "1000"/' config.json)

# runs NSENTER_ARGS...: one timed `runc run -d` in ms
run() {
	local s e
	s=$(date +%s%N)
	"$@" runc --root "$work/state" run -d --bundle "$b" "c$RANDOM$RANDOM" </dev/null >/dev/null
	e=$(date +%s%N)
	echo $(((e - s) / 1000000))
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }

if [ "${1:-}" = --ns ]; then
	pid=$2 a=() f=()
	for _ in $(seq 15); do
		a+=("$(run nsenter --mount=/proc/"$pid"/ns/mnt)")
		f+=("$(run unshare -m --propagation private)")
	done
	echo "mounts in $pid's namespace: $(wc -l <"/proc/$pid/mountinfo"), in a fresh one: $(wc -l </proc/self/mountinfo)"
	echo "runc run -d in $pid's mount namespace: median $(median "${a[@]}") ms (${a[*]})"
	echo "runc run -d in a fresh mount namespace: median $(median "${f[@]}") ms (${f[*]})"
	exit
fi

export -f run median
export work b
for k in "${@:-0 500 1000 2000}"; do
	for k1 in $k; do
		unshare -m --propagation private bash -c '
			set -e
			m=$work/m; mkdir -p $m; mount -t tmpfs t $m
			for i in $(seq 1 '"$k1"'); do mkdir $m/$i; mount -t tmpfs t $m/$i; done
			t=(); for _ in $(seq 15); do t+=("$(run)"); done
			echo "K='"$k1"' mounts=$(wc -l </proc/self/mountinfo) runc run -d median $(median "${t[@]}") ms (${t[*]})"'
	done
done
