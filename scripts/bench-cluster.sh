#!/usr/bin/env bash
# The issue 6 benchmark: three node-cli processes on this machine, 3,000
# tasks each (release build), beside the single-core rate of the 500-iteration
# SHA-256 loop measured in the same run. Prints figures; it is not a test.
#
#   scripts/bench-cluster.sh                      # 3 nodes x 3000 tasks, 500 iterations
#   TASKS=1000 NODES=3 ITERATIONS=500 scripts/bench-cluster.sh
#   KEEP=1 scripts/bench-cluster.sh               # keep the node logs (path printed)
#   NODE_CLI_BIN=/tmp/node-cli-old scripts/bench-cluster.sh   # another build (A/B runs)
#
# Figures:
# - baseline: tasks/s of one core running only the hash loop
#   (`node-cli --example sha_rate`: the faster of the plain sha2 loop and
#   the nodes' own `taskqueue::work::compute`), measured just before the run;
# - cluster tasks/s: NODES x TASKS over the slowest node's
#   `<done>/<total> completed in <secs>s` (its first submit to its last result);
# - goal: cluster >= 0.8 x cores x baseline;
# - peak RSS per node (max resident set, /usr/bin/time, else VmHWM polled
#   from /proc); goal <= 30 MiB.
#
# The nodes run in an empty scratch directory (built-in defaults, no
# casty.toml), the first on a free port (`--port 0`), the others seeded by
# its logged address, with `--settle-ms 1000`. Exit status: 0 when every
# node exited 0 (whether or not the goals were met), else 1.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-3}
tasks=${TASKS:-3000}
iterations=${ITERATIONS:-500}
cores=$(nproc)

cargo build --release -p node-cli --bin node-cli --example sha_rate >&2
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
bin=${NODE_CLI_BIN:-$target_dir/release/node-cli}
rate_bin=$target_dir/release/examples/sha_rate

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT

load=$(cut -d' ' -f1-3 /proc/loadavg)
baseline_line=$("$rate_bin" --iterations "$iterations")
baseline=$(sed -n 's/.*baseline_tasks_per_s=\([0-9.]*\).*/\1/p' <<<"$baseline_line")

have_time=
[[ -x /usr/bin/time ]] && have_time=1

# Polls VmHWM (peak RSS, kB) of pid $1 into file $2 until the process exits.
poll_hwm() {
  local pid=$1 out=$2 v
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n "$v" ]] && echo "$v" >"$out"
    sleep 0.05
  done
}

# start <i> <args...>: node bench-<i>, stderr to $work/<i>.log.
start() {
  local i=$1; shift
  if [[ -n "$have_time" ]]; then
    (cd "$work" && exec /usr/bin/time -f "%M %U %S" -o "$work/$i.time" \
      "$bin" --name "bench-$i" --tasks "$tasks" --iterations "$iterations" \
      --settle-ms 1000 "$@" 2>"$work/$i.log") &
    pids+=($!)
  else
    (cd "$work" && exec "$bin" --name "bench-$i" --tasks "$tasks" --iterations "$iterations" \
      --settle-ms 1000 "$@" 2>"$work/$i.log") &
    pids+=($!)
    poll_hwm "$!" "$work/$i.rss" &
  fi
}

start 1 --port 0
seed=
for _ in $(seq 200); do
  seed=$(grep -o -m1 'listening on [^ ]*' "$work/1.log" 2>/dev/null | awk '{print $3}' || true)
  [[ -n "$seed" ]] && break
  sleep 0.05
done
[[ -n "$seed" ]] || { echo "node 1 did not log its address" >&2; cat "$work/1.log" >&2; exit 1; }
for i in $(seq 2 "$nodes"); do start "$i" --port 0 --seed "$seed"; done

status=0
codes=()
for p in "${pids[@]}"; do
  if wait "$p"; then codes+=(0); else c=$?; codes+=("$c"); status=1; fi
done
pids=()
wait 2>/dev/null || true # the VmHWM pollers

echo "machine: $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average before the run: $load"
echo "baseline, 1 core: $baseline_line"
slowest=0
max_rss=0
for i in $(seq 1 "$nodes"); do
  line=$(grep -o '[0-9]*/[0-9]* completed in [0-9.]*s' "$work/$i.log" || echo "no result line")
  secs=$(sed -n 's/.* completed in \([0-9.]*\)s/\1/p' <<<"$line")
  if [[ -n "$have_time" ]]; then
    read -r rss user sys < <(tail -n1 "$work/$i.time" 2>/dev/null || echo "0 0 0")
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f s CPU (user+sys, whole life)", u + s}')
  else
    rss=$(tail -n1 "$work/$i.rss" 2>/dev/null || echo 0)
    cpu="CPU time not measured"
  fi
  report=$(grep -o 'Final Report.*' "$work/$i.log" || echo "no Final Report")
  printf 'node bench-%s: exit %s, %s, peak RSS %.1f MiB, %s\n  %s\n' \
    "$i" "${codes[$((i - 1))]}" "$line" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$cpu" "$report"
  slowest=$(awk -v a="$slowest" -v b="${secs:-0}" 'BEGIN {print (b > a) ? b : a}')
  max_rss=$(awk -v a="$max_rss" -v b="$rss" 'BEGIN {print (b > a) ? b : a}')
done
awk -v n="$nodes" -v t="$tasks" -v s="$slowest" -v base="$baseline" -v c="$cores" -v rss="$max_rss" 'BEGIN {
  total = n * t
  rate = (s > 0) ? total / s : 0
  goal = 0.8 * c * base
  printf "cluster: %d tasks / %.3f s (slowest node) = %.0f tasks/s\n", total, s, rate
  printf "goal: >= 0.8 x %d cores x %.0f = %.0f tasks/s: %s (cluster / (cores x baseline) = %.3f)\n",
    c, base, goal, (rate >= goal) ? "met" : "MISSED", rate / (c * base)
  printf "peak RSS goal: <= 30 MiB per node: %s (max %.1f MiB)\n", (rss / 1024 <= 30) ? "met" : "MISSED", rss / 1024
}'
exit "$status"
