"""Tamper incidents as the nodes recorded them: what changed, where, and whether it was put
back (the watcher itself is `govhost_node.tamper`, running on every node)."""
from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controlplane.core import paths
from controlplane.core.county import County
from controlplane.core.manifest import Node
from controlplane.sites.content_sync import Link, SyncError


def incidents(county: County, hours: float = 24 * 7) -> dict[str, Any]:
    """Per node: its incidents of the last `hours`, its watcher's state, or why it could not
    be asked."""
    inv = county.inv
    link = Link(inv.hosts, county.known_hosts, {n.name: n for n in inv.hosts.nodes})
    since = f"{time.time() - hours * 3600:.0f}"

    def one(node: Node) -> tuple[str, dict[str, Any]]:
        try:
            got = json.loads(link.run(node.name, "incidents", "--since", since, timeout=60,
                                      tool=paths.NODE_TAMPER_TOOL))
        except subprocess.TimeoutExpired:
            return node.name, {"error": "no answer in 60 s"}
        except SyncError as exc:
            return node.name, {"error": str(exc)[-300:]}
        for i in got["incidents"]:
            i["node"] = node.name        # as hosts.yaml names it (a node's own hostname may differ)
        return node.name, got

    with ThreadPoolExecutor(max_workers=max(1, len(inv.hosts.nodes))) as pool:
        return dict(pool.map(one, inv.hosts.nodes))
