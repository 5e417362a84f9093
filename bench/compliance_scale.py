#!/usr/bin/env python3
"""Benchmark the compliance checks at county scale on the 3 lab nodes: N generated units
(default 300), each with a published site of about P pages (default 200) in three columns,
images, attachments, a link to the next unit's site, and exactly two planted faults (a
broken link and a missing image). Sites are on HTTPS (county CA), as a county's would be.

Prints, measured in one run:
- side by side on a sample of sites crawled one at a time: the crawl paced to each site's
  rate limit against an unpaced one (8 threads), in seconds and in false broken links (the
  unpaced crawl's own 429 answers);
- `govhost compliance check` of every unit, 8 and then 16 sites at a time: wall time,
  requests counted by the nodes' agents, per node, control-machine CPU, nginx CPU per node,
  and whether exactly the planted faults were found in every unit;
- one exporter probe round (every homepage through every node): wall time, requests and
  nginx CPU per node, and the load per node at the default 30 s interval.

Every request goes to the lab nodes on loopback (external links are not fetched).
Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/compliance_scale.py [N] [PAGES] [--json]
"""
from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.compliance import run as compliance_run
from controlplane.core.county import County
from controlplane.core.manifest import Node  # noqa: E402
from controlplane.lab import machines as lab
from controlplane.monitoring.exporter import Prober  # noqa: E402
from controlplane.sites import status  # noqa: E402
from controlplane.tls import metrics
from tests.helpers import generated_county, upload  # noqa: E402
from tests.helpers import lab_ssh as ssh

