"""A node loses power: what citizens see, with floating addresses and without, in one run.

    python bench/frontdoor.py [--seconds 30] [--json]

On the lab (brought up as overlay nodes if none run), from the lab's outside namespace: curl
and Python requests (15 s timeout, the inspection's limit) ask for jiaoyu's page every 200 ms
at every address DNS would hand out, for SECONDS seconds; 3 s in, n2's power is cut.

1. floating: the example county with `vrrp:` (DNS names the floating addresses).
2. round-robin: the same county without `vrrp:` (DNS names the nodes' own addresses), as
   counties run before keepalived.

Printed per setup: requests, failed (no right page), timed out (15 s), the slowest answer
and the longest time an address was silent; the share of requests lost; and the ratio of the
silent times side by side. With --json, one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.core.county import County  # noqa: E402
from controlplane.lab import frontdoor, network  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.sites import apply as apply_mod  # noqa: E402
from tests.helpers import floating_county, wait_floating_home  # noqa: E402

HOST, EXPECT = "jiaoyu.qingshui.gov.cn", "教育"


def _apply(inv: Path) -> None:
    res = apply_mod.apply(County(inv))
    assert res.ok, res.to_json()


def _without_vrrp(inv: Path) -> None:
    hosts = yaml.safe_load((inv / "hosts.yaml").read_text())
    hosts.pop("vrrp", None)
    for n in hosts["nodes"]:
        for key in ("floating", "floating6", "vrid"):
            n.pop(key, None)
    (inv / "hosts.yaml").write_text(yaml.safe_dump(hosts, allow_unicode=True))


def _addresses(inv: Path) -> list[str]:
    from controlplane.dns import plan as dns_plan
    v4, v6 = dns_plan.published(County(inv).inv)
    return v4 + v6


def one(inv: Path, seconds: float) -> dict:
    addresses = _addresses(inv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        network.outside_argv(frontdoor.argv(addresses, HOST, EXPECT, seconds)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    frontdoor.wait_ready(proc)
    time.sleep(3)
    lab.stop("n2")
    out, err = proc.communicate(timeout=seconds + 60)
    if proc.returncode != 0:
        raise SystemExit(f"the citizens' loop failed: {err[-1500:]}")
    lab.start("n2")
    _apply(inv)
    res = json.loads(out)
    res["addresses"] = addresses
    res["lost_share"] = round(res["failed"] / max(1, res["requests"]), 4)
    # A citizen's resolver picks one address: the share of addresses that left whoever got
    # them without a page for 15 s or more (the inspection's "down").
    dead = {r["address"] for r in res["loops"] if r["silent_s"] >= frontdoor.TIMEOUT}
    res["addresses_down_15s"] = f"{len(dead)}/{len(addresses)}"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not [n for n in lab.nodes() if n.running]:
        lab.up(3, "overlay")
    tmp = Path(tempfile.mkdtemp())
    inv = floating_county(tmp / "inventory")
    _apply(inv)
    wait_floating_home()
    results = {"floating": one(inv, a.seconds)}
    wait_floating_home()
    _without_vrrp(inv)
    _apply(inv)
    results["round-robin"] = one(inv, a.seconds)
    shutil.rmtree(tmp, ignore_errors=True)
    f, r = results["floating"], results["round-robin"]
    summary = {"seconds": a.seconds, "every": 0.2, "timeout": frontdoor.TIMEOUT,
               "setups": {k: {key: v[key] for key in ("requests", "failed", "timeouts",
                                                      "slowest_s", "silent_s", "lost_share",
                                                      "addresses_down_15s")}
                          for k, v in results.items()},
               "silent_ratio_rr_over_floating": round(r["silent_s"] / max(0.001, f["silent_s"]),
                                                      1)}
    for name, v in results.items():
        print(f"{name:>12}: {v['requests']} requests to {len(v['addresses'])} addresses, "
              f"{v['failed']} lost ({v['lost_share']:.1%}), {v['timeouts']} timed out at 15 s, "
              f"slowest {v['slowest_s']:.2f} s, longest silence {v['silent_s']:.2f} s, "
              f"addresses down for 15 s or more: {v['addresses_down_15s']}")
        worst = max(v["loops"], key=lambda x: x["silent_s"])
        print(f"{'':>12}  worst: {worst['address']} via {worst['client']}: "
              f"{worst['failed']} lost, silent {worst['silent_s']:.2f} s")
    print(f"longest silence, round-robin / floating: "
          f"{summary['silent_ratio_rr_over_floating']}x")
    if a.json:
        print(json.dumps({"bench": "frontdoor", **summary}))


if __name__ == "__main__":
    main()
