"""Tamper incidents as the nodes recorded them: what changed, where, and whether it was put
back (the watcher itself is `govhost_node.tamper`, running on every node)."""
from __future__ import annotations

import base64
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controlplane.core import pagetext, paths
from controlplane.core.county import County
from controlplane.core.manifest import Node
from controlplane.sites.content_sync import Link, SyncError
from controlplane.wording import check as wording
from controlplane.wording.match import findings


def words_in(evidence_b64: str | None, name: str, ls: wording.Lists | None
             ) -> list[dict[str, Any]]:
    """What the county's word lists find in the bytes a defacer wrote (the evidence the
    node kept of a changed page): each finding with its word, severity, place and line."""
    if not evidence_b64 or ls is None:
        return []
    page = pagetext.extract(name, base64.b64decode(evidence_b64))
    if page is None:
        return []
    return [{k: f[k] for k in ("word", "found", "severity", "place", "line")}
            for f in findings(ls.matcher, page)]


def incidents(county: County, hours: float = 24 * 7) -> dict[str, Any]:
    """Per node: its incidents of the last `hours` (a changed page's words on the county's
    lists with it), its watcher's state, or why it could not be asked."""
    inv = county.inv
    link = Link(inv.hosts, county.known_hosts, {n.name: n for n in inv.hosts.nodes})
    since = f"{time.time() - hours * 3600:.0f}"

    ls = wording.lists(inv)
    ends = ",".join(pagetext.HTML + pagetext.TEXT)

    def one(node: Node) -> tuple[str, dict[str, Any]]:
        try:
            got = json.loads(link.run(node.name, "incidents", "--since", since,
                                      "--evidence-of", ends, "--evidence-max",
                                      str(pagetext.MAX_BYTES["html"]), timeout=60,
                                      tool=paths.NODE_TAMPER_TOOL))
        except subprocess.TimeoutExpired:
            return node.name, {"error": "no answer in 60 s"}
        except SyncError as exc:
            return node.name, {"error": str(exc)[-300:]}
        for i in got["incidents"]:
            i["node"] = node.name        # as hosts.yaml names it (a node's own hostname may differ)
            i["words"] = words_in(i.pop("evidence_b64", None), str(i.get("file", "")), ls)
        return node.name, got

    with ThreadPoolExecutor(max_workers=max(1, len(inv.hosts.nodes))) as pool:
        return dict(pool.map(one, inv.hosts.nodes))
