#!/usr/bin/env bash
# Runs the seed's three-terminal cluster on this machine at once: builds
# node-cli (release), starts node 1 on port 25520 (it starts the cluster)
# and nodes 2 and 3 joining through it, prints their logs labelled [1] [2]
# [3], and exits with the first non-zero status (0 when all three finish).
#
#   ./run-local.sh                 # 5 tasks per node, as in the seed
#   ./run-local.sh --tasks 200     # extra flags go to every node
#   BASE_PORT=26000 ./run-local.sh
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -p node-cli
bin=${CARGO_TARGET_DIR:-target}/release/node-cli
base=${BASE_PORT:-25520}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
start() {
  local label=$1; shift
  # The labeller ignores Ctrl-C, so the nodes' graceful leave is still
  # shown (it ends when its node closes the pipe). It reads in blocks and
  # writes each line as it comes: `sed -u` read its input a byte at a time
  # and held a node of 300,000 tasks 15 times longer than writing to a
  # file (8.7 s against 0.57 s).
  "$bin" "$@" > >(trap '' INT; exec awk -v p="[$label] " '{ print p $0; fflush() }') 2>&1 &
  pids+=($!)
}
# Node 1's only seed is itself: it starts the cluster (and never joins
# another one that casty.toml's seed_nodes might point at).
start 1 --port "$base" --seed "127.0.0.1:$base" "$@"
start 2 --port $((base + 1)) --seed "127.0.0.1:$base" "$@"
start 3 --port $((base + 2)) --seed "127.0.0.1:$base" "$@"
status=0
for p in "${pids[@]}"; do
  while true; do
    if wait "$p"; then s=0; else s=$?; fi
    # A wait cut short by Ctrl-C (the trap ran) returns 128+n while the
    # node is still leaving: wait for it again, so its own status counts.
    if (( s > 128 )) && kill -0 "$p" 2>/dev/null; then continue; fi
    break
  done
  [[ $status != 0 ]] || status=$s
done
exit "$status"
