#!/usr/bin/env python3
"""Benchmark what the console's split into two processes costs an editor, side by side in
one run: the same pages through the real `govhost console` (web process as govhost-console,
every question to the root broker over its Unix socket) and through the same application
with the broker in its own process (transport.Local, the way the tests run it), both served
by uvicorn over HTTP on loopback.

Measured per page, REQUESTS times each, interleaved: the editor's upload page (the session
checked by the broker), the review page of a pending release (session, rights and the
release's chain), and a login (argon2 in the broker). Needs root; no lab nodes.

Usage: bench/console_split.py [REQUESTS] [--json]
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from controlplane.core.county import County  # noqa: E402
from controlplane.people.store import People  # noqa: E402
from tests.helpers import free_port  # noqa: E402

RID = "20261201T000000-aaaaaa"
PASSWORD = "bench-editor-pass-2026"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def county(top: Path) -> County:
    inv = top / "inventory"
    shutil.copytree(REPO / "inventory", inv, ignore=shutil.ignore_patterns(".govhost"))
    c = County(inv)
    p = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    issued = p.add("benchedit", "编辑", "jiaoyu", ["editor"],
                   frozenset(t.name for t in c.inv.tenants))
    p.change_password("benchedit", issued.password, PASSWORD)
    p.st.add_content_release("jiaoyu", RID, "pending", {
        "published_by": "benchedit", "files": 1, "bytes": 1, "added": [], "changed": [],
        "removed": []}, ["n1"])
    p.st.add_review_chain("jiaoyu", RID, ["unit"], "benchedit")
    p.st.close()
    return c


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def logged_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    page = client.get("/login")
    token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"csrftoken": token, "name": "benchedit",
                                    "password": PASSWORD, "code": "", "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/", r.status_code
    return client


def login_once(base: str) -> float:
    client = httpx.Client(base_url=base, timeout=30)
    token = re.search(r'name="csrftoken" value="([^"]+)"',
                      client.get("/login").text).group(1)
    t0 = time.perf_counter()
    r = client.post("/login", data={"csrftoken": token, "name": "benchedit",
                                    "password": PASSWORD, "code": "", "next": "/"},
                    follow_redirects=False)
    took = time.perf_counter() - t0
    assert r.status_code == 303, r.status_code
    client.close()
    return took


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    reps = int(args[0]) if args else 200
    if os.geteuid() != 0:
        sys.exit("run as root: govhost console splits itself only as root")
    top = Path(tempfile.mkdtemp(prefix="govhost-bench-split-"))
    top.chmod(0o755)
    split_port, local_port = free_port(), free_port()
    c = county(top)
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--inventory", str(c.root),
                             "console", "--http", "--direct", "--listen",
                             f"127.0.0.1:{split_port}"], cwd=REPO,
                            stderr=subprocess.DEVNULL)
    import uvicorn

    from controlplane.console.app import build
    server = uvicorn.Server(uvicorn.Config(build(c, secure=False), host="127.0.0.1",
                                           port=local_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        bases = {"split": f"http://127.0.0.1:{split_port}",
                 "one process": f"http://127.0.0.1:{local_port}"}
        for base in bases.values():
            wait_up(f"{base}/login")
        clients = {k: logged_in(b) for k, b in bases.items()}
        pages = {"upload page": "/units/jiaoyu/upload", "review page": f"/units/jiaoyu/reviews/{RID}"}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(5):                                   # warm up
            for k, cl in clients.items():
                for path in pages.values():
                    cl.get(path)
        for _ in range(reps):
            for what, path in pages.items():
                for k, cl in clients.items():
                    t0 = time.perf_counter()
                    r = cl.get(path)
                    times.setdefault((what, k), []).append(time.perf_counter() - t0)
                    assert r.status_code == 200, (k, path, r.status_code)
        for _ in range(max(3, reps // 20)):
            for k, base in bases.items():
                times.setdefault(("login", k), []).append(login_once(base))
        out = {}
        for what in [*pages, "login"]:
            a, b = times[(what, "split")], times[(what, "one process")]
            out[what] = {"split_ms_p50": round(statistics.median(a) * 1000, 2),
                         "split_ms_p99": round(pct(a, 99) * 1000, 2),
                         "one_process_ms_p50": round(statistics.median(b) * 1000, 2),
                         "one_process_ms_p99": round(pct(b, 99) * 1000, 2),
                         "ratio_p50": round(statistics.median(a) / statistics.median(b), 2),
                         "requests": len(a)}
            if "--json" not in sys.argv:
                print(f"{what}: {json.dumps(out[what])}", flush=True)
        print(json.dumps({"bench": "console_split", "requests": reps, "pages": out}))
    finally:
        server.should_exit = True
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
