#!/usr/bin/env python3
"""Benchmark apply at county scale on the lab cluster, side by side with its floor.

With N generated tenants (default 1,000) on the 3 lab nodes it measures, in one run:
  plan      pure load + place + render + plan (in process)
  full      apply from one release to a completely new one (every vhost changed)
  incr      apply after changing one tenant
  floor     the same rendered files shipped to every node over plain SSH (tar | ssh),
            `nginx -t` on them and a graceful reload, nodes in parallel
and prints each in seconds and as a ratio to the floor. Then it reloads nginx under a bounded
wrk load (loopback only) and reports 5xx responses, refused connections and keep-alive
connections closed by the reload.

Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/apply_scale.py [N] [--json] (--json: the figures, each with the floor and its
ratio, as one JSON object on the last line).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.sites import apply as apply_mod  # noqa: E402
from controlplane.sites.plan import make_plan  # noqa: E402
from tests.helpers import generated_county  # noqa: E402

WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s5 = 0; s4 = 0 end
function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1 elseif status >= 400 then s4 = s4 + 1 end
end
function done(summary, latency, requests)
  local t5, t4 = 0, 0
  for _, t in ipairs(threads) do t5 = t5 + t:get("s5"); t4 = t4 + t:get("s4") end
  io.write(string.format("GOVHOST 5xx=%d 4xx=%d\n", t5, t4))
end
"""


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def retitle(inv_dir: Path, name: str, suffix: str) -> None:
    p = inv_dir / "tenants" / f"{name}.yaml"
    p.write_text(re.sub(r"^title: (.*)$", lambda m: f"title: {m.group(1)}{suffix}",
                        p.read_text(), count=1, flags=re.M))


def floor(inv_dir: Path, awaited: bool = False) -> float:
    """Plain SSH: ship each node's rendered release as one tar stream, nginx -t, reload.
    `awaited`: and wait until nginx serves with the reloaded config (its new workers are up):
    `nginx -s reload` returns once it has signalled, before the master has parsed the
    config again, which at 1,000 units is about a second of CPU on every node; an apply
    waits for it (it probes the new release before it goes on)."""
    inv = inventory.load(inv_dir)
    st = County(inv_dir).open_state()
    plan = make_plan(inv, st.drained(), st.placements(), st.applied())
    st.close()
    blobs = {node: apply_mod.pack(rel) for node, rel in plan.releases.items()}
    addresses = {n.name: n.address for n in inv.hosts.nodes}
    script = ("set -e; ulimit -n $(ulimit -Hn); d=/tmp/govhost-floor; rm -rf $d; mkdir -p $d; tar -xz -C $d; "
              "cp /etc/govhost/current/release-id.conf $d/; "
              "nginx -t -q -c $d/nginx.conf; before=$(pgrep -x nginx | sort); "
              "nginx -c /etc/govhost/current/nginx.conf -s reload")
    if awaited:
        script += ('; n=0; while [ "$(pgrep -x nginx | sort)" = "$before" ] && '
                   '[ $n -lt 1500 ]; do sleep 0.02; n=$((n+1)); done')

    def ship(node: str) -> None:
        out = subprocess.run([*lab.ssh_argv(addresses[node], "-o", "ControlMaster=no",
                                            "-o", "ControlPath=none"), script],
                             input=blobs[node], check=False, capture_output=True)
        if out.returncode:
            raise RuntimeError(f"floor on {node}: {out.stderr.decode()[-500:]}")

    t = time.perf_counter()
    with ThreadPoolExecutor(len(blobs)) as pool:
        list(pool.map(ship, blobs))
    return time.perf_counter() - t


