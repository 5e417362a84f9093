"""The citizens' view of the front door: clients that keep asking for a unit's page.

Run from the lab's "outside" namespace (`govhost lab outside -- python -m
controlplane.lab.frontdoor …`), it asks every address on the command line for the page every
`--every` seconds, with two common clients side by side: curl and Python requests, each with
a 15 s timeout (the inspection counts a page not loaded in 15 s as down). Each client keeps
its own loop per address, so a request that hangs holds up only its own loop, as a browser
stuck on a dead address would. At the end it prints one JSON object: per address and client,
how many requests, how many failed or timed out, whether a wrong page was ever served, the
slowest answer and the longest time the address was silent (no good answer).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TIMEOUT = 15.0
READY = "every loop has had its first answer"   # the line on stderr that says so
GIVE_UP = 60.0      # seconds a run waits for its loops' first answers at most


@dataclass
class Loop:
    address: str
    client: str
    samples: list[tuple[float, float, int, bool]] = field(default_factory=list)  # t, secs, code, right

    def summary(self, started: float, ended: float) -> dict:
        good = [t + s for t, s, code, right in self.samples if code == 200 and right]
        # Silent: the longest stretch with no good answer, edges included.
        marks = [started, *sorted(good), ended]
        gaps = [(b - a, b) for a, b in zip(marks, marks[1:])]
        silent, until = max(gaps, default=(0.0, started))
        return {"address": self.address, "client": self.client,
                "requests": len(self.samples),
                "failed": sum(1 for _, _, code, right in self.samples
                              if code != 200 or not right),
                "timeouts": sum(1 for _, s, code, _ in self.samples
                                if code == 0 and s >= TIMEOUT - 0.5),
                "wrong": sum(1 for _, _, code, right in self.samples if code == 200 and not right),
                "slowest_s": round(max((s for _, s, _, _ in self.samples), default=0.0), 3),
                "silent_s": round(silent, 3),
                "silent_until": round(until - started, 2),   # seconds from the start
                # requests that took a second or more: when they were sent, and how long
                "slow": [[round(t - started, 2), round(s, 3)] for t, s, _, _
                         in self.samples if s >= 1.0][:50],
                # when (seconds from the start) the failed requests were sent, and what came
                "failed_at": [[round(t - started, 2), code] for t, _, code, right
                              in self.samples if code != 200 or not right][:200],
                # when the requests that reached the timeout were sent (all of them: one
                # takes 15 s, so a loop has few)
                "timed_out_at": [round(t - started, 2) for t, s, code, _ in self.samples
                                 if code == 0 and s >= TIMEOUT - 0.5]}


def _url(address: str, path: str) -> str:
    """An IPv6 address goes in brackets; anything else (an IPv4 address, `host:port`) as is."""
    try:
        v6 = ipaddress.ip_address(address).version == 6
    except ValueError:
        v6 = False
    return f"http://[{address}]{path}" if v6 else f"http://{address}{path}"


def _curl(url: str, host: str) -> tuple[int, bytes]:
    r = subprocess.run(["curl", "-s", "-m", str(int(TIMEOUT)), "-H", f"Host: {host}",
                        "-w", "\n%{http_code}", url], capture_output=True)
    body, _, code = r.stdout.rpartition(b"\n")
    return (int(code) if code.isdigit() else 0), body


def _requests(url: str, host: str) -> tuple[int, bytes]:
    import requests
    try:
        r = requests.get(url, headers={"Host": host}, timeout=TIMEOUT)
        return r.status_code, r.content
    except requests.RequestException:
        return 0, b""


def run(addresses: list[str], host: str, expect: str, seconds: float, every: float,
        path: str = "/", on_ready: Callable[[], None] = lambda: None) -> dict:
    """Keep asking for `seconds` from the moment every loop has had its first answer (any
    answer: a refused connection is one); returns the summary (see the module doc).
    `on_ready` is called at that moment, so that a caller who breaks something "after a
    second of the normal state" counts from requests really made, not from a process still
    starting (CI once cut a node's power 0.7 s after a request's clock started while that
    thread was still importing requests). No loop waits for the others. A loop whose first
    request hangs holds that moment back (the others keep asking meanwhile); one that never
    answers ends the run after GIVE_UP seconds and `seconds` more, and `on_ready` is never
    called. A loop that dies before its first answer (its traceback on stderr) holds nothing
    back."""
    import requests  # noqa: F401  (loaded before the clock starts: its import is not a request)
    clients = {"curl": _curl, "requests": _requests}
    loops = [Loop(a, c) for a in addresses for c in clients]
    want = expect.encode()
    started = time.monotonic()
    lock = threading.Lock()
    waiting = [len(loops)]
    ends: list[float | None] = [None]           # set when every loop has answered once
    give_up = started + GIVE_UP + seconds

    def first_answer() -> None:
        with lock:
            waiting[0] -= 1
            if waiting[0] == 0:
                ends[0] = time.monotonic() + seconds
                on_ready()

    def going() -> bool:
        end = ends[0]
        return time.monotonic() < (give_up if end is None else end)

    def one(loop: Loop) -> None:
        fetch = clients[loop.client]
        first = True
        try:
            while going():
                t0 = time.monotonic()
                code, body = fetch(_url(loop.address, path), host)
                took = time.monotonic() - t0
                loop.samples.append((t0, took, code, want in body))
                if first:
                    first = False
                    first_answer()
                time.sleep(max(0.0, every - took))
        finally:
            if first:
                first_answer()

    threads = [threading.Thread(target=one, args=(lp,), daemon=True) for lp in loops]
    for t in threads:
        t.start()
    for t in threads:
        end = ends[0]
        t.join(max(0.0, (give_up if end is None else end) - time.monotonic()) + TIMEOUT + 5)
    ended = time.monotonic()
    rows = [lp.summary(started, ended) for lp in loops]
    return {"host": host, "seconds": round(ended - started, 1), "every": every,
            "started_at": time.time() - (ended - started),
            "loops": rows,
            "requests": sum(r["requests"] for r in rows),
            "failed": sum(r["failed"] for r in rows),
            "timeouts": sum(r["timeouts"] for r in rows),
            "wrong": sum(r["wrong"] for r in rows),
            "slowest_s": max((r["slowest_s"] for r in rows), default=0.0),
            "silent_s": max((r["silent_s"] for r in rows), default=0.0)}


def wait_ready(proc: subprocess.Popen, timeout: float = GIVE_UP + 30) -> None:
    """Block until the loop started by `argv` says every loop has had its first answer. Reads
    its stderr's descriptor a byte at a time (the lines are few), so that nothing after the
    READY line is taken from `communicate`. A loop that ends first, or has not said so
    within `timeout` seconds, is killed and is an error with what it printed."""
    fd = proc.stderr.fileno()
    line = b"\n" + READY.encode() + b"\n"
    said = b""
    deadline = time.monotonic() + timeout
    while not (b"\n" + said).endswith(line):       # READY as a whole line, first or later
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], left)[0] if left > 0 else []
        chunk = os.read(fd, 1) if ready else b""
        if not chunk:
            proc.kill()
            proc.wait()
            why = "ended" if ready else f"was not ready within {timeout:.0f} s"
            raise RuntimeError(f"the citizens' loop {why}: "
                               + said.decode(errors="replace")[-2000:])
        said += chunk


def argv(addresses: list[str], host: str, expect: str, seconds: float,
         every: float = 0.2) -> list[str]:
    """The command line that runs this loop (for `ip netns exec … <argv>`)."""
    return [sys.executable, "-m", "controlplane.lab.frontdoor", "--host", host,
            "--expect", expect, "--seconds", str(seconds), "--every", str(every), *addresses]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--expect", required=True, help="text the right page contains")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--every", type=float, default=0.2)
    ap.add_argument("--path", default="/")
    ap.add_argument("addresses", nargs="+")
    a = ap.parse_args()

    def ready() -> None:
        print(READY, file=sys.stderr, flush=True)

    print(json.dumps(run(a.addresses, a.host, a.expect, a.seconds, a.every, a.path, ready)))


if __name__ == "__main__":
    main()
