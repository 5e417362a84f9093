"""Handing a node's floating addresses to its peers before it stops serving.

A drained node's release says `released` (keepalived stops there and its addresses move at
once: keepalived leaves with a priority-0 advertisement, so a peer takes over without waiting
out the three missed adverts of a failure). An upgrade releases the node by hand for its
duration. Either way the control machine waits until a peer holds every address the node had
before it lets nginx stop, and says who took what.
"""
from __future__ import annotations

import subprocess
import time
from typing import Any, Callable

from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.errors import NodeError
from controlplane.sites import vrrp

Say = Callable[[str], None]


def wait_handed_over(county: County, name: str, say: Say = lambda _: None,
                     timeout: float = 30) -> dict[str, Any]:
    """Wait until `name` holds no floating address and a peer holds each of its own."""
    inv = county.inv
    node = next((n for n in inv.hosts.nodes if n.name == name), None)
    if inv.hosts.vrrp is None or node is None or "web" not in node.roles:
        return {}
    web = inv.hosts.web_nodes
    deadline = time.monotonic() + timeout
    while True:
        live = remote.node_status(inv.hosts, web, county.known_hosts)
        held = {n: s.floating for n, s in live.items() if s.reachable}
        rows, _ = vrrp.holders(inv.hosts, held)
        mine = [r["address"] for r in rows if name in r["held_by"]]
        homeless = [r["address"] for r in rows if r["home"] == name
                    and not [h for h in r["held_by"] if h != name]]
        if not mine and not homeless:
            taken = {r["address"]: r["held_by"][0] for r in rows if r["home"] == name}
            say(f"{name}: floating addresses handed over: "
                + ", ".join(f"{a} → {n}" for a, n in taken.items()))
            return taken
        if time.monotonic() > deadline:
            raise NodeError(f"{name} still holds {', '.join(mine) or 'nothing'} and no peer "
                            f"took {', '.join(homeless) or 'nothing'} after {timeout:.0f} s: "
                            "is keepalived running on the other web nodes and do they hear "
                            "each other's VRRP? `govhost status` shows who holds what")
        time.sleep(0.5)


def release(county: County, name: str, back: bool = False) -> None:
    """`govhost-node vrrp release` (or `resume`) on the node, for work that is not a drain."""
    inv = county.inv
    if inv.hosts.vrrp is None:
        return
    node = next(n for n in inv.hosts.nodes if n.name == name)
    if "web" not in node.roles:
        return
    r = subprocess.run(remote.ssh_argv(inv.hosts, node, county.known_hosts,
                                       f"{paths.NODE_TOOL} vrrp {'resume' if back else 'release'}"),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise NodeError(f"{name}: could not {'resume' if back else 'release'} its floating "
                        f"addresses: {(r.stderr.strip() or r.stdout.strip())[-300:]}")
