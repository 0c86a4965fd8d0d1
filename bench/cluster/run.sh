#!/usr/bin/env bash
# Cluster benchmarks with real daemons in network namespaces on one bridge:
# failover time after kill -9 of a workload's host (default flags, then
# --fast-failure), and membership convergence of 20 nodes. Needs root and
# runc. RUNS=n changes the number of timed failovers (default 10), NODES=n
# the cluster size (default 20), KILLS=n the worker kills (default 5).
# RUN=regexp picks tests, e.g. RUN=TestConvergenceBench.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec env HYPERCORE_BENCH=1 go test -count=1 -v -timeout 60m \
    -run "${RUN:-TestFailoverBench|TestFailoverBenchFast|TestConvergenceBench}" ./bench/cluster
