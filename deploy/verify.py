#!/usr/bin/env python3
"""Checks the logs of one `docker compose` run of the seed's workload.

    verify.py DIR NODES TASKS [ITERATIONS] [T0]

DIR holds `<service>.log` (the container's log) and `<service>.exit` (its
exit status) for every node; NODES is how many there must be, TASKS the
tasks each submits, ITERATIONS the SHA-256 iterations (500), T0 the Unix
time `docker compose up` was started (for the timing figure).

Checks, for every node: exit status 0; each of its tasks
`job-<node>-<i>` logged once as `job-<node>-<i>: <16 hex> (on <node>)`
with the value computed here independently (SHA-256 of the UTF-8 payload
`doc-job-<node>-<i>`, then of each previous 32-byte digest, ITERATIONS
times in all; the first 16 hex characters) and a processing node of the
cluster; `TASKS/TASKS completed`; one `Final Report (NODES*TASKS tasks)`
whose counts add up, name only cluster nodes, are the same on every node
and equal the processing nodes tallied from all nodes' task lines.
Prints one summary line; exits 1 with every problem found otherwise.
"""

import hashlib
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

JOB = re.compile(r" (job-(\S+)-(\d+)): ([0-9a-f]{16}) \(on (\S+)\)$")
DONE = re.compile(r" (\d+)/(\d+) completed in ")
FINAL = re.compile(r"^(\S+) .* Final Report \((\d+) tasks\): (.*)$")


def expected(payload: str, iterations: int) -> str:
    """First 16 hex chars of SHA-256 applied `iterations` times."""
    digest = payload.encode("utf-8")
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def timestamp(text: str) -> float:
    """Unix time of a log line's RFC 3339 UTC timestamp (tracing's format)."""
    head, _, frac = text.rstrip("Z").partition(".")
    when = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return when.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    logdir = Path(sys.argv[1])
    nodes, tasks = int(sys.argv[2]), int(sys.argv[3])
    iterations = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    t0 = float(sys.argv[5]) if len(sys.argv) > 5 else None
    total = nodes * tasks
    problems: list[str] = []

    services = sorted(p.stem for p in logdir.glob("*.log"))
    if len(services) != nodes:
        problems.append(f"{len(services)} node logs, expected {nodes}: {services}")
    members = set(services)
    tally: Counter = Counter()
    reports: dict[str, tuple[int, dict[str, int]]] = {}
    first_report = None
    for node in services:
        lines = (logdir / f"{node}.log").read_text(errors="replace").splitlines()
        status = (logdir / f"{node}.exit").read_text().strip()
        if status != "0":
            problems.append(f"{node}: exit status {status}")
        seen: dict[int, str] = {}
        for line in lines:
            m = JOB.search(line)
            if m:
                task, owner, index, result, by = m.groups()
                if owner != node:
                    problems.append(f"{node}: logged another node's task: {line}")
                    continue
                i = int(index)
                if i in seen:
                    problems.append(f"{node}: {task} logged twice")
                seen[i] = result
                want = expected(f"doc-{task}", iterations)
                if result != want:
                    problems.append(f"{node}: {task} = {result}, computed {want}")
                if by not in members:
                    problems.append(f"{node}: {task} processed by unknown node {by}")
                tally[by] += 1
                continue
            m = DONE.search(line)
            if m and (int(m.group(1)), int(m.group(2))) != (tasks, tasks):
                problems.append(f"{node}: {m.group(1)}/{m.group(2)} completed, expected {tasks}/{tasks}")
            m = FINAL.search(line)
            if m:
                stamp, count, parts = m.groups()
                dist = {}
                for part in parts.split(", "):
                    name, _, n = part.rpartition(": ")
                    dist[name] = int(n)
                if node in reports:
                    problems.append(f"{node}: more than one Final Report")
                reports[node] = (int(count), dist)
                when = timestamp(stamp)
                first_report = when if first_report is None else min(first_report, when)
        if sorted(seen) != list(range(tasks)):
            problems.append(f"{node}: results for tasks {sorted(seen)}, expected 0..{tasks - 1}")
        if node not in reports:
            problems.append(f"{node}: no Final Report")

    for node, (count, dist) in sorted(reports.items()):
        if count != total:
            problems.append(f"{node}: Final Report of {count} tasks, expected {total}")
        if sum(dist.values()) != count:
            problems.append(f"{node}: Final Report counts add up to {sum(dist.values())}, not {count}")
        if not set(dist) <= members:
            problems.append(f"{node}: Final Report names unknown nodes {sorted(set(dist) - members)}")
        if dist != dict(tally):
            problems.append(f"{node}: Final Report {dist} differs from the task lines' tally {dict(tally)}")

    if problems:
        for p in problems:
            print(f"verify: {p}", file=sys.stderr)
        return 1
    _, dist = reports[services[0]]
    line = f"verify: {nodes} nodes exit 0, {total} results correct, Final Report ({total} tasks) on every node: " + ", ".join(
        f"{k}: {v}" for k, v in dist.items()
    )
    if t0 is not None and first_report is not None:
        line += f"; first Final Report {first_report - t0:.1f} s after up"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
