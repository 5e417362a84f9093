#!/usr/bin/env python3
"""Benchmark: an editor's day while strangers flood the console's login and uploads.

The example county is applied to the 3 lab nodes with the console on; `govhost console` runs
as the service does and is reached through n1's nginx, as units' staff reach it. An editor of
jiaoyu, logged in, opens the unit's page R times (default 30):

  quiet   nobody else is there
  flood   at the same time, A attackers (default 200), each from its own loopback address
          (127.0.3.x, so nginx's per-visitor rate does not stop them all), send wrong
          passwords for one name as fast as they are answered (at most 20 each), and 10
          clients each hold an upload open, sending a few KiB every half second

and the editor's page times (median, p99) are printed side by side, with what the attackers
got back. Bounded: every loop has a count and a time limit; traffic stays on loopback.

Needs root and the lab (`govhost lab up --nodes 3`).
Usage: bench/console_flood.py [R] [A] [--json]
"""
from __future__ import annotations

import collections
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import applied, console_address, console_started  # noqa: E402

from bench.console import login, token  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.lab import network  # noqa: E402
from tests.helpers import free_port  # noqa: E402

NODE = "10.77.0.11"
HOST = "console.qingshui.gov.cn"
ATTEMPTS_EACH = 20
FLOOD_SECONDS = 90
SLOW_UPLOADS = 10


def page_times(client: httpx.Client, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = client.get("/units/jiaoyu")
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.status_code
    return out


def p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def attacker(i: int, stop: threading.Event, got: collections.Counter) -> None:
    # Each attacker from an address of its own on the host's side of the lab (the nodes
    # limit each address): 127.0.3.x, used before the lab had network namespaces, reached no
    # node, and the flood was 40 ConnectErrors that the figures did not show.
    transport = httpx.HTTPTransport(
        local_address=network.HOST_CLIENTS4[i % len(network.HOST_CLIENTS4)])
    with httpx.Client(base_url=f"http://{NODE}", headers={"Host": HOST}, timeout=30,
                      transport=transport) as c:
        for n in range(ATTEMPTS_EACH):
            if stop.is_set():
                return
            try:
                form = c.get("/login")
                if form.status_code != 200:
                    got[form.status_code] += 1
                    continue
                r = c.post("/login", data={"name": "benchflood", "password": f"guess-{i}-{n}",
                                           "code": "", "next": "/",
                                           "csrftoken": token(form.text)})
                got[r.status_code] += 1
            except httpx.HTTPError as exc:
                got[type(exc).__name__] += 1


def slow_upload(stop: threading.Event, got: collections.Counter) -> None:
    """A multipart upload that never finishes: a few KiB every half second."""
    s = socket.create_connection((NODE, 80), timeout=10)
    s.sendall((f"POST /units/jiaoyu/upload HTTP/1.1\r\nHost: {HOST}\r\n"
               "Content-Type: multipart/form-data; boundary=x\r\n"
               f"Content-Length: {100 << 20}\r\n\r\n--x\r\n").encode())
    try:
        while not stop.wait(0.5):
            s.sendall(b"a" * 4096)
        got["held"] += 1
    except OSError:
        got["cut off"] += 1
    finally:
        s.close()


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    reps = int(args[0]) if args else 30
    attackers = int(args[1]) if len(args) > 1 else 200
    if not all(node.ssh_open for node in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-flood-"))
    console = None
    try:
        inv = work / "inventory"
        shutil.copytree(REPO / "inventory", inv, ignore=shutil.ignore_patterns(".govhost"))
        port = free_port()
        doc = yaml.safe_load((inv / "cluster.yaml").read_text())
        doc["console"] = {**(doc.get("console") or {}), "address": console_address(), "port": port}
        (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
        applied(inv)
        console = console_started(inv, port, work / "console.log")
        editor = login(inv, "benchedit", "editor", "jiaoyu")
        login(inv, "benchflood", "editor", "jiaoyu").close()     # the name under attack
        page_times(editor, 3)                                     # warm up
        quiet = page_times(editor, reps)
        stop = threading.Event()
        got: collections.Counter = collections.Counter()
        threads = [threading.Thread(target=attacker, args=(i, stop, got), daemon=True)
                   for i in range(attackers)]
        threads += [threading.Thread(target=slow_upload, args=(stop, got), daemon=True)
                    for _ in range(SLOW_UPLOADS)]
        for t in threads:
            t.start()
        time.sleep(2)                              # the flood is under way
        t0 = time.perf_counter()
        flood = page_times(editor, reps)
        during = time.perf_counter() - t0
        stop.set()
        deadline = time.time() + FLOOD_SECONDS
        for t in threads:
            t.join(max(0.1, deadline - time.time()))
        result = {
            "units": len(list((inv / "tenants").glob("*.yaml"))), "requests": reps,
            "attackers": attackers, "slow_uploads": SLOW_UPLOADS,
            "quiet_median_ms": round(statistics.median(quiet) * 1000, 1),
            "quiet_p99_ms": round(p(quiet, 0.99) * 1000, 1),
            "flood_median_ms": round(statistics.median(flood) * 1000, 1),
            "flood_p99_ms": round(p(flood, 0.99) * 1000, 1),
            "p99_ratio": round(p(flood, 0.99) / p(quiet, 0.99), 2),
            "target_p99_ms": 2000,
            "attackers_got": {str(k): v for k, v in sorted(got.items(), key=str)},
            "measured_seconds": round(during, 1)}
        if not as_json:
            print(f"an editor's unit page, {reps} requests through n1's nginx:")
            print(f"  quiet   median {result['quiet_median_ms']:8.1f} ms   "
                  f"p99 {result['quiet_p99_ms']:8.1f} ms")
            print(f"  flood   median {result['flood_median_ms']:8.1f} ms   "
                  f"p99 {result['flood_p99_ms']:8.1f} ms   ({attackers} wrong-login clients, "
                  f"{SLOW_UPLOADS} slow uploads)")
            print(f"  p99 flood / quiet: {result['p99_ratio']:.2f}  (target p99 < 2000 ms)")
            print(f"  the attackers got: {result['attackers_got']}")
        print(json.dumps({"bench": "console_flood", **result}, ensure_ascii=False))
    finally:
        if console is not None:
            console.terminate()
            console.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
