"""Keeping nodes patched without losing the cluster: security updates one node at a time,
and reboots that drain the node first.

- upgrade: unattended-upgrades on each node in turn (hosts.yaml order), each only while every
  other node answers its health probe, and the next only once this one serves again. The
  nodes' own timers do the same in their staggered slots; this is the operator's "now".
- reboot: drain (its replicas move, content first), reboot, wait until it is back with a new
  boot time and serving, undrain.
"""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Callable

from controlplane.converge import service
from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.errors import NodeError
from controlplane.core.manifest import Node
from controlplane.nodes import handover
from controlplane.nodes.lifecycle import _node, _progress
from controlplane.sites import probes

Say = Callable[[str], None]
UPDATES_TOOL = "/usr/local/sbin/govhost-updates"


def _healthy(address: str) -> bool:
    return probes.probe(paths.PROBE_HOST, "", address, "/health", timeout=5).status == 200


def upgrade(county: County, names: list[str] | None = None,
            say: Say = lambda _: None) -> dict[str, Any]:
    inv = county.inv
    nodes = [_node(inv, n) for n in names] if names else list(inv.hosts.nodes)
    out: list[dict[str, Any]] = []
    for node in nodes:
        others = [n for n in inv.hosts.nodes if n.name != node.name]
        down = [n.name for n in others if not _healthy(n.address)]
        if down:
            out.append({"node": node.name, "ok": False, "upgraded": [],
                        "error": f"not now: {', '.join(down)} not answering; a second node "
                                 "must not go down for updates"})
            say(f"{node.name}: skipped ({', '.join(down)} down)")
            break
        res = _upgrade_one(county, node, say)
        if res.get("ok"):
            res.pop("log", None)
        out.append(res)
        say(f"{node.name}: {len(res.get('upgraded', []))} package(s) upgraded"
            + ("; reboot required" if res.get("reboot_required") else ""))
        if not (res.get("ok") and res["serving"]):
            break
    with county.state() as st:
        st.audit("node.upgrade", ",".join(n["node"] for n in out),
                 {"nodes": [{k: v for k, v in n.items() if k != "log"} for n in out]})
    ok = len(out) == len(nodes) and all(n.get("ok") and n.get("serving") for n in out)
    return {"nodes": out, "result": "upgraded" if ok else "partial"}


def _upgrade_one(county: County, node: Node, say: Say) -> dict[str, Any]:
    """Packages restart nginx: the node's floating addresses go to its peers first, and it
    resumes VRRP afterwards whatever happened (keepalived's own probes keep a node that does
    not serve from taking anything back), so no failure leaves it out by hand."""
    inv = county.inv
    hand = inv.hosts.vrrp is not None and "web" in node.roles and any(
        n.name != node.name for n in inv.hosts.web_nodes)
    if hand:
        handover.release(county, node.name)
    try:
        if hand:
            handover.wait_handed_over(county, node.name, say)
        say(f"{node.name}: updating")
        cmd = remote.ssh_argv(inv.hosts, node, county.known_hosts, f"{UPDATES_TOOL} run")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            res = {"ok": False, "upgraded": [], "error": "no answer within an hour"}
        else:
            try:
                res = json.loads(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                res = {"ok": False, "upgraded": [],
                       "error": (r.stderr.strip() or r.stdout.strip())[-300:]
                       or f"ssh exit {r.returncode}"}
        res["node"] = node.name
        # the node must serve again before the next one starts
        deadline = time.monotonic() + 120
        while not _healthy(node.address) and time.monotonic() < deadline:
            time.sleep(1)
        res["serving"] = _healthy(node.address)
    finally:
        if hand:
            handover.release(county, node.name, back=True)
    return res


def reboot(county: County, name: str, say: Say = lambda _: None,
           timeout: float = 600) -> dict[str, Any]:
    inv = county.inv
    node = _node(inv, name)
    before = remote.node_status(inv.hosts, [node], county.known_hosts)[name]
    if not before.reachable:
        raise NodeError(f"{name} is not reachable over SSH ({before.error}); nothing to reboot")
    with county.state() as st:
        was_drained = name in st.drained()
        st.set_drained(name, True)
    say(f"{name}: drained; moving its replicas")
    drained = service.apply(county, progress=_progress(say))
    if not drained.ok:
        raise NodeError(f"{name}: the drain did not complete ({drained.result}); not "
                        "rebooting. `govhost status` shows why; the node stays drained")
    handed = handover.wait_handed_over(county, name, say)
    say(f"{name}: rebooting")
    subprocess.run(remote.ssh_argv(inv.hosts, node, county.known_hosts,
                                   "systemctl reboot || reboot"),
                   capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    back = None
    while time.monotonic() < deadline:
        time.sleep(2)
        st_ = remote.node_status(inv.hosts, [node], county.known_hosts)[name]
        if st_.reachable and st_.boot_time and before.boot_time \
                and st_.boot_time > before.boot_time and st_.nginx_running:
            back = st_
            break
    if back is None:
        raise NodeError(f"{name} did not come back within {timeout:.0f} s; it stays drained "
                        f"(`govhost node undrain {name}` and `govhost apply` once it is up)")
    took = round(timeout - (deadline - time.monotonic()), 1)
    say(f"{name}: back after {took} s")
    if not was_drained:
        with county.state() as st:
            st.set_drained(name, False)
    after = service.apply(county, progress=_progress(say))
    with county.state() as st:
        st.audit("node.reboot", name, {"seconds": took, "result": after.result})
    return {"node": name, "seconds": took, "drain": drained.to_json(), "floating": handed,
            "apply": after.to_json(), "undrained": not was_drained,
            "result": "rebooted" if after.ok else "partial"}

