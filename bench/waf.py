"""The WAF's cost, measured side by side: requests per second and latency through nginx for
the same page with `waf: off` and `waf: block`, for a static page and a PHP page.

    python bench/waf.py [SECONDS] [ROUNDS]       (default 8 s per wrk run, 2 rounds)

Four units on the lab's machine nodes, identical content in pairs: `s-off`/`s-waf` (static,
a 10 KB page) and `p-off`/`p-waf` (PHP, a page built by PHP), rate limits raised out of the
way. wrk (2 threads, 16 connections) asks each unit's first replica for `/?page=2&q=通知`
(a query string, so the CRS has arguments to inspect), the pairs taking turns each round.
Takes over the lab (machine nodes; brought up if not running). Traffic stays on 10.77.0.1N.
"""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from controlplane.content import releases as content  # noqa: E402
from controlplane.core.county import County  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.sites import apply as apply_mod  # noqa: E402
from tests.helpers import CLUSTER, tenant, upload, write_inventory  # noqa: E402

ADDRESSES = {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"}
FAST = {"rate_limit": {"requests_per_second": 10000, "burst": 100000}}
PAGE = ("<!doctype html><html><head><meta charset=utf-8><title>通知公告</title></head><body>"
        + "".join(f"<p>第{i}条 关于做好本县教育工作的通知，请各单位认真贯彻落实。</p>"
                  for i in range(120)) + "</body></html>")
PHP = ("<?php $q = htmlspecialchars($_GET['q'] ?? ''); echo '<!doctype html><html><body>';"
       "for ($i = 0; $i < 120; $i++) { echo \"<p>第{$i}条 {$q} 关于做好本县教育工作的通知"
       "。</p>\"; } echo '</body></html>';")
UNITS = {"s-off": ("static", "off"), "s-waf": ("static", "block"),
         "p-off": ("php", "off"), "p-waf": ("php", "block")}


def county(tmp: Path) -> Path:
    hosts = yaml.safe_load((ROOT / "inventory" / "hosts.yaml").read_text())
    docs = []
    for name, (kind, waf) in UNITS.items():
        extra = {"waf": waf, **FAST}
        if kind == "php":
            extra["site"] = {"type": "php", "php": {"max_children": 8}}
        else:
            extra["replicas"] = 1
        docs.append(tenant(name, **extra))
    return write_inventory(tmp / "inventory", docs, cluster=dict(CLUSTER), host_doc=hosts)


def wrk(address: str, host: str, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-H",
                          f"Host: {host}", f"http://{address}/?page=2&q=%E9%80%9A%E7%9F%A5"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(label: str) -> float:
        m = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]

    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "non2xx": int(bad.group(1)) if bad
            else 0}


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    if not all(n.running and n.kind == "machine" for n in lab.nodes()[:3]) or \
            len(lab.nodes()) < 3:
        lab.down()
        lab.up(3, "machine", "bare")
    tmp = Path(tempfile.mkdtemp())
    try:
        c = County(county(tmp))
        res = apply_mod.apply(c)
        assert res.ok, res.to_json()
        st = c.open_state()
        placement = st.placements()
        st.close()
        for name, (kind, _) in UNITS.items():
            node = ADDRESSES[placement[name][0]]
            files = {"index.php": PHP.encode()} if kind == "php" else {"index.html": PAGE.encode()}
            upload(node, name, files, replace=True)
            content.publish(County(c.root), name)
        results: dict[str, list[dict]] = {u: [] for u in UNITS}
        for _ in range(rounds):
            for name in UNITS:
                host = f"{name}.{CLUSTER['domain']}"
                results[name].append(wrk(ADDRESSES[placement[name][0]], host, seconds))
                time.sleep(1)
        print(f"WAF cost: wrk -t2 -c16 -d{seconds}s, {rounds} rounds, medians "
              "(machine nodes sharing 2 cores with wrk)")
        print(f"{'unit':8} {'kind':7} {'waf':6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'non-2xx':>8}")
        med = {}
        for name, (kind, waf) in UNITS.items():
            rs = results[name]
            med[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            m = med[name]
            print(f"{name:8} {kind:7} {waf:6} {m['rps']:9.0f} {m['p50']:8.2f} {m['p99']:8.2f} "
                  f"{m['non2xx']:8.0f}")
        for kind, off, on in (("static", "s-off", "s-waf"), ("php", "p-off", "p-waf")):
            print(f"{kind}: WAF block / off = {med[on]['rps'] / med[off]['rps']:.2f} of the "
                  f"requests per second, p50 {med[on]['p50'] / med[off]['p50']:.2f}×")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
