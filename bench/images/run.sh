#!/usr/bin/env bash
# Image store disk use: ten images sharing one base layer, pulled into a
# fresh store from an in-process registry. Needs root. BASE_MIB=n changes
# the base layer's size (default 200).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec env HYPERCORE_BENCH=1 go test -count=1 -v -timeout 30m -run TestImagesBench ./bench/images
