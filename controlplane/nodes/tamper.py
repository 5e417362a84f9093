"""Tamper incidents as the nodes recorded them: what changed, where, and whether it was put
back (the watcher itself is `govhost_node.tamper`, running on every node)."""
from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.manifest import Node


def incidents(county: County, hours: float = 24 * 7) -> dict[str, Any]:
    """Per node: its incidents of the last `hours`, its watcher's state, or why it could not
    be asked."""
    inv = county.inv
    since = time.time() - hours * 3600

    def one(node: Node) -> tuple[str, dict[str, Any]]:
        cmd = f"{paths.NODE_TAMPER_TOOL} incidents --since {since:.0f}"
        try:
            r = subprocess.run(remote._ssh_cmd(inv.hosts, node, county.known_hosts, cmd),
                               capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return node.name, {"error": "no answer in 60 s"}
        if r.returncode != 0:
            return node.name, {"error": r.stderr.strip()[-300:] or f"exit {r.returncode}"}
        got = json.loads(r.stdout)
        for i in got["incidents"]:
            i["node"] = node.name        # as hosts.yaml names it (a node's own hostname may differ)
        return node.name, got

    with ThreadPoolExecutor(max_workers=max(1, len(inv.hosts.nodes))) as pool:
        return dict(pool.map(one, inv.hosts.nodes))
