#!/usr/bin/env python3
"""Benchmark the unit web console on the lab, side by side with what it stands for.

A generated county of N units (default 1,000) is applied to the 3 lab nodes with the console
enabled; `govhost console` runs as the service would (its own process, uvicorn) and is
reached through n1's nginx (console.<domain>), as units' staff reach it. Measured in one run:

  overview   GET / as a county operator: every unit ranked by days since its last update
             (median and p95 of R requests)
  unit page  GET /units/<unit> as the unit's editor: its site probed through every node, its
             releases, certificate, backups, quota, visits (median and p95); and, in
             process, what the page asks the nodes (the unit's holdings and agent figures)
             side by side with asking for every unit's, as the page did before stop 60
  upload     a site of M MB (default 100; incompressible files) as a zip through the browser's
             path: upload (nginx -> console -> the first replica) and submit, until live on
             every replica
  CLI        the same files through the lab's SFTP-like upload (`govhost lab upload`) and
             `govhost publish`, side by side, with the ratio

Needs root and the lab (`govhost lab up --nodes 3`); traffic stays on loopback.
Usage: [BENCH_DIR=DIR] bench/console.py [N] [R] [M] [--no-lab] [--json]
(--no-lab: only the overview of N generated units, gathered and laid out in process, one page
against one table of every unit; no lab needed.)
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import pyotp
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import applied, console_address, console_started  # noqa: E402

from controlplane.core import remote  # noqa: E402
from controlplane.core.county import County  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.sites import status  # noqa: E402
from tests.helpers import free_port, generated_county  # noqa: E402

NODE = "10.77.0.11"


def govhost(inv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "--inventory", str(inv), *args],
                          cwd=REPO, capture_output=True, text=True, check=True, timeout=3600)


def token(html: str) -> str:
    m = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert m, html[-500:]
    return m.group(1)


def login(inv: Path, name: str, role: str, unit: str | None) -> httpx.Client:
    """A person added as `govhost user add` does, logged in through n1's nginx, with the
    first password changed."""
    args = ["user", "add", name, "--display", name, "--role", role, "--json"]
    try:
        issued = json.loads(govhost(inv, *args, *(["--unit", unit] if unit else [])).stdout)
    except subprocess.CalledProcessError:           # kept from a run before (BENCH_DIR)
        issued = json.loads(govhost(inv, "user", "reset", name, "--json").stdout)
    client = httpx.Client(base_url=f"http://{NODE}", headers={"Host": "console.qingshui.gov.cn"},
                          timeout=3600, follow_redirects=True)
    page = client.get("/login")
    code = pyotp.TOTP(issued["totp_secret"]).now() if issued["totp_secret"] else ""
    r = client.post("/login", data={"csrftoken": token(page.text), "name": name,
                                    "password": issued["password"], "code": code, "next": "/"})
    new = f"{name}-bench-password-1"
    r = client.post("/password", data={"csrftoken": token(r.text), "old": issued["password"],
                                       "new": new, "again": new})
    assert r.status_code in (200, 303), r.text[-500:]
    return client


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, (path, r.status_code)
    return out


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"median {statistics.median(xs) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms"


def site_files(mb: int) -> dict[str, bytes]:
    """M one-megabyte files of random bytes (a zip cannot shrink them) and a homepage."""
    files = {f"files/doc{i:03d}.bin": os.urandom(1 << 20) for i in range(mb)}
    files["index.html"] = f"<html><body><h1>bench {time.time()}</h1></body></html>".encode()
    return files


def _ms(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": round(statistics.median(xs) * 1000, 1),
            "p95_ms": round(xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))] * 1000, 1)}


def overview_in_process(n: int, reps: int) -> dict:
    """The county's overview for N units, gathered and laid out in this process (no lab):
    one page of OVERVIEW_ROWS next to one table of every unit, side by side."""
    from controlplane.console import i18n, views
    from controlplane.console.pages import _env
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-overview-"))
    try:
        county = County(generated_county(work, n, 5))
        county.inv
        tpl = _env.get_template("console/overview.html.j2")
        out = {}
        for label, per_page in (("one_page", views.OVERVIEW_ROWS), ("every_unit", n)):
            took, size = [], 0
            for _ in range(reps):
                t0 = time.perf_counter()
                rows = views.overview(county)
                page = views.overview_page(rows, 1) if per_page < n else {
                    "rows": rows, "total": n, "page": 1, "pages": 1, "first": 1}
                html = tpl.render(_=i18n.gettext("zh"), lang="zh", csrftoken="x", me=None,
                                  county="bench", path="/", preview=False, **page)
                took.append(time.perf_counter() - t0)
                size = len(html.encode())
            out[label] = {**_ms(took), "html_kb": size // 1024}
        out["every_unit_x_one_page"] = round(out["every_unit"]["median_ms"]
                                             / out["one_page"]["median_ms"], 1)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def node_questions(inv: Path, unit: str, reps: int) -> dict:
    """What a unit's page asks the nodes, one unit's (since stop 60) against every unit's
    (before: each node's holdings of all its units, every line of its agent parsed), the
    two taken turn about; milliseconds, median."""
    county = County(inv)
    nodes = list(county.inv.hosts.nodes)

    def ask(one: bool) -> float:
        t0 = time.perf_counter()
        remote.node_status(county.inv.hosts, nodes, county.known_hosts, content=True,
                           only=(unit,) if one else ())
        for node in nodes:
            status.agent_metrics(node.address, county.inv.metrics, only=unit if one else None)
        return (time.perf_counter() - t0) * 1000

    got: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(reps):
        for one in (True, False):
            got[one].append(ask(one))
    one_ms, every_ms = statistics.median(got[True]), statistics.median(got[False])
    return {"one_unit_ms": round(one_ms, 1), "every_unit_ms": round(every_ms, 1),
            "x": round(every_ms / one_ms, 2)}


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 1000
    reps = int(args[1]) if len(args) > 1 else 30
    mb = int(args[2]) if len(args) > 2 else 100
    if "--no-lab" in sys.argv:
        res = {"bench": "console", "units": n, "overview_in_process": overview_in_process(n, reps)}
        print(json.dumps(res) if as_json else res)
        return
    if not all(node.ssh_open for node in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    # BENCH_DIR keeps the generated county (and its state) for the next run: applying 1,000
    # new units to the lab the first time takes minutes.
    keep = os.environ.get("BENCH_DIR")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="govhost-bench-console-"))
    work.mkdir(parents=True, exist_ok=True)
    console = None
    try:
        shutil.rmtree(work / "inventory" / "tenants", ignore_errors=True)
        inv = generated_county(work / "inventory", n)
        port = free_port()
        doc = yaml.safe_load((inv / "cluster.yaml").read_text())
        doc["console"] = {"address": console_address(), "port": port}
        (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
        hosts = yaml.safe_load((REPO / "inventory" / "hosts.yaml").read_text())
        for node in hosts["nodes"]:     # the example's 2,000 a node holds no 5,000-unit county
            node["capacity"] = max(int(node.get("capacity", 0)), n)
        (inv / "hosts.yaml").write_text(yaml.safe_dump(hosts, allow_unicode=True))
        for unit in ("unit0001", "unit0002"):
            path = inv / "tenants" / f"{unit}.yaml"
            path.write_text(path.read_text() + "quota_mb: 4096\n")
        t0 = time.perf_counter()
        applied(inv)
        print(f"apply of {n} units with the console: {time.perf_counter() - t0:.1f} s")
        console = console_started(inv, port, work / "console.log")
        operator = login(inv, "benchop", "operator", None)
        editor = login(inv, "benched", "editor", "unit0001")
        timed(operator, "/", 2)                                  # warm up
        overview = timed(operator, "/", reps)
        unit_page = timed(editor, "/units/unit0001", reps)
        print(f"\nconsole pages, {n} units, {reps} requests each, through n1's nginx:")
        print(f"  overview (operator)      {stats(overview)}")
        print(f"  unit page (editor)       {stats(unit_page)}")
        asked = node_questions(inv, "unit0001", max(3, reps // 3))
        print(f"  what the unit page asks the nodes, in process: {asked['one_unit_ms']:.0f} ms; "
              f"asking for every unit's, as before: {asked['every_unit_ms']:.0f} ms "
              f"({asked['x']:.1f}x)")

        files = site_files(mb)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        blob = buf.getvalue()
        page = editor.get("/units/unit0001/upload")
        t0 = time.perf_counter()
        r = editor.post("/units/unit0001/upload", data={"csrftoken": token(page.text)},
                        files={"site": ("site.zip", blob, "application/zip")})
        assert r.status_code == 200, r.text[-800:]
        t_upload = time.perf_counter() - t0
        r = editor.post("/units/unit0001/submit", data={"csrftoken": token(r.text)})
        assert "新版本已在所有服务器上线" in r.text, r.text[-800:]
        t_console = time.perf_counter() - t0

        src = work / "cli-site"
        for name, data in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        t0 = time.perf_counter()
        govhost(inv, "lab", "upload", "unit0002", str(src))
        t_up_cli = time.perf_counter() - t0
        out = json.loads(govhost(inv, "publish", "unit0002", "--json").stdout)
        assert out["status"] == "live", out
        t_cli = time.perf_counter() - t0
        print(f"\n{mb} MB site ({len(files)} files, zip {len(blob) / 2**20:.0f} MB), "
              "until live on both replicas:")
        print(f"  console: upload {t_upload:6.1f} s + submit {t_console - t_upload:6.1f} s "
              f"= {t_console:6.1f} s")
        print(f"  CLI:     upload {t_up_cli:6.1f} s + publish {t_cli - t_up_cli:6.1f} s "
              f"= {t_cli:6.1f} s")
        print(f"  console / CLI: {t_console / t_cli:.2f}")
        if as_json:
            print(json.dumps({
                "bench": "console", "units": n, "requests": reps,
                "overview": {**_ms(overview), "target_ms": 100}, "unit_page": _ms(unit_page),
                "unit_page_node_questions": asked,
                "site_mb": mb, "console_seconds": round(t_console, 2),
                "cli_seconds": round(t_cli, 2), "console_x_cli": round(t_console / t_cli, 2)}))
    finally:
        if console is not None:
            console.terminate()
            console.wait(10)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
