"""Tenant accounts on the nodes: Linux user names and the spec each node converges to.

Pure: from the inventory and the placement to one JSON document per node, shipped in the
config release (`tenants.json`) and applied on the node by `govhost-tenants converge` when the
release is activated. A node holds accounts only for the tenants it has a replica of.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from . import paths
from .inventory import Inventory
from .manifest import Tenant

SFTP_GROUP = "govhost-sftp"
_MAX_USER = 32


def user_name(tenant: str, section: str | None = None) -> str:
    """`gh-<tenant>` or `gh-<tenant>.<section>`; long names keep a hash so they stay unique
    within Linux's 32 characters."""
    full = f"gh-{tenant}" + (f".{section}" if section else "")
    if len(full) <= _MAX_USER:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[:_MAX_USER - 9]}-{digest}"


def tenant_spec(inv: Inventory, t: Tenant) -> dict[str, Any]:
    return {
        "name": t.name,
        "user": user_name(t.name),
        "home": f"{paths.NODE_SITES}/{t.name}",
        "keys": list(t.sftp.keys),
        "quota_bytes": inv.quota_bytes(t),
        "sections": [{"name": s.name, "user": user_name(t.name, s.name),
                      "keys": list(s.sftp.keys) if s.sftp else []} for s in t.sections],
    }


def node_spec(inv: Inventory, placement: Mapping[str, tuple[str, ...]], node: str) -> bytes:
    tenants = [tenant_spec(inv, t) for t in inv.tenants if node in placement[t.name]]
    return (json.dumps({"sftp_group": SFTP_GROUP, "tenants": tenants}, indent=1,
                       ensure_ascii=False, sort_keys=True) + "\n").encode()
