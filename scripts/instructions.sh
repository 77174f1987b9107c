#!/usr/bin/env bash
# Instructions per task outside the hash, one node in process: a steady
# figure for comparing two builds on a shared, noisy machine, where the
# wall-clock ratios of `cargo bench -p taskqueue --bench queue` move by
# +-10 % from run to run.
#
#   scripts/instructions.sh              # 2,000 and 8,000 tasks
#   SMALL=2000 LARGE=6000 scripts/instructions.sh
#   TOP=40 scripts/instructions.sh       # longer list of functions
#   NODES=3 scripts/instructions.sh      # three nodes in one process, each
#                                        # submitting the counts, replicated (R = 2)
#   TARGET=node-cli SMALL=1000 LARGE=3000 scripts/instructions.sh
#                                        # the node-cli binary alone (`--tasks N`,
#                                        # one node): its workload and log lines too
#   PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 scripts/instructions.sh
#                                        # the measured binary under LD_PRELOAD
#                                        # (e.g. another allocator)
#
# Runs the queue bench's `--instructions N` mode (submit_many_and_wait
# only, batches of 256, 4 in flight) under valgrind's callgrind at two task
# counts and prints the difference divided by the difference in tasks, so
# start-up and shutdown cancel out:
# - all threads, the hashing pool's threads (`sharding::pool::worker`,
#   inclusive) and the rest (the runtime: region actor and clients);
# - the functions with the largest own (exclusive) count per task outside
#   SHA-256's compression function.
# Counts are instructions executed in user space (callgrind's `Ir`), not
# time: a cache miss costs one instruction here and a hundred cycles on the
# machine, and the kernel's work (the nodes' loopback TCP) is not counted.
# Under valgrind the CPU reports no SHA extensions, so SHA-256 runs its
# portable code: hashing done outside the pool (the task's input digest)
# counts several times what it costs natively. Needs valgrind
# (`apt-get install valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."

small=${SMALL:-2000}
large=${LARGE:-8000}
top=${TOP:-25}
nodes=${NODES:-1}
target=${TARGET:-queue}
[[ "$target" == queue || "$target" == node-cli ]] || { echo "TARGET must be queue or node-cli, not '$target'" >&2; exit 2; }
for v in small large top nodes; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "${v^^} must be a whole number, not '${!v}'" >&2; exit 2; }
done
((small >= 1 && large > small)) || { echo "need 1 <= SMALL < LARGE (SMALL=$small LARGE=$large)" >&2; exit 2; }
((nodes >= 1)) || { echo "NODES must be at least 1" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
if [[ "$target" == node-cli ]]; then
  ((nodes == 1)) || { echo "TARGET=node-cli runs one node (NODES=1)" >&2; exit 2; }
  cargo build --release -p node-cli --bin node-cli >&2
  bin=${CARGO_TARGET_DIR:-$PWD/target}/release/node-cli
  [[ -x "$bin" ]] || { echo "could not build node-cli" >&2; exit 1; }
else
  bin=$(cargo bench -p taskqueue --bench queue --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/queue-' | tail -1)
  [[ -x "$bin" ]] || { echo "could not build the queue bench" >&2; exit 1; }
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for n in "$small" "$large"; do
  if [[ "$target" == node-cli ]]; then
    # In an empty directory (built-in defaults, no casty.toml); its log
    # lines go to a file, as a terminal would slow it.
    args=(--port 0 --tasks "$n" --settle-ms 200 --name solo)
    run_dir=$out
  else
    args=(--instructions "$n" --nodes "$nodes")
    run_dir=$PWD
  fi
  (cd "$run_dir" && ${PRELOAD:+env LD_PRELOAD=$PRELOAD} valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" "$bin" "${args[@]}" \
    >"$out/run.$n" 2>"$out/valgrind.$n") || { cat "$out/valgrind.$n" >&2; exit 1; }
  # callgrind_annotate's Perl warns about its own uninitialised values.
  callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$out/cg.$n" 2>/dev/null >"$out/incl.$n"
  callgrind_annotate --auto=no --threshold=100 "$out/cg.$n" 2>/dev/null >"$out/self.$n"
done

# "count<TAB>function" for each line of a listing, the source file (inlined
# code is listed under each file it came from) and object cut off, summed
# by function; `max` instead keeps the largest (for inclusive counts).
by_function() { # file sum|max
  grep -E '^ *[0-9,]+ \([ 0-9.]+%\) ' "$1" \
    | sed -E 's/^ *([0-9,]+) \([ 0-9.]+%\) +/\1\t/; s/\t.*\.(rs|c|S|h):/\t/; s/ \[[^]]*\]$//' \
    | awk -F '\t' -v how="$2" '{ gsub(",", "", $1); c = $1 + 0
        if (how == "max") { if (c > v[$2]) v[$2] = c } else v[$2] += c }
      END { for (f in v) print v[f] "\t" f }'
}
# Per task: the difference between the two runs over the difference in
# tasks (from every node).
per_task() { # small-listing large-listing sum|max
  join -t $'\t' -1 2 -2 2 -a 2 -e 0 -o 0,1.1,2.1 \
    <(by_function "$1" "$3" | sort -t $'\t' -k2,2) \
    <(by_function "$2" "$3" | sort -t $'\t' -k2,2) \
    | awk -F '\t' -v d=$(((large - small) * nodes)) '{ printf "%.0f\t%s\n", ($3 - $2) / d, $1 }'
}
per_task "$out/incl.$small" "$out/incl.$large" max >"$out/incl"
per_task "$out/self.$small" "$out/self.$large" sum >"$out/self"
total=$(awk -F '\t' '$2 == "PROGRAM TOTALS" { print $1 }' "$out/incl")
pool=$(awk -F '\t' '$2 == "sharding::pool::worker" { print $1 }' "$out/incl")
[[ -n "$total" && -n "$pool" ]] || { echo "no program total or pool figure in callgrind's listing ($out kept)" >&2; trap - EXIT; exit 1; }
if [[ "$target" == node-cli ]]; then
  echo "instructions per task ($small and $large tasks, node-cli alone: its workload, region and log lines):"
  echo "  all threads $total, hashing pool $pool, the rest (runtime: region, workload, logs) $((total - pool))"
else
  echo "instructions per task ($small and $large tasks from each of $nodes node(s) in one process, submit_many_and_wait):"
  echo "  all threads $total, hashing pool $pool, the rest (runtime: region and clients) $((total - pool))"
fi
echo "largest own counts per task outside SHA-256 (the pool's hash loop and the input digest):"
# awk, not head, takes the first lines: head would stop reading early and
# fail the pipeline (pipefail) with sort's SIGPIPE.
awk -F '\t' '$2 !~ /^(sha2::|taskqueue::work::|PROGRAM TOTALS)/' "$out/self" | sort -rn \
  | awk -F '\t' -v top="$top" 'NR <= top { printf "%8s  %s\n", $1, substr($2, 1, 140) }'
