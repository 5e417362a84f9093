#!/usr/bin/env python3
"""Whether the node agent should read processes with psutil: the agent's own walk
(govhost_node.agent.TenantProcesses.refresh, /proc/<pid>/stat and the entry's owner) against
psutil.process_iter with the same facts (owner, CPU times, resident memory), side by side in
one run over this machine's processes, ROUNDS times each, interleaved.

The agent walks every process at every scrape; a node with a thousand PHP workers pays the
walk a thousand times over. Needs nothing but psutil (the test extras).

Usage: bench/proc_walk.py [ROUNDS] [--json]
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from govhost_node.agent import TenantProcesses  # noqa: E402


def _psutil_walk() -> int:
    n = 0
    for p in psutil.process_iter(["uids", "cpu_times", "memory_info"]):
        info = p.info
        if info["uids"] is not None and info["cpu_times"] is not None:
            n += 1
    return n


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    rounds = int(args[0]) if args else 50
    agent = TenantProcesses()
    agent.tenant_of = lambda uid: "all"           # count every process, as if a tenant's
    own: list[float] = []
    lib: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        agent.refresh()
        own.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seen = _psutil_walk()
        lib.append(time.perf_counter() - t0)
    floor = statistics.median(own)
    res = {"bench": "proc_walk", "rounds": rounds, "processes": seen,
           "agent_ms": round(floor * 1000, 3),
           "psutil_ms": round(statistics.median(lib) * 1000, 3),
           "psutil_ratio_to_agent": round(statistics.median(lib) / floor, 2)}
    if not as_json:
        print(f"{seen} processes, {rounds} rounds each, interleaved: agent "
              f"{res['agent_ms']} ms, psutil {res['psutil_ms']} ms per walk "
              f"({res['psutil_ratio_to_agent']}x)")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
