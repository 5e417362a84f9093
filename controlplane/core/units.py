"""The sites the county serves and the names each answers to: every tenant, the portal and
the unit web console.

Shared by what names those sites (certificates, DNS records, server blocks), so it lives in
the core rather than in any one of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from controlplane.core.inventory import Inventory

PORTAL = "_portal"
CONSOLE = "_console"
# A unit's preview host is a site of its own (key PREVIEW + unit name; no unit name has "_").
PREVIEW = "_preview-"


@dataclass(frozen=True)
class Unit:
    """What gets one server block: a tenant, or the portal."""

    key: str
    issuer: str
    names: tuple[str, ...]


def units(inv: Inventory) -> list[Unit]:
    default = inv.cluster.tls.issuer
    portal = [f"{h}.{inv.cluster.domain}" for h in inv.cluster.portal.hostnames]
    if inv.cluster.portal.serve_apex:
        portal.append(inv.cluster.domain)
    out = [Unit(PORTAL, default, tuple(portal))]
    if inv.cluster.console is not None:
        out.append(Unit(CONSOLE, default, (console_host(inv),)))
        # One preview host per unit, so one unit's preview page shares no origin (cookies,
        # service workers, storage) with another's; the county's issuer, as for the console.
        out.extend(Unit(PREVIEW + t.name, default, (preview_host(inv, t.name),))
                   for t in inv.tenants if t.site.type != "proxy")
    for t in inv.tenants:
        issuer = t.tls.issuer if t.tls is not None else default
        out.append(Unit(t.name, issuer, (inv.site_host(t), *t.aliases)))
    return out


def console_host(inv: Inventory) -> str:
    assert inv.cluster.console is not None
    return f"{inv.cluster.console.hostname}.{inv.cluster.domain}"


def preview_zone(inv: Inventory) -> str:
    """The name under which every unit's preview host lives (`preview.<domain>`)."""
    assert inv.cluster.console is not None
    return f"{inv.cluster.console.preview_hostname}.{inv.cluster.domain}"


def preview_host(inv: Inventory, unit: str) -> str:
    """`<unit>.preview.<domain>`: one origin per unit for its previews."""
    return f"{unit}.{preview_zone(inv)}"


def in_zone(name: str, zone: str) -> bool:
    name, zone = name.lower().rstrip("."), zone.lower().rstrip(".")
    return name == zone or name.endswith("." + zone)
