#!/usr/bin/env python3
"""Benchmark citizens' messages across the county on the lab (issue 38's load target):
COUNT messages offered at RATE a second, spread over the three nodes, from strangers on the
lab's outside network (five each, within the per-source limits), through each node's real
nginx and govhost-messages, each kept on two nodes before its number. Side by side in one
run: what was offered, what was accepted (rate, p50/p99 of each request), and what
`govhost messages list` finds afterwards (none lost, every one on two nodes or more).

The proof of work each message needs is found first, as a citizen's browser does before
posting; it is not timed. A message is timed from its POST to the answer with its number.

Needs root and the lab with the example county applied:
    govhost lab up --nodes 3 --kind overlay
    bench/messages_lab.py [COUNT] [--rate R] [--json]       (default 600 at 100 a second)
It applies a private copy of the example inventory first.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import GOVHOST  # noqa: E402
from messages_scale import pct  # noqa: E402  (bench/, this script's own directory)

from controlplane.lab import network  # noqa: E402
from govhost_node import messages as rules  # noqa: E402
from tests.integration.test_apply_lab import NODES  # noqa: E402
from tests.integration.test_messages_lab import GOOD, request  # noqa: E402


def govhost(inv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GOVHOST, "--inventory", str(inv), *args], capture_output=True,
                          text=True, timeout=900)


def main(argv: list[str]) -> None:
    as_json = "--json" in argv
    rate = 100.0
    if "--rate" in argv:
        rate = float(argv[argv.index("--rate") + 1])
        del argv[argv.index("--rate"):argv.index("--rate") + 2]
    args = [a for a in argv if not a.startswith("--")]
    count = int(args[0]) if args else 600
    strangers = [f"10.77.9.{i}" for i in range(30, 30 + -(-count // 5))]
    if len(strangers) > 200:
        sys.exit("at most 1,000 messages: 200 strangers, five each")
    top = Path(tempfile.mkdtemp(prefix="govhost-bench-msglab-"))
    inv = top / "inventory"
    shutil.copytree(REPO / "inventory", inv, ignore=shutil.ignore_patterns(".govhost"))
    done = govhost(inv, "apply", "--yes", "--json")
    if done.returncode != 0:
        sys.exit(f"apply failed: {done.stdout[-500:]}{done.stderr[-500:]}")
    nodes = [NODES[n] for n in sorted(NODES)]
    plan = [(nodes[i % len(nodes)], strangers[i // 5]) for i in range(count)]
    for a in strangers:
        subprocess.run(["ip", "-n", network.OUTSIDE, "addr", "add", f"{a}/24", "dev", "eth0"],
                       capture_output=True)
    try:
        def challenge(i: int) -> str:
            address, source = plan[i]
            status, body = request(address, "GET", "/hudong/challenge", source=source)
            if status != 200:
                raise RuntimeError(f"challenge: {status} {body[:200]!r}")
            return json.loads(body)["challenge"]
        with ThreadPoolExecutor(16) as pool:
            challenges = list(pool.map(challenge, range(count)))
        t = time.perf_counter()
        with Pool(2) as workers:
            nonces = workers.map(rules.solve, challenges, chunksize=16)
        work = time.perf_counter() - t
        results: list[tuple[float, int, str]] = [(0.0, 0, "")] * count
        t0 = time.perf_counter() + 0.5

        def post(i: int) -> None:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            address, source = plan[i]
            form = urlencode({**GOOD, "subject": f"负载测试 {i}", "challenge": challenges[i],
                              "nonce": nonces[i]}).encode()
            s = time.perf_counter()
            status, body = request(address, "POST", "/hudong/message", form,
                                   {"Content-Type": "application/x-www-form-urlencoded"},
                                   source=source)
            number = json.loads(body or b"{}").get("number", "") if status == 200 else ""
            results[i] = (time.perf_counter() - s, status, number)
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(post, range(count)))
        wall = time.perf_counter() - t0
    finally:
        for a in strangers:
            subprocess.run(["ip", "-n", network.OUTSIDE, "addr", "del", f"{a}/24", "dev",
                            "eth0"], capture_output=True)
    numbers = {n for _, status, n in results if n}
    listed = json.loads(govhost(inv, "messages", "list", "--json").stdout)["messages"]
    held = {m["number"]: m for m in listed}
    times = [d for d, status, _ in results if status == 200]
    out = {"bench": "messages_lab", "offered": count, "offered_per_second": rate,
           "accepted": len(numbers), "refused": count - len(numbers),
           "statuses": sorted({s for _, s, _ in results}),
           "accepted_per_second": round(len(numbers) / wall, 1),
           "p50_ms": round(1000 * statistics.median(times), 1) if times else None,
           "p99_ms": round(1000 * pct(times, 99), 1) if times else None,
           "lost": len(numbers - set(held)),
           "on_fewer_than_two": sum(1 for n in numbers if n in held and held[n]["copies"] < 2),
           "proof_of_work_s_each": round(work / count * 2, 3),
           "target": {"per_second": 100, "p99_ms": 500}}
    shutil.rmtree(top, ignore_errors=True)
    if not as_json:
        print(f"offered {count} at {rate:g}/s over {len(nodes)} nodes: accepted "
              f"{out['accepted']} ({out['accepted_per_second']}/s), p50 {out['p50_ms']} ms, "
              f"p99 {out['p99_ms']} ms; lost {out['lost']}, on fewer than two nodes "
              f"{out['on_fewer_than_two']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
