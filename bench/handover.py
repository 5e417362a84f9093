"""Planned hand-overs of a floating address: what citizens see, with the addresses kept on
lo and without, side by side in one run.

    python bench/handover.py [--cycles 16] [--json]

On the lab (brought up as overlay nodes if none run), the example county with floating
addresses. From the lab's outside namespace, curl and Python requests (15 s timeout) ask
n2's floating address for jiaoyu's page every 200 ms while n2 hands its address to n3 and
takes it back (`govhost-node vrrp release`, then `resume`), CYCLES times:

1. on-lo: as govhost runs it, every floating address also on every web node's lo, so a
   node that has just handed the address over still sends the answers it owes;
2. off-lo: the same with those lo addresses taken away (how govhost ran before).

Printed per setup: requests, failed, timed out (15 s), the longest silence; with --json one
JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import applied  # noqa: E402

from controlplane.lab import frontdoor, network  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from tests.helpers import floating_county, wait_floating_home, wait_held  # noqa: E402

HOST, EXPECT = "jiaoyu.qingshui.gov.cn", "教育"
ADDRESS = "10.77.0.102"          # n2's
NODE_TOOL = "/usr/local/sbin/govhost-node"


ADDRESSES = {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"}


def _on(name: str, command: str) -> None:
    """A command on the node, over its SSH (an overlay node's files are its own)."""
    subprocess.run([*lab.ssh_argv(ADDRESSES[name]), command], check=True,
                   capture_output=True, timeout=60)


def one(cycles: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seconds = cycles * 9 + 2
    proc = subprocess.Popen(
        network.outside_argv(frontdoor.argv([ADDRESS], HOST, EXPECT, seconds)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    frontdoor.wait_ready(proc)
    time.sleep(1)
    for _ in range(cycles):
        _on("n2", f"{NODE_TOOL} vrrp release")
        wait_held(ADDRESS, ["n3"], poll=0.1)
        time.sleep(2)
        _on("n2", f"{NODE_TOOL} vrrp resume")
        wait_held(ADDRESS, ["n2"], poll=0.1)
        time.sleep(2)
    out, err = proc.communicate(timeout=seconds + 60)
    if proc.returncode != 0:
        raise SystemExit(f"the citizens' loop failed: {err[-1500:]}")
    res = json.loads(out)
    return {"hand_overs": cycles * 2, "requests": res["requests"], "failed": res["failed"],
            "timeouts": res["timeouts"], "silent_s": res["silent_s"],
            "slowest_s": res["slowest_s"]}


def _lo(present: bool) -> None:
    """Put every floating address on (govhost-node's own `vrrp local`) or take it off every
    node's lo."""
    for name in ("n1", "n2", "n3"):
        if present:
            _on(name, f"{NODE_TOOL} vrrp local")
        else:
            _on(name, "while read -r a; do case $a in *:*) ip -6 addr del $a/128 dev lo;; "
                      "?*) ip addr del $a/32 dev lo;; esac; done < /var/lib/govhost/vrrp-local "
                      "2>/dev/null; true")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not [n for n in lab.nodes() if n.running]:
        lab.up(3, "overlay")
    inv = floating_county(Path(tempfile.mkdtemp()) / "inventory")
    applied(inv)
    wait_floating_home()
    results = {"on-lo": one(a.cycles)}
    _lo(False)
    try:
        results["off-lo"] = one(a.cycles)
    finally:
        _lo(True)
    for name, v in results.items():
        print(f"{name:>7}: {v['hand_overs']} hand-overs, {v['requests']} requests, "
              f"{v['failed']} failed, {v['timeouts']} timed out at 15 s, longest silence "
              f"{v['silent_s']:.2f} s")
    on, off = results["on-lo"], results["off-lo"]
    summary = {"cycles": a.cycles, "setups": results,
               "silent_ratio_off_over_on": round(off["silent_s"] / max(0.001, on["silent_s"]),
                                                 1)}
    print(f"longest silence, off-lo / on-lo: {summary['silent_ratio_off_over_on']}x")
    if a.json:
        print(json.dumps({"bench": "handover", **summary}))


if __name__ == "__main__":
    main()
