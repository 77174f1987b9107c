#!/usr/bin/env bash
# The wire fuzz target (taskqueue/tests/fuzz.rs) with a budget: arbitrary
# and mutated bytes through the frame decoder, the handshake, membership
# (decode + the SWIM core), the sharding wire and the task queue's
# messages and entities. No panic, no allocation beyond the frame limit,
# no hang.
#
#   scripts/fuzz.sh [CASES]     # CASES per property, default 1000000
#
# Seven properties run CASES cases each (in the test profile: optimised,
# overflow checks on), two at a time on two cores. Each prints its case
# count, time and slowest case. A failing case prints its minimal input:
# keep it as a #[test] at the end of taskqueue/tests/fuzz.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-1000000}"
[[ "$cases" =~ ^[0-9_]+$ ]] || { echo "usage: $0 [cases per property]" >&2; exit 2; }

cargo test -p taskqueue --test fuzz --no-run
start=$(date +%s)
FUZZ_CASES="$cases" cargo test -p taskqueue --test fuzz -- --nocapture 2>&1 \
  | grep -v '^$' | tee target/fuzz.log
echo "fuzz: ${cases} cases per property, $(( $(date +%s) - start )) s in all (log: target/fuzz.log)"
