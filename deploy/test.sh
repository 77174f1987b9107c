#!/usr/bin/env bash
# The Compose cluster's test (issue 7). Needs Docker and Compose (v2
# `docker compose` or v1 `docker-compose`), python3 and cargo; pulls nothing.
#
#   deploy/test.sh
#
# 1. Builds the image: deploy/build.sh (cargo build --release, stages
#    rootfs/), then `compose build` (FROM scratch).
# 2. 3 nodes from docker-compose.yml as it is: every node exits 0, logs a
#    Final Report of 15 tasks, and every result equals the value computed
#    independently by verify.py.
# 3. 20 nodes: docker-compose.yml grown the README's way (node-4..node-20
#    entries appended): the same checks, 100 tasks.
# 4. Graceful stop: 3 nodes waiting for a 4th member that never comes are
#    stopped the way `compose down` stops them (SIGTERM, then removal):
#    each logs its leave and exits 0 well before the grace period ends.
# Always tears down (compose down -v, the project's networks, generated
# files), also when a step fails. Prints the figures: image size, time from
# `up` to the first Final Report, peak memory per container (the cgroup's
# peak and the process's peak resident set, sampled every 0.1 s while the
# containers run), the time the graceful stop took.
#
# Environment: CASTY_TEST_PROJECT (Compose project name, default
# casty-deploy-test), CASTY_TEST_TIMEOUT_S (per run, default 90).
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
project=${CASTY_TEST_PROJECT:-casty-deploy-test}
run_timeout=${CASTY_TEST_TIMEOUT_S:-90}
work=$(mktemp -d)
big="$here/.test-$$-20.yml"
stopfile="$here/.test-$$-stop.yml"
sampler=""
# The EXIT trap may run while a command's output is redirected to a file:
# its messages go to the original stdout and stderr, kept as fds 4 and 3.
exec 3>&2 4>&1

if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  echo "test.sh: neither 'docker compose' nor 'docker-compose' works" >&2
  exit 1
fi
compose() { "${compose_cmd[@]}" -p "$project" "$@"; }

