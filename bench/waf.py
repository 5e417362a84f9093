"""The WAF's cost, measured side by side: requests per second and latency through nginx for
the same page with `waf: off` and `waf: block`, for a static page, a PHP page and a PHP
list page reading its database; and, on this machine's loopback, where the time goes.

    python bench/waf.py [SECONDS] [ROUNDS] [--json]    (default 8 s per wrk run, 2 rounds)

Six units on the lab's machine nodes, identical content in pairs: `s-off`/`s-waf` (static,
a 10 KB page), `p-off`/`p-waf` (PHP, a page built by PHP) and `d-off`/`d-waf` (PHP, 20
notices of 2,000 found with LIKE in its own MariaDB database: what a county list page
does), rate limits raised out of the way. wrk (2 threads, 16 connections) asks each unit's
first replica for a URL with a query string (so the CRS has arguments to inspect), the pairs
taking turns each round. Then one nginx worker on loopback serves a static file with
ModSecurity off, on with no rules, and on with the CRS as govhost configures it: the
engine's own cost per request and the rules' cost, apart. Takes over the lab (machine
nodes; brought up if not running). Traffic stays on 10.77.0.1N and 127.0.0.1. With --json,
one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
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
DB_PHP = r"""<?php
$me = json_decode(file_get_contents("/srv/govhost/sites/UNIT/var/db.json"), true);
$db = new mysqli($me["host"], $me["user"], $me["password"], $me["database"], $me["port"]);
$q = $db->real_escape_string($_GET["q"] ?? "");
$r = $db->query("SELECT id, title FROM notices WHERE title LIKE '%$q%' ORDER BY id DESC LIMIT 20");
echo "<!doctype html><html><body><ul>";
while ($row = $r->fetch_row()) { echo "<li>" . htmlspecialchars($row[1]) . "</li>"; }
echo "</ul></body></html>";
"""
SEED_PHP = r"""<?php
$me = json_decode(file_get_contents("/srv/govhost/sites/UNIT/var/db.json"), true);
$db = new mysqli($me["host"], $me["user"], $me["password"], $me["database"], $me["port"]);
$db->query("CREATE TABLE IF NOT EXISTS notices (id INT PRIMARY KEY, title VARCHAR(200))");
for ($i = 1; $i <= 2000; $i++) {
    $db->query("INSERT IGNORE INTO notices VALUES ($i, '第{$i}号 关于做好本县" .
               ($i % 3 ? "教育工作" : "防汛工作") . "的通知')");
}
echo "seeded";
"""
UNITS = {"s-off": ("static", "off"), "s-waf": ("static", "block"),
         "p-off": ("php", "off"), "p-waf": ("php", "block"),
         "d-off": ("db", "off"), "d-waf": ("db", "block")}
PAIRS = (("static page", "s-off", "s-waf"), ("PHP page", "p-off", "p-waf"),
         ("PHP list page with a database query", "d-off", "d-waf"))
QUERY = "/?page=2&q=%E9%98%B2%E6%B1%9B"


def county(tmp: Path) -> Path:
    hosts = yaml.safe_load((ROOT / "inventory" / "hosts.yaml").read_text())
    docs = []
    for name, (kind, waf) in UNITS.items():
        extra = {"waf": waf, **FAST}
        if kind in ("php", "db"):
            extra["site"] = {"type": "php", "php": {"max_children": 8},
                             "database": kind == "db"}
        else:
            extra["replicas"] = 1
        docs.append(tenant(name, **extra))
    return write_inventory(tmp / "inventory", docs, cluster=dict(CLUSTER), host_doc=hosts)


def wrk(address: str, host: str, seconds: int, path: str = QUERY) -> dict:
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-H",
                          f"Host: {host}", f"http://{address}{path}"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(label: str) -> float:
        m = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]

    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "non2xx": int(bad.group(1)) if bad
            else 0}


def engine_cost(seconds: int) -> dict:
    """One nginx worker on loopback serving a static file: ModSecurity off, on without
    rules, on with govhost's CRS settings; ms of CPU per request for each."""
    from controlplane.sites import waf
    work = Path(tempfile.mkdtemp(prefix="govhost-waf-bench-"))
    try:
        (work / "www").mkdir()
        (work / "tmp").mkdir()
        (work / "www" / "index.html").write_text(PAGE)
        (work / "none.conf").write_text("SecRuleEngine On\n")
        (work / "crs.conf").write_bytes(waf.main_conf(audit_log=str(work / "audit.log"))
                                        .replace(b"SecRuleEngine DetectionOnly",
                                                 b"SecRuleEngine On"))
        out = {}
        for label, rules in (("off", None), ("engine, no rules", "none.conf"),
                             ("engine + CRS", "crs.conf")):
            with socket.socket() as so:
                so.bind(("127.0.0.1", 0))
                port = so.getsockname()[1]
            conf = work / "nginx.conf"
            conf.write_text(
                f"load_module {waf.MODULE};\nworker_processes 1;\npid {work}/nginx.pid;\n"
                f"error_log {work}/error.log warn;\nevents {{ worker_connections 256; }}\n"
                f"http {{ access_log off; client_body_temp_path {work}/tmp;\n"
                + (f"modsecurity_rules_file {work}/{rules};\n" if rules else "")
                + f"server {{ listen 127.0.0.1:{port}; root {work}/www;"
                + (" modsecurity on;" if rules else "") + " } }\n")
            subprocess.run(["nginx", "-c", str(conf), "-p", str(work)], check=True,
                           capture_output=True)
            try:
                time.sleep(0.5)
                r = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds}s",
                                    f"http://127.0.0.1:{port}/index.html?page=2&q=x"],
                                   capture_output=True, text=True, timeout=seconds + 60).stdout
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r).group(1))
            finally:
                subprocess.run(["kill", (work / "nginx.pid").read_text().strip()])
                time.sleep(0.5)
            out[label] = {"rps": rps, "ms_per_request": 1000 / rps}
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", nargs="?", type=int, default=8)
    ap.add_argument("rounds", nargs="?", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    seconds, rounds = args.seconds, args.rounds
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
            files = {"index.php": PHP.encode()} if kind == "php" else \
                {"index.php": DB_PHP.replace("UNIT", name).encode(),
                 "seed.php": SEED_PHP.replace("UNIT", name).encode()} if kind == "db" \
                else {"index.html": PAGE.encode()}
            upload(node, name, files, replace=True)
            content.publish(County(c.root), name)
            if kind == "db":
                seeded = subprocess.run(["curl", "-s", "-m", "120", "-H",
                                         f"Host: {name}.{CLUSTER['domain']}",
                                         f"http://{node}/seed.php"],
                                        capture_output=True, text=True).stdout
                assert seeded.endswith("seeded"), seeded[-500:]
        results: dict[str, list[dict]] = {u: [] for u in UNITS}
        for _ in range(rounds):
            for name in UNITS:
                host = f"{name}.{CLUSTER['domain']}"
                results[name].append(wrk(ADDRESSES[placement[name][0]], host, seconds))
                time.sleep(1)
        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for name, rs in results.items()}
        engine = engine_cost(seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pairs = []
    for label, off, on in PAIRS:
        pairs.append({"page": label, "off": med[off], "block": med[on],
                      "throughput_ratio": med[on]["rps"] / med[off]["rps"],
                      "throughput_cost": 1 - med[on]["rps"] / med[off]["rps"],
                      "p99_ratio": med[on]["p99"] / med[off]["p99"], "target_cost": 0.20})
    print(f"WAF cost: wrk -t2 -c16 -d{seconds}s {QUERY}, {rounds} rounds, medians "
          "(machine nodes sharing 2 cores with wrk)")
    print(f"{'page':38} {'off req/s':>10} {'block req/s':>12} {'cost':>6} {'p99 off':>8} "
          f"{'p99 block':>10} {'non-2xx':>8}")
    for p in pairs:
        print(f"{p['page']:38} {p['off']['rps']:10.0f} {p['block']['rps']:12.0f} "
              f"{p['throughput_cost']:6.0%} {p['off']['p99']:7.2f}ms {p['block']['p99']:9.2f}ms "
              f"{p['off']['non2xx'] + p['block']['non2xx']:8.0f}")
    print("Where the time goes (one nginx worker on loopback, a static file, ms per request):")
    for label, e in engine.items():
        print(f"  {label:18} {e['rps']:9.0f} req/s  {e['ms_per_request']:.3f} ms")
    ms = {k: e["ms_per_request"] for k, e in engine.items()}
    print(f"  the engine alone: {ms['engine, no rules'] - ms['off']:.3f} ms; the CRS's rules: "
          f"{ms['engine + CRS'] - ms['engine, no rules']:.3f} ms")
    if args.json:
        print(json.dumps({"bench": "waf", "seconds": seconds, "rounds": rounds,
                          "pairs": pairs, "engine": engine}))


if __name__ == "__main__":
    main()
