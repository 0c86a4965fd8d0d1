#!/usr/bin/env bash
# Mutation testing of the packages that check input, with gremlins
# (github.com/go-gremlins/gremlins). Each mutant is one small change to a
# package's code (a < made <=, a == made !=, a + made -, ...); the
# package's own tests are run on it and should fail. Per package it prints
# the efficacy, killed / (killed + lived), and the mutator coverage,
# (killed + lived) / (killed + lived + not covered), then a table of all.
# The goal is 90% or more of both on each package.
#
#   PKGS="internal/spec ..."  packages to test, one after the other
#                             (default: spec, scheduler, image, wire, server)
#   WORKERS=n                 mutants tested at once (default 1: one test run
#                             at a time, for a machine shared with others)
#   TIMEOUT_COEFFICIENT=n     a mutant's tests time out after n times the
#                             package's test time (default 10)
#   LOGDIR=dir                where each package's full report goes
#                             (default: a new directory under /tmp)
#   HYPERCORE_TOOLS           tools cache, outside the clone (default
#                             ${HYPERCORE_CACHE:-/var/cache/hypercore}/tools);
#                             gremlins is installed into gremlins-<version>/
#                             there once, with go install, and reused.
#
# Needs Go and, the first time, the Go module proxy. Run from anywhere in
# the clone; it takes minutes per package (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

version=v0.6.0
tools=${HYPERCORE_TOOLS:-${HYPERCORE_CACHE:-/var/cache/hypercore}/tools}
dir=$tools/gremlins-$version
gremlins=$dir/gremlins
if [[ ! -x $gremlins ]]; then
  echo "mutation: installing gremlins $version into $dir" >&2
  mkdir -p "$dir" || { echo "mutation: cannot create $dir; set HYPERCORE_TOOLS to a writable directory" >&2; exit 1; }
  # GOFLAGS cleared: a -mod setting of the caller's would break 'go install pkg@version'.
  GOBIN=$dir GOFLAGS= go install "github.com/go-gremlins/gremlins/cmd/gremlins@$version"
fi

pkgs=${PKGS:-internal/spec internal/cluster/scheduler internal/image internal/wire internal/server}
workers=${WORKERS:-1}
coefficient=${TIMEOUT_COEFFICIENT:-10}
logdir=${LOGDIR:-$(mktemp -d /tmp/hypercore-mutation.XXXXXX)}
mkdir -p "$logdir"

# -count=1: gremlins times the package's tests once (its coverage run) and
# lets a mutant run take TIMEOUT_COEFFICIENT times that. A cached test
# result would make that a fraction of a second, and every mutant, which
# has to be compiled, would time out. (Its --test-cpu flag is not used: in
# this version it hands go test "-cpu N" as one argument, which go test
# refuses, and every mutant would count as killed.)
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"

# notCompiling prints how many of the KILLED arithmetic mutants in report
# $2 of package $1 do not compile. gremlins counts such a mutant (a + between
# strings made -) as killed: go test exits 1 on a build failure as on a
# failing test, and this version takes only exit status 2 as "not viable".
# Arithmetic is the only mutator here that can break the build; each one is
# built again with go build -overlay, which leaves the clone as it is.
notCompiling() {
  local pkg=$1 report=$2 tmp n=0 pos file rest line col text op
  tmp=$(mktemp -d)
  while read -r pos; do
    file=$pkg/${pos%%:*} rest=${pos#*:}
    line=${rest%%:*} col=${rest#*:}
    text=$(sed -n "${line}p" "$file")
    op=${text:col-1:1}
    case $op in
      +) op=- ;; -) op=+ ;; '*') op=/ ;; /) op='*' ;; %) op='*' ;;
      *) continue ;;
    esac
    LINE=$line NEW="${text:0:col-1}$op${text:col}" awk 'NR == ENVIRON["LINE"] { print ENVIRON["NEW"]; next } 1' "$file" >"$tmp/mutant.go"
    printf '{"Replace":{"%s":"%s"}}' "$PWD/$file" "$tmp/mutant.go" >"$tmp/overlay.json"
    if ! go build -overlay "$tmp/overlay.json" -o /dev/null "./$pkg" 2>/dev/null; then
      n=$((n + 1))
    fi
  done < <(sed -n 's/^ *KILLED ARITHMETIC_BASE at \(.*\)$/\1/p' "$report")
  rm -rf "$tmp"
  echo "$n"
}

rows=()
status=0
for pkg in $pkgs; do
  pkg=${pkg#./}
  log=$logdir/${pkg//\//_}.txt
  echo "mutation: $pkg (report in $log)" >&2
  start=$(date +%s)
  if ! "$gremlins" unleash --workers "$workers" --timeout-coefficient "$coefficient" "./$pkg" >"$log" 2>&1; then
    echo "mutation: gremlins failed on $pkg; see $log" >&2
    status=1
    continue
  fi
  secs=$(($(date +%s) - start))
  # The report ends with:
  #   Killed: 102, Lived: 2, Not covered: 5
  #   Timed out: 0, Not viable: 0, Skipped: 0
  #   Test efficacy: 98.08%
  #   Mutator coverage: 95.41%
  read -r killed lived notcov < <(sed -n 's/^Killed: \([0-9]*\), Lived: \([0-9]*\), Not covered: \([0-9]*\).*/\1 \2 \3/p' "$log") || true
  read -r timedout notviable < <(sed -n 's/^Timed out: \([0-9]*\), Not viable: \([0-9]*\).*/\1 \2/p' "$log") || true
  efficacy=$(sed -n 's/^Test efficacy: \([0-9.]*\)%.*/\1/p' "$log")
  coverage=$(sed -n 's/^Mutator coverage: \([0-9.]*\)%.*/\1/p' "$log")
  if [[ -z ${killed:-} || -z $efficacy || -z $coverage ]]; then
    echo "mutation: no summary in gremlins' report for $pkg; see $log" >&2
    status=1
    continue
  fi
  goal=no
  if awk -v e="$efficacy" -v c="$coverage" 'BEGIN { exit !(e >= 90 && c >= 90) }'; then
    goal=yes
  fi
  broken=$(LC_ALL=C notCompiling "$pkg" "$log")
  compiled=$(awk -v k="$killed" -v b="$broken" -v l="$lived" 'BEGIN { if (k - b + l > 0) printf "%.2f", (k - b) * 100 / (k - b + l); else print "-" }')
  echo "mutation: $pkg: efficacy $efficacy%, mutator coverage $coverage% ($secs s); $broken killed mutants do not compile, efficacy without them $compiled%" >&2
  grep -E '^ *(LIVED|NOT COVERED|TIMED OUT)' "$log" | sed 's/^ */  /' >&2 || true
  rows+=("| \`$pkg\` | $((killed + lived + notcov + timedout + notviable)) | $killed ($broken) | $lived | $notcov | $timedout | $notviable | $efficacy% | $coverage% | $goal | $compiled% | $((secs / 60))m$((secs % 60))s |")
done

echo
echo "| package | mutants | killed (of which do not compile) | lived | not covered | timed out | not viable | efficacy | mutator coverage | goal (both >= 90%) | efficacy of compiling mutants | time |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "gremlins $version, $(go version | cut -d' ' -f3), $workers worker(s), timeout coefficient $coefficient, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with local changes)'); reports in $logdir"
exit $status
