"""Tenant accounts on the nodes: Linux user names and the spec each node converges to.

Pure: from the inventory and the placement to one JSON document per node, shipped in the
config release (`tenants.json`) and applied on the node by `govhost-tenants converge` when the
release is activated. A node holds accounts only for the tenants it has a replica of.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

from controlplane.core import paths, secrets
from controlplane.core.inventory import Inventory
from controlplane.core.manifest import Node, Tenant
from controlplane.core.specfile import spec_bytes

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


def db_name(tenant: str) -> str:
    """`gh_<tenant>` (MariaDB names: letters, digits, `_`; at most 64 characters)."""
    full = "gh_" + tenant.replace("-", "_")
    if len(full) <= 64:
        return full
    return f"{full[:55]}_{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def db_node(inv: Inventory) -> Node | None:
    """The node with the `db` role (the first by name if several)."""
    return next((n for n in sorted(inv.hosts.nodes, key=lambda n: n.name) if "db" in n.roles),
                None)


def db_credentials(inv: Inventory, t: Tenant) -> dict[str, Any] | None:
    """What a PHP tenant with `database: true` connects with; the password is derived from the
    cluster secret, never stored."""
    node = db_node(inv)
    if t.site.type != "php" or not t.site.database or node is None:
        return None
    name = db_name(t.name)
    return {"host": node.address, "port": 3306, "database": name, "user": name,
            "password": secrets.derive(inv.secret, f"mariadb:{t.name}")}


def tenant_spec(inv: Inventory, t: Tenant) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": t.name,
        "user": user_name(t.name),
        "home": f"{paths.NODE_SITES}/{t.name}",
        "keys": list(t.sftp.keys),
        "quota_bytes": inv.quota_bytes(t),
        "sections": [{"name": s.name, "user": user_name(t.name, s.name),
                      "keys": list(s.sftp.keys) if s.sftp else []} for s in t.sections],
        "php": t.site.type == "php",
    }
    creds = db_credentials(inv, t)
    if creds:
        spec["db"] = creds
    return spec


def node_spec(inv: Inventory, placement: Mapping[str, tuple[str, ...]], node: str,
              specs: dict[str, dict[str, Any]] | None = None) -> bytes:
    """tenants.json: shipped with mode 0600 (it holds database passwords). `specs`: the
    units' specs worked out for another node of the same render, taken and added to."""
    specs = {} if specs is None else specs
    tenants = []
    for t in inv.tenants:
        if node in placement[t.name]:
            spec = specs.get(t.name)
            if spec is None:
                spec = specs[t.name] = tenant_spec(inv, t)
            tenants.append(spec)
    ports = ({"ssh_port": inv.hosts.ssh.port, "sftp_port": inv.hosts.ssh.sftp_port}
             if inv.hosts.ssh.sftp_port else {})
    return spec_bytes({"sftp_group": SFTP_GROUP, "web_user": paths.NGINX_USER,
                       "tenants": tenants, **ports})


def _client_hosts(addresses: Iterable[str]) -> list[str]:
    """The addresses a tenant's database user may connect from: its replicas' own."""
    return sorted(set(addresses))


def databases_spec(inv: Inventory, placement: Mapping[str, tuple[str, ...]],
                   node: str) -> bytes | None:
    """databases.json for the db node: every tenant database and the nodes that may connect
    (its replicas). Shipped with mode 0600; None on other nodes."""
    db = db_node(inv)
    if db is None or db.name != node:
        return None
    addresses = {n.name: n.address for n in inv.hosts.nodes}
    out = []
    for t in inv.tenants:
        creds = db_credentials(inv, t)
        if creds:
            out.append({"tenant": t.name, "database": creds["database"], "user": creds["user"],
                        "password": creds["password"],
                        "hosts": _client_hosts(addresses[r] for r in placement[t.name])})
    return spec_bytes({"bind": db.address, "databases": out})
