"""Content follows its replicas: which content releases must travel to which node before a
placement may take effect. Pure: it takes what each node holds and returns the moves.

A node that is (or becomes) a replica of a published unit must hold the unit's live release,
intact, before any node sends it traffic for that unit; it also gets the releases kept for
rollback that a peer still has. The source of a move is a node that holds the live release
intact (a current replica first). A unit with no such node is stranded: its content can only
come back from a backup.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Holding:
    """One unit's content on one node, as `govhost-tenants holdings` reports it."""
    current: str | None = None
    releases: tuple[str, ...] = ()
    intact: bool = False
    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Holding":
        return cls(d.get("current"), tuple(d.get("releases") or ()), bool(d.get("intact")),
                   tuple(d.get("missing") or ()), tuple(d.get("changed") or ()),
                   tuple(d.get("added") or ()))


@dataclass(frozen=True)
class Move:
    tenant: str
    source: str
    target: str
    live: str
    releases: tuple[str, ...]          # oldest first; the last is `live`


@dataclass(frozen=True)
class Drift:
    """A replica whose live content is not the unit's live release."""
    tenant: str
    node: str
    want: str
    have: str | None
    why: str                           # missing | older | other | modified


@dataclass
class ContentPlan:
    moves: list[Move] = field(default_factory=list)
    stranded: dict[str, str] = field(default_factory=dict)   # tenant -> its live release


def holdings_of(statuses: Mapping[str, Any]) -> dict[str, dict[str, Holding]]:
    """Per node, what each unit has there, from node statuses asked with content
    (`remote.node_status(..., content=True)`). Nodes that did not answer, or could not say,
    are left out: they are neither judged nor used as a source."""
    return {n: {t: Holding.from_json(h) for t, h in s.content.items()}
            for n, s in statuses.items() if s.reachable and s.content is not None}


def drift(placement: Mapping[str, Sequence[str]], live: Mapping[str, str],
          holdings: Mapping[str, Mapping[str, Holding]]) -> list[Drift]:
    """Every (unit, replica) whose live content differs from the unit's live release. Nodes
    absent from `holdings` (unreachable) are not judged."""
    out = []
    for tenant in sorted(placement):
        want = live.get(tenant)
        if not want:
            continue
        for node in placement[tenant]:
            if node not in holdings:
                continue
            h = holdings[node].get(tenant, Holding())
            if h.current == want and h.intact:
                continue
            if h.current == want:
                why = "modified"
            elif h.current is None:
                why = "missing"
            elif h.current < want:       # release ids start with their UTC time
                why = "older"
            else:
                why = "other"
            out.append(Drift(tenant, node, want, h.current, why))
    return out


def plan_moves(placement: Mapping[str, Sequence[str]], previous: Mapping[str, Sequence[str]],
               live: Mapping[str, str], holdings: Mapping[str, Mapping[str, Holding]],
               keep: int) -> ContentPlan:
    """The copies that make every reachable replica hold its unit's live release (and up to
    `keep` releases in all, for rollback) before the placement takes effect."""
    out = ContentPlan()
    for d in drift(placement, live, holdings):
        sources = [n for n in (*previous.get(d.tenant, ()), *sorted(holdings))
                   if n != d.node and n in holdings
                   and holdings[n].get(d.tenant, Holding()).current == d.want
                   and holdings[n].get(d.tenant, Holding()).intact]
        if not sources:
            out.stranded[d.tenant] = d.want
            continue
        src = sources[0]
        have = set(holdings[d.node].get(d.tenant, Holding()).releases)
        older = [r for r in holdings[src][d.tenant].releases if r < d.want and r not in have]
        older = older[-max(0, keep - 1):] if keep > 1 else []
        out.moves.append(Move(d.tenant, src, d.node, d.want, (*older, d.want)))
    return out
