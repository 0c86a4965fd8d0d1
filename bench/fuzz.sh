#!/usr/bin/env bash
# Runs every go test -fuzz target of the packages that read untrusted
# input, one after the other, each for FUZZTIME, and prints a table of
# targets, executions and crashes. A crash leaves its input under the
# package's testdata/fuzz/<target>/, where `go test` then replays it as a
# regression test; the committed seed corpora live there too.
#
#   FUZZTIME=d      time per target (default 10m; go test's -fuzztime)
#   PARALLEL=n      fuzzing workers per target (default 1, for a machine
#                   shared with others)
#   TARGETS="pkg:Name ..."  the targets to run (default: all below)
#   LOGDIR=dir      where each target's output goes (default: a new
#                   directory under /tmp)
#
# Not run in CI: fuzzing for minutes is a measurement, reported in
# bench/README.md. Run from anywhere in the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-10m}
parallel=${PARALLEL:-1}
logdir=${LOGDIR:-$(mktemp -d /tmp/hypercore-fuzz.XXXXXX)}
mkdir -p "$logdir"
targets=${TARGETS:-"
internal/spec:FuzzDecodeSpawnJSON
internal/spec:FuzzParseHAC
internal/spec:FuzzValidateImageRef
internal/proxy:FuzzWorkloadID
internal/proxy:FuzzFastPathParse
internal/wire:FuzzReadFrame
internal/guest:FuzzGuestFrames
internal/guest:FuzzScanFor
internal/image:FuzzExtract
internal/cluster/membership:FuzzDecodeTags
"}

printf '%-28s %-22s %12s %8s\n' PACKAGE TARGET EXECS RESULT > "$logdir/summary"
crashes=0
for t in $targets; do
	pkg=${t%%:*}
	name=${t#*:}
	log=$logdir/$name.log
	echo "== $pkg $name for $fuzztime (log: $log)" >&2
	result=ok
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel "$parallel" "./$pkg" >"$log" 2>&1; then
		result=CRASH
		crashes=$((crashes + 1))
		tail -20 "$log" >&2
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	printf '%-28s %-22s %12s %8s\n' "$pkg" "$name" "${execs:-?}" "$result" >> "$logdir/summary"
done
cat "$logdir/summary"
echo "$(echo $targets | wc -w) targets, $fuzztime each, $crashes crashes" >&2
[ "$crashes" -eq 0 ]
