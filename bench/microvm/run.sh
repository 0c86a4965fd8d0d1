#!/usr/bin/env bash
# MicroVM spawn to the first 200: hypercore (through its proxy) against a raw
# QEMU boot of the same kernel, initramfs and disk to the same point, in one
# network namespace. Needs root and QEMU (make deps). RUNS=n changes the
# number of timed runs (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec env HYPERCORE_BENCH=1 go test -count=1 -v -timeout 30m -run TestMicroVMBench ./bench/microvm