NODES = {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"}
DOMAIN = "qingshui.gov.cn"
COLUMNS = [("xwdt", "新闻动态", "news"), ("tzgg", "通知公告", "notices"),
           ("zcwj", "政策文件", "policy")]
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")
SAMPLE = 6


def govhost(inv: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> tuple[float, str]:
    start = time.monotonic()
    p = subprocess.run([str(REPO / ".venv/bin/govhost"), "--inventory", str(inv), *args],
                       capture_output=True, text=True, timeout=7200)
    if p.returncode not in ok_codes:
        raise SystemExit(f"govhost {' '.join(args)} failed:\n{p.stdout[-2000:]}\n"
                         f"{p.stderr[-2000:]}")
    return time.monotonic() - start, p.stdout


def site(i: int, n: int, pages: int, run: str) -> dict[str, bytes]:
    """A unit's site of `pages` HTML pages: homepage, three column indexes, articles. Every
    page carries the run's token: the lab nodes keep the content of an earlier run, and a
    publish that changes nothing would leave this run's fresh publish record without the
    columns' updates."""
    unit = f"unit{i:04d}"
    nxt = f"https://unit{(i + 1) % n:04d}.{DOMAIN}/"
    articles = pages - 1 - len(COLUMNS)
    per_col = [list(range(c, articles, len(COLUMNS))) for c in range(len(COLUMNS))]
    files: dict[str, bytes] = {}

    def page(title: str, body: str) -> bytes:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
                f"<meta name='generator' content='govhost bench {run}'>"
                f"<link rel='stylesheet' href='/css/site.css'></head><body>"
                f"<nav><a href='/'>首页</a> " + " ".join(
                    f"<a href='/{c}/'>{t}</a>" for c, t, _ in COLUMNS) + "</nav>"
                f"{body}</body></html>").encode()

    footer = (f"<footer>主办单位：测试单位 {unit} 联系电话：0571-1234 网站标识码："
              f"33{i:08d} 浙ICP备{i:08d}号-1 浙公网安备 3301{i:010d}号</footer>")
    latest = "".join(f"<li><a href='/{COLUMNS[k % 3][0]}/a{k}.html'>文章 {k}</a></li>"
                     for k in range(min(10, articles)))
    files["index.html"] = page(f"{unit} 首页", f"<img src='/img/logo.png'><ul>{latest}</ul>"
                               f"<a href='{nxt}'>下一个单位</a>{footer}")
    for c, (col, title, _) in enumerate(COLUMNS):
        items = "".join(f"<li><a href='a{k}.html'>文章 {k}</a></li>" for k in per_col[c])
        files[f"{col}/index.html"] = page(title, f"<h1>{title}</h1><ul>{items}</ul>")
        for j, k in enumerate(per_col[c]):
            body = [f"<h1>文章 {k}</h1><p>{'正文。' * 40}</p>",
                    f"<img src='/img/c{k % 5}.png'>"]
            if j:
                body.append(f"<a href='a{per_col[c][j - 1]}.html'>上一篇</a>")
            if j + 1 < len(per_col[c]):
                body.append(f"<a href='a{per_col[c][j + 1]}.html'>下一篇</a>")
            if k % 10 == 0:
                body.append(f"<a href='/files/doc{k}.pdf'>附件</a>")
            if k == 3:         # the planted faults: a link and an image that are not there
                body.append("<a href='/xwdt/missing.html'>旧链接</a><img src='/img/none.png'>")
            files[f"{col}/a{k}.html"] = page(f"文章 {k}", "".join(body))
            if k % 10 == 0:
                files[f"files/doc{k}.pdf"] = b"%PDF-1.4\n% govhost bench\n"
    for k in range(5):
        files[f"img/c{k}.png"] = PNG
    files["img/logo.png"] = PNG
    files["css/site.css"] = b"body { font-family: sans-serif }\n"
    return files


def nginx_cpu() -> dict[str, float]:
    """CPU seconds nginx (master and workers) has used on each node so far."""
    out = {}
    for name, address in NODES.items():
        text = ssh(address, "for p in $(pgrep -x nginx); do cut -d' ' -f14,15 /proc/$p/stat; "
                            "done 2>/dev/null; getconf CLK_TCK")
        *ticks, hz = text.split()
        out[name] = sum(int(x) for x in ticks) / int(hz)
    return out


def requests_served(inv: Path) -> dict[str, float]:
    """Requests that entered each node for tenants (the node agents' counters, which leave
    out requests forwarded by another node and govhost's own probes)."""
    c = County(inv)
    access = metrics.ensure(c.state_dir, c.inv.secret, c.inv.hosts, c.inv.cluster.name)
    out = {}
    for name, address in NODES.items():
        per = status.agent_metrics(address, access) or {}
        out[name] = sum(v["requests"] for t, v in per.items()
                        if not t.startswith("_"))      # "_node": the node's own, no requests
    return out


def self_cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def check_county(inv: Path, n: int, at_once: int) -> dict:
    time.sleep(3)
    r0, c0, cpu0 = requests_served(inv), nginx_cpu(), self_cpu()
    took, out = govhost(inv, "compliance", "check", "--json", ok_codes=(0, 1))
    r1, c1, cpu1 = requests_served(inv), nginx_cpu(), self_cpu()
    res = json.loads(out)
    exact = 0
    page_counts, link_counts = [], []
    for i in range(n):
        v = res[f"unit{i:04d}"]
        broken = {b["link"].split("/", 3)[3] for b in v["links"]["evidence"]}
        exact += broken == {"xwdt/missing.html", "img/none.png"} and v["footer"]["ok"] \
            and v["columns_fresh"]["ok"]
        m = re.search(r"of (\d+) links on (\d+) pages", v["links"]["summary"])
        if m:
            link_counts.append(int(m.group(1)))
            page_counts.append(int(m.group(2)))
    reqs = delta(r1, r0)
    total = sum(reqs.values())
    print(f"compliance check of {n} units, {at_once} sites at a time: {took:.0f} s "
          f"({took / 60:.1f} min), {sum(page_counts)} pages and {sum(link_counts)} links "
          f"checked, {total:.0f} requests entered the nodes ({total / took:.0f}/s)", flush=True)
    print("  requests per node: " + ", ".join(f"{k} {v:.0f}" for k, v in reqs.items()))
    print("  nginx CPU per node: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                               delta(c1, c0).items()))
    cpu = cpu1 - cpu0
    print(f"  control machine CPU (govhost process): {cpu:.0f} s ({cpu / took:.0%} of a core)")
    print(f"  units with exactly the planted faults found, footer and columns passing: "
          f"{exact}/{n}", flush=True)
    return {"sites_at_once": at_once, "seconds": round(took, 1), "requests": round(total),
            "pages": sum(page_counts), "links": sum(link_counts),
            "control_cpu_seconds": round(cpu, 1), "units_exact": exact}


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--json"]
    n = int(args[0]) if args else 300
    pages = int(args[1]) if len(args) > 1 else 200
    figures: dict = {"bench": "compliance_scale", "units": n, "pages": pages}
    if not all(x.ssh_open for x in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-compliance-"))
    run = work.name.rsplit("-", 1)[-1]
    inv = generated_county(work / "inventory", n)
    doc = yaml.safe_load((inv / "cluster.yaml").read_text())
    doc["tls"] = {"issuer": "internal"}
    doc["compliance"] = {"check_external_links": False}
    (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    for i in range(n):
        p = inv / "tenants" / f"unit{i:04d}.yaml"
        t = yaml.safe_load(p.read_text())
        t["identity"] = {"site_code": f"33{i:08d}", "icp": f"浙ICP备{i:08d}号-1",
                         "psb": f"浙公网安备 3301{i:010d}号"}
        t["columns"] = [{"path": f"/{c}/", "title": title, "category": cat}
                        for c, title, cat in COLUMNS]
        p.write_text(yaml.safe_dump(t, allow_unicode=True))
    print(f"{n} units, {pages} pages each, 3 lab nodes; work dir {work}", flush=True)

    took, _ = govhost(inv, "apply", "--yes", "--json")
    print(f"apply over HTTP: {took:.1f} s", flush=True)
    took, _ = govhost(inv, "cert", "renew", "--json")
    print(f"county CA certificates and apply over HTTPS: {took:.1f} s", flush=True)
    _, out = govhost(inv, "unit", "list", "--json")
    replicas = {t["name"]: t["replicas"][0] for t in json.loads(out)}

    def publish(i: int) -> int:
        unit = f"unit{i:04d}"
        files = site(i, n, pages, run)
        upload(NODES[replicas[unit]], unit, files, replace=True)
        govhost(inv, "publish", unit, "--json")
        return len(files)

    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        files = sum(pool.map(publish, range(n)))
    print(f"published {files} files ({files / n:.0f} per unit) in "
          f"{time.monotonic() - start:.0f} s", flush=True)

    # Side by side: one site at a time, paced to its rate limit, then unpaced.
    platform = {f"unit{i:04d}.{DOMAIN}" for i in range(n)}
    entry = Node(name="n1", address=NODES["n1"], roles=("web",))
    side: dict[str, list[dict]] = {"paced": [], "unpaced": []}
    for i in range(SAMPLE):
        host = f"unit{i * (n // SAMPLE):04d}.{DOMAIN}"
        for mode, rate in (("paced", compliance_run.CRAWL_RATE_SHARE * 20), ("unpaced", None)):
            time.sleep(3)          # the site's limiter bucket refills (burst 40 at 20 r/s)
            route = compliance_run.Route(entry, frozenset(platform))
            side[mode].append(compliance_run.crawl(host, route, 200, 600, scheme="https",
                                                   rate=rate))
    for mode, rs in side.items():
        secs = sum(r["seconds"] for r in rs)
        reqs = sum(r["requests"] for r in rs)
        false = sum(1 for r in rs for b in r["broken"] if b["status"] == 429)
        figures[f"one_site_{mode}_seconds"] = round(secs / len(rs), 2)
        figures[f"one_site_{mode}_429s"] = false
        print(f"one site at a time, {mode:8s}: {secs / len(rs):5.1f} s per site, "
              f"{reqs / len(rs):.0f} requests per site, {reqs / secs:5.1f} requests/s, "
              f"broken links reported per site {sum(len(r['broken']) for r in rs) / len(rs):.1f}"
              f" (planted 2; 429 answers among them: {false})", flush=True)

    # The whole county, as an operator runs it: 8 sites at a time (the default), then 16.
    for at_once in (8, 16):
        doc = yaml.safe_load((inv / "cluster.yaml").read_text())
        doc["compliance"]["crawl_sites_at_once"] = at_once
        (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
        figures.setdefault("county_checks", []).append(check_county(inv, n, at_once))

    # Probe load: the exporter's round, every homepage through every node.
    # Rounds not spread over the interval (the running exporter spreads them over half of
    # it): the round's seconds are then its cost, not 15 s of pacing.
    prober = Prober(County(inv), 30, record=False)
    prober.probe_once(spread=False)
    rounds = 3
    c0 = nginx_cpu()
    secs, failed = [], 0
    reqs = {node: 0.0 for node in NODES}
    for _ in range(rounds):
        rnd = prober.probe_once(spread=False)
        secs.append(rnd.seconds)
        failed += sum(1 for f in rnd.failed.values() if f)
        https = sum(1 for per in rnd.tenants.values() for r in per.values()
                    if r.scheme == "https")
        for per in rnd.tenants.values():
            for node, r in per.items():
                reqs[node] += 1
        for node in rnd.nodes_up:
            reqs[node] += 2                       # its /health and /release
    cpu = delta(nginx_cpu(), c0)
    print(f"probe round ({n} homepages x 3 nodes, {https} over HTTPS): "
          f"{sum(secs) / rounds:.2f} s per round, {failed} failed probes in {rounds} rounds")
    for node in NODES:
        per_round = reqs[node] / rounds
        print(f"  {node}: {per_round:.0f} requests per round = {per_round / 30:.1f}/s at the "
              f"30 s interval; nginx CPU {cpu[node] / rounds:.2f} s per round "
              f"({cpu[node] / rounds / 30:.1%} of a core)")
    figures["probe_round_seconds"] = round(sum(secs) / rounds, 2)
    figures["probe_failed"] = failed
    if as_json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