teardown() {
  local f
  for f in "$big" "$stopfile" "$here/docker-compose.yml"; do
    [ -e "$f" ] && compose -f "$f" down -v --remove-orphans -t 20 >/dev/null 2>&1 || true
  done
  docker network ls -q --filter "label=com.docker.compose.project=$project" |
    xargs -r docker network rm >/dev/null 2>&1 || true
  docker network rm "${project}_default" >/dev/null 2>&1 || true
}
cleanup() {
  local status=$?
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  teardown
  rm -f "$big" "$stopfile"
  if [ "$status" -eq 0 ]; then
    rm -rf "$work"
    echo "test.sh: PASS" >&4
  else
    echo "test.sh: FAIL (status $status); logs kept in $work" >&3
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo "test.sh: line $LINENO: \`$BASH_COMMAND\` failed" >&3' ERR
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# Full ids of the project's containers, running or not (Compose v1 and v2 label them alike).
project_containers() { docker ps -aq --no-trunc --filter "label=com.docker.compose.project=$project"; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# Peak memory of each container given as id:pid, sampled every 0.1 s until
# killed (both disappear with the container, so the last sample is kept):
# the cgroup's peak (v1 memory.max_usage_in_bytes or v2 memory.peak: the
# container's memory including page cache) into $out/<id>.cgroup, and the
# process's peak resident set (VmHWM, bytes) into $out/<id>.rss.
sample_memory() {
  local out=$1 pair id pid f v k unit; shift
  while :; do
    for pair in "$@"; do # bash builtins only: 20 containers at 10 Hz stay cheap
      id=${pair%%:*} pid=${pair##*:}
      for f in "/sys/fs/cgroup/memory/docker/$id/memory.max_usage_in_bytes" \
               "/sys/fs/cgroup/system.slice/docker-$id.scope/memory.peak" \
               "/sys/fs/cgroup/docker/$id/memory.peak"; do
        if [ -r "$f" ] && read -r v <"$f" 2>/dev/null; then echo "$v" >"$out/$id.cgroup"; break; fi
      done
      if [ -r "/proc/$pid/status" ]; then
        while read -r k v unit; do
          if [ "$k" = "VmHWM:" ]; then echo $((v * 1024)) >"$out/$id.rss"; break; fi
        done <"/proc/$pid/status" 2>/dev/null || true
      fi
    done
    sleep 0.1
  done
}
# "min, median, max MiB over N" of the numbers in the files given.
mib_summary() {
  cat "$@" 2>/dev/null | sort -n | awk '{ v[NR] = $1 } END {
    if (NR) printf "min %.1f, median %.1f, max %.1f MiB over %d containers", v[1]/1048576, v[int((NR+1)/2)]/1048576, v[NR]/1048576, NR
    else printf "not readable here" }'
}

# One run of a compose file: up, wait for every container, collect logs and
# exit statuses into $work/<label>/, verify, report the figures.
run_cluster() {
  local file=$1 nodes=$2 label=$3 dir="$work/$3" t0 ids pairs id svc
  mkdir -p "$dir" "$dir.mem"
  echo "== $label: $nodes nodes ($(basename "$file"))"
  t0=$(now)
  compose -f "$file" up -d --no-build >"$dir.up" 2>&1 || { cat "$dir.up" >&2; return 1; }
  echo "   up -d returned after $(since "$t0") s"
  mapfile -t ids < <(project_containers)
  [ "${#ids[@]}" -eq "$nodes" ] || { echo "test.sh: ${#ids[@]} containers, expected $nodes" >&2; return 1; }
  mapfile -t pairs < <(docker inspect -f '{{.Id}}:{{.State.Pid}}' "${ids[@]}")
  sample_memory "$dir.mem" "${pairs[@]}" &
  sampler=$!
  if ! timeout "$run_timeout" docker wait "${ids[@]}" >/dev/null; then
    echo "test.sh: $label did not finish within $run_timeout s" >&2
  fi
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=""
  for id in "${ids[@]}"; do
    svc=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
    docker logs "$id" >"$dir/$svc.log" 2>&1
    docker inspect -f '{{if .State.Running}}running{{else}}{{.State.ExitCode}}{{end}}' "$id" >"$dir/$svc.exit"
  done
  if ! python3 "$here/verify.py" "$dir" "$nodes" 5 500 "$t0"; then
    for svc in "$dir"/*.log; do echo "--- $svc (exit $(cat "${svc%.log}.exit"))" >&2; tail -n 40 "$svc" >&2; done
    return 1
  fi
  echo "   peak memory per container, cgroup (incl. page cache): $(mib_summary "$dir.mem"/*.cgroup)"
  echo "   peak resident set per container (VmHWM): $(mib_summary "$dir.mem"/*.rss)"
  compose -f "$file" down -v --remove-orphans -t 20 >/dev/null 2>&1
}

teardown # leftovers of an interrupted earlier run

echo "== build: deploy/build.sh, then compose build"
t=$(now)
"$here/build.sh"
compose build >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
# Earlier builds of this image that the new one untagged (by label only).
docker image prune -f --filter "label=org.casty.image=node" >/dev/null
image=$(python3 -c "print(round($(docker image inspect -f '{{.Size}}' casty-node:latest) / 1e6, 1))")
echo "   image casty-node:latest: $image MB; build took $(since "$t") s"

run_cluster "$here/docker-compose.yml" 3 three

# Growth the README's way: the same file with entries appended.
cp "$here/docker-compose.yml" "$big"
for i in $(seq 4 20); do
  printf '  node-%d:\n    <<: *node\n    hostname: node-%d\n' "$i" "$i" >>"$big"
done
[ "$(compose -f "$big" config --services | wc -l)" -eq 20 ] || { echo "test.sh: the grown file does not have 20 services" >&2; exit 1; }
run_cluster "$big" 20 twenty

echo "== stop: SIGTERM as compose down sends it"
sed 's/"--tasks", "5"/"--tasks", "5", "--nodes", "4"/' "$here/docker-compose.yml" >"$stopfile"
grep -q '"--nodes", "4"' "$stopfile" || { echo "test.sh: cannot derive the stop test's file" >&2; exit 1; }
compose -f "$stopfile" up -d --no-build >"$work/stop.up" 2>&1 || { cat "$work/stop.up" >&2; exit 1; }
mapfile -t ids < <(project_containers)
deadline=$(( $(date +%s) + 60 ))
for id in "${ids[@]}"; do # each node has seen the two others come up
  until [ "$(docker logs "$id" 2>&1 | grep -c 'member up')" -ge 2 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "test.sh: the stop test's cluster did not form" >&2; docker logs "$id" >&2; exit 1; }
    sleep 0.2
  done
done
t=$(now)
compose -f "$stopfile" stop -t 20 >/dev/null 2>&1
took=$(since "$t")
for id in "${ids[@]}"; do
  svc=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
  code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
  logs=$(docker logs "$id" 2>&1)
  if [ "$code" != 0 ] || ! grep -q 'signal received: leaving the cluster' <<<"$logs" || ! grep -q 'node_cli: stopped' <<<"$logs"; then
    echo "test.sh: $svc did not stop gracefully (exit $code)" >&2; tail -n 30 <<<"$logs" >&2; exit 1
  fi
done
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 15 else 1)" "$took" ||
  { echo "test.sh: stopping took $took s (grace period 20 s)" >&2; exit 1; }
echo "   3 nodes left gracefully on SIGTERM and exited 0; stop took $took s"
