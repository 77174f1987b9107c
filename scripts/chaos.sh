#!/usr/bin/env bash
# Longer fault runs than CI: the fault scenarios of tests/tests/faults at the
# issue's full sizes, repeated. Stops at the first failing round and keeps
# its output in $OUT (default target/chaos).
#
#   scripts/chaos.sh [ROUNDS]            # default 5 rounds
#
# Sizes: FAULTS_TASKS (default here 1000 tasks per node), FAULTS_IDLE (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
out="${OUT:-target/chaos}"
mkdir -p "$out"
export FAULTS_TASKS="${FAULTS_TASKS:-1000}" FAULTS_IDLE="${FAULTS_IDLE:-1000}"

cargo build -p node-cli
cargo test -p casty-tests --test faults --no-run

filters=("")
# The partition scenario runs where iptables works (root); it prints
# SKIPPED otherwise.
if [[ $(id -u) == 0 ]] && ! command -v iptables >/dev/null; then
  apt-get install -y iptables || echo "iptables not installed: the partition test will skip" >&2
fi

for round in $(seq 1 "$rounds"); do
  for f in "${filters[@]}"; do
    log="$out/round-$round${f:+-${f##* }}.log"
    echo "== round $round ${f:-default set} -> $log"
    # shellcheck disable=SC2086 # the filter is several words on purpose
    if ! cargo test -p casty-tests --test faults -- $f --nocapture >"$log" 2>&1; then
      grep -E "^test |panicked|FIGURE" "$log" || true
      echo "FAILED: round $round ${f:-default set}; see $log"
      exit 1
    fi
    grep -E "FIGURE" "$log" || true
  done
done
echo "all $rounds rounds passed"
