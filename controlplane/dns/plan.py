"""The county DNS plan: which A and AAAA records every site name needs (pure).

Every web node serves every name, so each name gets an A record per web node's IPv4 address
and an AAAA record per web node's IPv6 address (hosts.yaml `address6`). With floating
addresses (hosts.yaml `vrrp:`) the records are the floating addresses only: a node's own
address dies with it, while its floating address moves to a peer in seconds, so no citizen's
resolver ever hands out an address nobody answers on. Probes, SSH, content and the proxying
between nodes keep using the nodes' own addresses. The plan is what the
county's DNS must hold; `govhost dns plan` prints it as zone-file lines, and the compliance
check reads it for the IPv6 indicator's AAAA half.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controlplane.core.inventory import Inventory
from controlplane.core.units import in_zone, units


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str


def records(inv: Inventory) -> list[Record]:
    v4, v6 = published(inv)
    out = []
    for u in units(inv):
        for name in u.names:
            out.extend(Record(name, "A", a) for a in v4)
            out.extend(Record(name, "AAAA", a) for a in v6)
    return out


def published(inv: Inventory) -> tuple[list[str], list[str]]:
    """The addresses every name resolves to: IPv4 and IPv6."""
    web = inv.hosts.web_nodes
    if inv.hosts.vrrp is not None:
        return (sorted({n.floating for n in web if n.floating}),
                sorted({n.floating6 for n in web if n.floating6}))
    return (sorted({n.address for n in web if ipaddress.ip_address(n.address).version == 4}),
            sorted({n.address6 for n in web if n.address6}
                   | {n.address for n in web if ipaddress.ip_address(n.address).version == 6}))


def aaaa_names(plan: list[Record]) -> frozenset[str]:
    """The names the plan gives an IPv6 address: made once for a county's compliance check,
    not once a unit (1.2 s at 4,000 units)."""
    return frozenset(r.name for r in plan if r.type == "AAAA")


def has_aaaa(with_aaaa: frozenset[str], names: tuple[str, ...] | list[str]) -> bool:
    """Whether every name of `names` is among a plan's `aaaa_names`."""
    return bool(names) and all(n in with_aaaa for n in names)


def zone_lines(inv: Inventory, ttl: int = 300) -> str:
    """The plan as zone-file lines relative to the county domain (names outside it are
    listed as comments: their own zone must point them at the nodes)."""
    zone = inv.cluster.domain
    lines = [f"; govhost DNS plan for {zone}: every name on every web node"]
    for r in records(inv):
        if in_zone(r.name, zone):
            rel = "@" if r.name == zone else r.name[: -len(zone) - 1]
            lines.append(f"{rel:<32} {ttl} IN {r.type:<4} {r.value}")
        else:
            lines.append(f"; outside {zone}: {r.name}. {ttl} IN {r.type} {r.value}")
    return "\n".join(lines) + "\n"
