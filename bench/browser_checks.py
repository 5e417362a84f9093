#!/usr/bin/env python3
"""Benchmark the browser checks (load time in headless Chromium, axe-core accessibility)
for N homepages (default 300) on the 3 lab nodes, next to the crawl of the same homepages.

Each generated unit publishes a homepage like a county unit's (a news list with dates,
footer marks, a stylesheet, a script, four images of 30 KB); every tenth unit has an image
without alt text. Measured side by side in one run, over the same pages:
- the crawl (the homepage and every link on it checked, 8 sites at a time, as the
  compliance check does);
- the browser checks with 1 and with 2 Chromium workers, at the default visitor's
  connection (10 Mbit/s, 40 ms) and with 2 workers unthrottled;
each with wall seconds, seconds per homepage and the machine's CPU seconds (all processes:
Chromium, nginx, the check), and whether axe-core found exactly the planted images.

Every request goes to the lab nodes on loopback. Needs root and the lab (`govhost lab up`).
Usage: bench/browser_checks.py [N] [--json]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.compliance import browser  # noqa: E402
from controlplane.compliance import run as compliance_run  # noqa: E402
from controlplane.core.manifest import Node  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from tests.helpers import generated_county, noise_png, upload  # noqa: E402

NODES = {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"}
DOMAIN = "qingshui.gov.cn"


def govhost(inv: Path, *args: str) -> str:
    p = subprocess.run([str(REPO / ".venv/bin/govhost"), "--inventory", str(inv), *args],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"govhost {' '.join(args)} failed: {p.stderr[-2000:]}")
    return p.stdout


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return (sum(f) - idle) / os.sysconf("SC_CLK_TCK")


def homepage(i: int) -> dict[str, bytes]:
    today = time.strftime("%Y-%m-%d")
    items = "".join(f"<li><a href='/xwdt/{k}.html'>第{k}条新闻</a> <span>{today}</span></li>"
                    for k in range(20))
    alt = "" if i % 10 == 0 else " alt='图片'"
    imgs = "".join(f"<img src='/img/{k}.png'{alt if k == 0 else ' alt=图片'}>" for k in range(4))
    html = (f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            f"<title>单位{i}</title><link rel='stylesheet' href='/s.css'>"
            f"<script src='/a.js'></script></head><body><h1>单位{i}</h1><ul>{items}</ul>"
            f"{imgs}<footer>主办单位：单位{i} 网站标识码 33{i:08d}</footer></body></html>")
    files = {"index.html": html.encode(), "s.css": b"body{font-family:sans-serif}" * 40,
             "a.js": b"var x = 1;\n" * 200}
    for k in range(20):
        files[f"xwdt/{k}.html"] = f"<html><body>新闻{k}</body></html>".encode()
    for k in range(4):
        files[f"img/{k}.png"] = noise_png(96, 96)
    return files


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--json"]
    n = int(args[0]) if args else 300
    why = browser.missing()
    if why:
        sys.exit(why)
    if not all(x.ssh_open for x in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    # the county's inventory and state (its keys) in a scratch directory, removed at the end
    # (every run left one in /tmp before stop 63)
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-browser-"))
    try:
        _run(work, n, as_json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, n: int, as_json: bool) -> None:
    inv = generated_county(work / "inventory", n)
    doc = yaml.safe_load((inv / "cluster.yaml").read_text())
    doc["compliance"] = {"check_external_links": False}
    (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    print(f"{n} homepages on 3 lab nodes (HTTP); scratch dir {work} (removed at the end)",
          flush=True)
    govhost(inv, "apply", "--yes", "--json")
    replicas = {t["name"]: t["replicas"][0]
                for t in json.loads(govhost(inv, "unit", "list", "--json"))}
    units = sorted(replicas)

    def publish(i_u: tuple[int, str]) -> None:
        i, unit = i_u
        upload(NODES[replicas[unit]], unit, homepage(i), replace=True)
        govhost(inv, "publish", unit, "--json")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(publish, enumerate(units)))
    hosts = [f"{u}.{DOMAIN}" for u in units]
    planted = {u for i, u in enumerate(units) if i % 10 == 0}

    entries = [Node(name=k, address=v, roles=("web",)) for k, v in NODES.items()]
    platform = set(hosts)
    b0, t0 = busy_seconds(), time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        crawls = list(pool.map(lambda i_h: compliance_run.crawl(
            i_h[1], compliance_run.Route(entries[i_h[0] % 3], frozenset(platform)), 1, 60,
            rate=16),
            enumerate(hosts)))
    took, cpu = time.monotonic() - t0, busy_seconds() - b0
    links = sum(c["checked"] for c in crawls)
    print(f"crawl of the homepages (and their {links} links), 8 sites at a time: "
          f"{took:.1f} s, {took / n * 1000:.0f} ms per homepage, machine CPU {cpu:.1f} s",
          flush=True)
    base = took
    figures: dict = {"bench": "browser_checks", "homepages": n,
                     "crawl": {"seconds": round(took, 2), "links": links, "cpu_seconds":
                               round(cpu, 2)}, "browser": []}

    runs = [("1 worker, 10 Mbit/s 40 ms", 1, browser.Connection(10, 40)),
            ("2 workers, 10 Mbit/s 40 ms", 2, browser.Connection(10, 40)),
            ("2 workers, unthrottled", 2, browser.Connection(0, 0))]
    for label, workers, conn in runs:
        b0, t0 = busy_seconds(), time.monotonic()
        got = browser.check_homepages([(u, f"http://{u}.{DOMAIN}/") for u in units],
                                      list(NODES.values()), hosts, conn, 30, workers)
        took, cpu = time.monotonic() - t0, busy_seconds() - b0
        loads = sorted(g["load_seconds"] for g in got.values() if not g["error"])
        alt = {u for u, g in got.items()
               if any(v["id"] == "image-alt" for v in g.get("axe", {}).get("violations", []))}
        errors = sum(1 for g in got.values() if g["error"])
        print(f"browser load + axe, {label}: {took:.1f} s ({took / base:.1f}x the crawl), "
              f"{took / n * 1000:.0f} ms per homepage, machine CPU {cpu:.1f} s "
              f"({cpu / n * 1000:.0f} ms per homepage); load time median "
              f"{loads[len(loads) // 2]:.2f} s, max {loads[-1]:.2f} s; errors {errors}; "
              f"image-alt found exactly on the {len(planted)} planted: {alt == planted}",
              flush=True)
        figures["browser"].append({
            "run": label, "seconds": round(took, 2), "x_crawl": round(took / base, 2),
            "cpu_seconds": round(cpu, 2), "errors": errors,
            "load_seconds_median": loads[len(loads) // 2] if loads else None,
            "planted_found_exactly": alt == planted})
    if as_json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
