"""Which nodes hold each tenant's content: pure and deterministic.

Weighted rendezvous hashing (highest random weight) ranks the nodes for each tenant, so a
tenant's preferred nodes depend only on its name and the node set: adding, removing or
draining a node moves only the tenants that must move. Placements already in force are kept
whenever still allowed, so an apply never reshuffles content that is already in place.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from controlplane.core.errors import PlacementError


@dataclass(frozen=True)
class NodeSlot:
    name: str
    capacity: int


@dataclass(frozen=True)
class Want:
    tenant: str
    replicas: int


def _score(tenant: str, node: NodeSlot) -> float:
    digest = hashlib.sha256(f"{tenant}\x00{node.name}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)  # in (0, 1)
    return node.capacity / -math.log(u)


def ranking(tenant: str, nodes: Sequence[NodeSlot]) -> list[str]:
    """Nodes in the tenant's order of preference (best first)."""
    return [n.name for n in sorted(nodes, key=lambda n: (-_score(tenant, n), n.name))]


def place(
    wants: Sequence[Want],
    nodes: Sequence[NodeSlot],
    drained: frozenset[str] = frozenset(),
    previous: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Assign each tenant ``replicas`` distinct, undrained nodes within capacity.

    Returns tenant -> node names (the tenant's preferred node first). Raises PlacementError
    naming every tenant that cannot be placed, so nothing is half-applied.
    """
    previous = previous or {}
    usable = [n for n in nodes if n.name not in drained]
    by_name = {n.name: n for n in usable}
    load = {n.name: 0 for n in usable}
    result: dict[str, list[str]] = {}
    ordered = sorted(wants, key=lambda w: w.tenant)

    # Pass 1: keep what is already in place, as long as it is still allowed.
    for w in ordered:
        kept: list[str] = []
        for node in previous.get(w.tenant, ()):
            if len(kept) >= w.replicas:
                break
            slot = by_name.get(node)
            if slot is not None and node not in kept and load[node] < slot.capacity:
                kept.append(node)
                load[node] += 1
        result[w.tenant] = kept

    # Pass 2: fill missing replicas from the tenant's rendezvous ranking.
    short: list[str] = []
    for w in ordered:
        kept = result[w.tenant]
        if len(kept) >= w.replicas:
            continue
        for node in ranking(w.tenant, usable):
            if len(kept) >= w.replicas:
                break
            if node not in kept and load[node] < by_name[node].capacity:
                kept.append(node)
                load[node] += 1
        if len(kept) < w.replicas:
            short.append(f"{w.tenant} (needs {w.replicas}, got {len(kept)})")

    if short:
        free = ", ".join(f"{n}: {load[n]}/{by_name[n].capacity}" for n in sorted(load)) or "none"
        raise PlacementError(
            f"cannot place {len(short)} tenant(s) on the undrained nodes: "
            f"{', '.join(short[:20])}{' …' if len(short) > 20 else ''}. "
            f"Node load/capacity: {free}. Add a node, raise capacity, undrain a node "
            "or lower replicas."
        )
    return {t: tuple(ns) for t, ns in result.items()}


def rebalance_onto(
    wants: Sequence[Want],
    nodes: Sequence[NodeSlot],
    previous: Mapping[str, Sequence[str]],
    node: str,
    drained: frozenset[str] = frozenset(),
) -> dict[str, tuple[str, ...]]:
    """`previous` with `node` (a node that just joined) given its share: every tenant whose
    rendezvous ranking puts `node` among its first `replicas` nodes moves its lowest-ranked
    replica there. Rendezvous hashing moves only those tenants (about replicas/N of them),
    and no tenant loses a replica."""
    usable = [n for n in nodes if n.name not in drained]
    out = {t: tuple(ns) for t, ns in previous.items()}
    for w in wants:
        have = list(previous.get(w.tenant, ()))
        if not have or node in have:
            continue
        order = ranking(w.tenant, usable)
        if node not in order[:w.replicas]:
            continue
        worst = max(have, key=lambda n: order.index(n) if n in order else len(order))
        out[w.tenant] = tuple(node if n == worst else n for n in have)
    return out
