"""The plan: a value saying what apply would add, change and remove, per node and per tenant.

Computed from the inventory, the remembered placements and drained nodes, and what the state
store says each node runs. Pure: the same inputs give the same plan, and the plan of the
applied state is empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from controlplane.core import placement as placement_mod
from controlplane.core.inventory import Inventory
from controlplane.core.state import AppliedNode
from controlplane.sites.render import Release, render_cluster, tenant_of


@dataclass(frozen=True)
class NodeChange:
    node: str
    old_release: str | None
    new_release: str
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    drained: bool = False

    @property
    def needed(self) -> bool:
        return self.old_release != self.new_release


@dataclass(frozen=True)
class TenantChange:
    tenant: str
    action: str                     # add | change | remove | move
    nodes: tuple[str, ...]          # nodes whose config for this tenant changes
    replicas_before: tuple[str, ...]
    replicas_after: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    nodes: tuple[NodeChange, ...]
    tenants: tuple[TenantChange, ...]
    placement: Mapping[str, tuple[str, ...]]
    releases: Mapping[str, Release] = field(repr=False)

    @property
    def empty(self) -> bool:
        return not any(n.needed for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": not self.empty,
            "nodes": [{"node": n.node, "old_release": n.old_release,
                       "new_release": n.new_release, "needed": n.needed, "drained": n.drained,
                       "added": list(n.added), "changed": list(n.changed),
                       "removed": list(n.removed)} for n in self.nodes],
            "tenants": [{"tenant": t.tenant, "action": t.action, "nodes": list(t.nodes),
                         "replicas_before": list(t.replicas_before),
                         "replicas_after": list(t.replicas_after)} for t in self.tenants],
            "placement": {t: list(ns) for t, ns in sorted(self.placement.items())},
        }


def compute_placement(inv: Inventory, drained: frozenset[str],
                      previous: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    slots = [placement_mod.NodeSlot(n.name, n.capacity) for n in inv.hosts.web_nodes]
    wants = [placement_mod.Want(t.name, inv.replicas(t)) for t in inv.tenants]
    return placement_mod.place(wants, slots, drained, previous)


def share_for(inv: Inventory, drained: frozenset[str], previous: Mapping[str, tuple[str, ...]],
              node: str) -> dict[str, tuple[str, ...]]:
    """The placement to start from when `node` has just joined: its share of replicas."""
    slots = [placement_mod.NodeSlot(n.name, n.capacity) for n in inv.hosts.web_nodes]
    wants = [placement_mod.Want(t.name, inv.replicas(t)) for t in inv.tenants]
    return placement_mod.rebalance_onto(wants, slots, previous, node, drained)


def make_plan(
    inv: Inventory,
    drained: frozenset[str],
    previous: Mapping[str, tuple[str, ...]],
    applied: Mapping[str, AppliedNode],
    pins: Mapping[str, tuple[str, ...]] | None = None,
    placed: Mapping[str, tuple[str, ...]] | None = None,
) -> Plan:
    """`pins`: units that keep the given replicas whatever placement would say now (their
    content could not reach the new ones). `placed`: compute_placement's answer for these
    inputs, when the caller already has it."""
    placement = dict(placed) if placed is not None else compute_placement(inv, drained, previous)
    for tenant, nodes in (pins or {}).items():
        if tenant in placement:
            placement[tenant] = tuple(nodes)
    releases = render_cluster(inv, placement, drained=drained)
    node_changes = []
    touched: dict[str, set[str]] = {}
    for name in sorted(releases):
        rel = releases[name]
        old = applied.get(name)
        old_digests = old.digests if old else {}
        new_digests = rel.digests
        added = tuple(sorted(set(new_digests) - set(old_digests)))
        removed = tuple(sorted(set(old_digests) - set(new_digests)))
        changed = tuple(sorted(p for p in set(new_digests) & set(old_digests)
                               if new_digests[p] != old_digests[p]))
        for path in added + removed + changed:
            tenant = tenant_of(path)
            if tenant:
                touched.setdefault(tenant, set()).add(name)
        node_changes.append(NodeChange(name, old.release_id if old else None, rel.id,
                                       added, changed, removed, name in drained))

    known_before = set(previous)
    for node in applied.values():
        known_before.update(t for t in (tenant_of(p) for p in node.digests) if t)
    desired = {t.name for t in inv.tenants}
    tenant_changes = []
    for tenant in sorted(touched | {t: set() for t in known_before ^ desired}):
        before = tuple(previous.get(tenant, ()))
        after = tuple(placement.get(tenant, ()))
        if tenant not in desired:
            action = "remove"
        elif tenant not in known_before:
            action = "add"
        elif set(before) != set(after):
            action = "move"
        else:
            action = "change"
        tenant_changes.append(TenantChange(tenant, action, tuple(sorted(touched.get(tenant, ()))),
                                           before, after))
    return Plan(tuple(node_changes), tuple(tenant_changes), placement, releases)
