#!/usr/bin/env bash
# Cached-image spawn to the first 200: hypercore against `ctr run --rm` and
# plain `runc run -d`, in one network namespace. Needs root, runc and
# containerd (make bench-deps). RUNS=n changes the number of timed runs.
# RUN=TestGvisorBench measures gVisor against runc instead (needs runsc).
# RUN=TestSandboxBench measures what seccomp and the user namespace cost.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec env HYPERCORE_BENCH=1 go test -count=1 -v -timeout 30m -run "${RUN:-TestSpawnBench}" ./bench/spawn
