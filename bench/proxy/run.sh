#!/usr/bin/env bash
# hypercore's HTTP proxy against nginx as the same reverse proxy, over HTTP
# and HTTPS, loaded by wrk on loopback in a network namespace the test
# makes. Needs root, nginx and wrk (make bench-deps).
#   RUNS=n          rounds, each contender and protocol once (default 3)
#   DURATION=10s    length of one wrk run (WARMUP=3s: the uncounted one)
#   THREADS, CONNS  wrk's -t and -c (2 and 64)
#   PROCS=n         nginx worker_processes and hypercore's GOMAXPROCS
#                   (default: the number of CPUs)
#   PROXYBENCH_BIN  a prebuilt bench/proxy/cmd/proxybench to run instead,
#                   such as one built from another commit
set -euo pipefail
cd "$(dirname "$0")/../.."
exec env HYPERCORE_BENCH=1 go test -count=1 -v -timeout 30m -run TestProxyBench ./bench/proxy