def wrk_during_apply(inv_dir: Path, host: str, address: str, seconds: int = 12) -> dict:
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(WRK_LUA)
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s", "-s", str(lua),
           "-H", f"Host: {host}", f"http://{address}/"]
    out: dict = {}

    def run() -> None:
        out["text"] = subprocess.run(cmd, capture_output=True, text=True).stdout

    th = threading.Thread(target=run)
    th.start()
    reloads = 0
    time.sleep(2)
    for i in range(3):  # three applies, each a graceful reload of every node
        retitle(inv_dir, "unit0001", f" r{i}")
        res = apply_mod.apply(County(inv_dir))
        reloads += sum(n.result == "applied" for n in res.nodes if n.node == "n1")
        time.sleep(1)
    th.join()
    text = out.get("text", "")
    m = re.search(r"GOVHOST 5xx=(\d+) 4xx=(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    req = re.search(r"(\d+) requests in", text)
    return {
        "requests": int(req.group(1)) if req else 0,
        "5xx": int(m.group(1)) if m else -1,
        "4xx": int(m.group(2)) if m else -1,
        "connect_errors": int(sock.group(1)) if sock else 0,
        "keepalive_closed_read_errors": int(sock.group(2)) if sock else 0,
        "write_errors": int(sock.group(3)) if sock else 0,
        "timeouts": int(sock.group(4)) if sock else 0,
        "reloads_on_target": reloads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("count", nargs="?", type=int, default=1000, help="generated units")
    ap.add_argument("--json", action="store_true", help="the figures as JSON, last line")
    args = ap.parse_args()
    count = args.count
    if not all(n.ssh_open for n in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-"))
    inv_dir = generated_county(work / "inventory", count)
    # the load target may take a lot of requests
    (inv_dir / "tenants" / "unit0001.yaml").write_text(
        (inv_dir / "tenants" / "unit0001.yaml").read_text() +
        "rate_limit: {requests_per_second: 10000, burst: 100000}\n")
    try:
        plans = [timed(lambda: make_plan(inventory.load(inv_dir), frozenset(), {}, {}))[0]
                 for _ in range(3)]
        plan_s = min(plans)
        warm = apply_mod.apply(County(inv_dir))     # brings the nodes onto this county
        if not warm.ok:
            sys.exit(f"warm-up apply failed: {warm.to_json()}")
        # a new default rate limit changes every tenant's vhost: a completely new release
        cl = inv_dir / "cluster.yaml"
        base = cl.read_text()
        fulls, incrs = [], []
        for i in range(3):
            cl.write_text(base + f"defaults: {{rate_limit: {{requests_per_second: {25 + i}, "
                          "burst: 50}}\n")
            s, full = timed(lambda: apply_mod.apply(County(inv_dir)))
            fulls.append(s)
        for i in range(3):
            retitle(inv_dir, f"unit{min(7, count - 1):04d}", f"（改{i}）")
            s, incr = timed(lambda: apply_mod.apply(County(inv_dir)))
            incrs.append(s)
        full_s, incr_s = statistics.median(fulls), statistics.median(incrs)
        noop_s, noop = timed(lambda: apply_mod.apply(County(inv_dir)))
        floors = [floor(inv_dir) for _ in range(3)]
        floor_s = statistics.median(floors)
        awaited_s = statistics.median([floor(inv_dir, awaited=True) for _ in range(3)])
        print(f"tenants: {count}, nodes: 3, full apply result: {full.result}, "
              f"incremental: {incr.result}, second: {noop.result}")
        print("median of 3 runs each; floor: median of 3")
        print(f"{'measure':<34}{'seconds':>9}{'x floor':>9}")
        for name, s in [("plan (load+place+render+plan)", plan_s),
                        ("full apply (every vhost changed)", full_s),
                        ("incremental apply (one tenant)", incr_s),
                        ("apply with no change", noop_s),
                        ("floor: tar|ssh + nginx -t + reload", floor_s),
                        ("floor, the reload awaited", awaited_s)]:
            print(f"{name:<34}{s:>9.2f}{s / floor_s:>9.2f}")
        print(f"against the floor with the reload awaited: full {full_s / awaited_s:.2f}x, "
              f"incremental {incr_s / awaited_s:.2f}x")
        # Where each kind of apply spends its time (the last run of each, ApplyResult.phases)
        print(f"{'part (s)':<18}{'full':>9}{'incr':>9}{'no change':>11}")
        for part in dict.fromkeys([*full.phases, *incr.phases, *noop.phases]):
            print(f"{part:<18}{full.phases.get(part, 0):>9.2f}{incr.phases.get(part, 0):>9.2f}"
                  f"{noop.phases.get(part, 0):>11.2f}")
        load = wrk_during_apply(inv_dir, "unit0001.qingshui.gov.cn", "10.77.0.11")
        print("reload under load (wrk -t2 -c32, 3 applies with reloads on every node):")
        for k, v in load.items():
            print(f"  {k:<30}{v}")
        if args.json:
            print(json.dumps({
                "bench": "apply_scale", "units": count, "nodes": 3,
                "floor_seconds": round(floor_s, 3),
                "floor_reload_awaited_seconds": round(awaited_s, 3),
                "plan_seconds": round(plan_s, 3),
                "full_apply": {"seconds": round(full_s, 3), "x_floor": round(full_s / floor_s, 2),
                               "target_x_floor": 2.0, "result": full.result,
                               "x_floor_reload_awaited": round(full_s / awaited_s, 2),
                               "phases": full.phases},
                "incremental_apply": {"seconds": round(incr_s, 3),
                                      "x_floor": round(incr_s / floor_s, 2),
                                      "target_x_floor": 1.5, "result": incr.result,
                                      "x_floor_reload_awaited": round(incr_s / awaited_s, 2),
                                      "phases": incr.phases},
                "no_change_apply": {"seconds": round(noop_s, 3),
                                    "x_floor": round(noop_s / floor_s, 2),
                                    "result": noop.result, "phases": noop.phases},
                "reload_under_load": load}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
