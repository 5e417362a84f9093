#!/usr/bin/env python3
"""Benchmark bringing N generated tenants (default 300) to HTTPS on the 3 lab nodes, against
real Pebble with its default chaos (5 % of good nonces refused, each validation delayed
0-15 s, authorizations never reused), side by side in one run:
- HTTP-01: units packed into SAN certificates of at most 100 names (Let's Encrypt's limit),
  every node answering the CA's checks; time to the first HTTPS answer of every unit on
  every node, and ACME orders used;
- DNS-01 through a real BIND (RFC 2136): one wildcard order;
- what one certificate per unit would cost in orders against a 50-per-week limit.
Every unit is then fetched over HTTPS on every node with the chain verified against Pebble's
root. Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/tls_scale.py [N] [--json]
"""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.lab import machines as lab
from controlplane.lab import services as lab_services  # noqa: E402
from tests.helpers import generated_county  # noqa: E402

NODES = ["10.77.0.11", "10.77.0.12", "10.77.0.13"]


def govhost(inv: Path, *args: str) -> tuple[float, dict | None, str]:
    start = time.monotonic()
    p = subprocess.run([str(REPO / ".venv/bin/govhost"), "--inventory", str(inv), *args],
                       capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - start
    if p.returncode != 0:
        raise SystemExit(f"govhost {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    try:
        return took, json.loads(p.stdout), p.stdout
    except ValueError:
        return took, None, p.stdout


def handshake(host: str, address: str, root: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection((address, 443), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                return s.recv(64).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


def county(base: Path, n: int, tls: dict) -> Path:
    inv = generated_county(base / "inventory", n)
    doc = yaml.safe_load((inv / "cluster.yaml").read_text())
    doc["tls"] = tls
    (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return inv


def run(label: str, inv: Path, root: Path, n: int) -> dict:
    t_apply, _, _ = govhost(inv, "apply", "--yes", "--json")
    t_cert, res, _ = govhost(inv, "cert", "renew", "--json")
    assert res is not None
    hosts = [f"unit{i:04d}.qingshui.gov.cn" for i in range(n)] + ["www.qingshui.gov.cn"]
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        ok = list(pool.map(lambda hp: handshake(hp[0], hp[1], root),
                           [(h, a) for h in hosts for a in NODES]))
    t_check = time.monotonic() - start
    acme = [r for r in res["results"] if r["issuer"] == "acme"]
    return {"label": label, "apply_http_s": t_apply, "cert_renew_s": t_cert,
            "orders": res["orders_this_week"], "certificates": len(acme),
            "failed": sum(not r["ok"] for r in acme),
            "slowest_order_s": max((r["seconds"] for r in acme), default=0),
            "https_ok": sum(ok), "https_total": len(ok), "check_s": t_check}


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--json"]
    n = int(args[0]) if args else 300
    if not all(node.ssh_open for node in lab.nodes()[:3]):
        raise SystemExit("the lab is not up: run `govhost lab up --nodes 3` first")
    base = Path(tempfile.mkdtemp(prefix="govhost-bench-tls-"))
    dirs = [base / "svc" / d for d in ("challtestsrv", "pebble-a", "bind", "pebble-b")]
    env = {"PEBBLE_AUTHZREUSE": "0"}
    rows = []
    try:
        dns_a = lab_services.challtestsrv_up(dirs[0], default_ipv4="10.77.0.11")
        root_a = lab_services.pebble_up(dirs[1], "127.0.2.21", 14300, dns_a, env=env)
        secret = lab_services.bind_up("qingshui.gov.cn", NODES, dirs[2], "127.0.0.1", 1253)
        root_b = lab_services.pebble_up(dirs[3], "127.0.2.22", 14400, "127.0.0.1:1253", env=env)
        acme = {"contact": "webmaster@qingshui.gov.cn"}
        inv = county(base / "http01", n, {"issuer": "acme", "acme": {
            **acme, "directory": "https://127.0.2.21:14300/dir",
            "ca_bundle": str(dirs[1] / "tls-ca.pem")}})
        rows.append(run("HTTP-01, SAN certificates of <= 100 names", inv, root_a, n))
        inv = county(base / "dns01", n, {"issuer": "acme", "acme": {
            **acme, "directory": "https://127.0.2.22:14400/dir",
            "ca_bundle": str(dirs[3] / "tls-ca.pem"), "challenge": "dns-01",
            "dns": {"server": "127.0.0.1", "port": 1253, "zone": "qingshui.gov.cn",
                    "tsig_key_name": "govhost-acme", "tsig_secret_file": str(secret)}}})
        rows.append(run("DNS-01, one wildcard", inv, root_b, n))
    finally:
        for d in dirs:
            lab_services.stop_dir(d)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{n} tenants + portal, 3 lab nodes, Pebble with chaos on")
    print(f"{'':44} {'apply(http)':>11} {'cert renew':>10} {'orders':>6} {'slowest':>8} "
          f"{'HTTPS ok':>10}")
    for r in rows:
        print(f"{r['label']:44} {r['apply_http_s']:10.1f}s {r['cert_renew_s']:9.1f}s "
              f"{r['orders']:6d} {r['slowest_order_s']:7.1f}s "
              f"{r['https_ok']:>5}/{r['https_total']}")
    print(f"one certificate per unit would need {n + 1} orders: "
          f"{(n + 1) / 50:.1f} weeks at 50 per week; SAN packing needs {rows[0]['orders']} "
          f"({(n + 1) / max(1, rows[0]['orders']):.0f}x fewer), the wildcard {rows[1]['orders']}")
    print(f"time to HTTPS (apply over HTTP excluded): HTTP-01 {rows[0]['cert_renew_s']:.1f} s, "
          f"DNS-01 {rows[1]['cert_renew_s']:.1f} s")
    if as_json:
        print(json.dumps({"bench": "tls_scale", "units": n, "runs": rows,
                          "orders_one_per_unit": n + 1,
                          "san_orders_x_fewer": round((n + 1) / max(1, rows[0]["orders"]), 1)}))


if __name__ == "__main__":
    main()
