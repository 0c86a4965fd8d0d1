#!/bin/bash
# Density benchmark: N (default 500) idle busybox httpd workloads on one
# node through the API, then the same with `ctr run -d` on containerd.
# Needs root and containerd (scripts/deps.sh --bench). N=n changes the count,
# IDLE_SECONDS=s the idle window (30), CTR=0 skips the containerd half.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec env HYPERCORE_BENCH=1 go test -count=1 -v -timeout 60m -run TestDensityBench ./bench/density
