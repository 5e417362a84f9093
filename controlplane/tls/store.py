"""Which stored certificate each unit is served with: what apply ships.

Reads the certificate store (files) and the state store's lineage records, never a CA, so
apply, status and the exporter can ask it at no cost. Issuing and renewing are in
`certificates`, which sits above apply (it ships what it issued with an apply).
"""
from __future__ import annotations

from dataclasses import dataclass

from controlplane.core.certstore import CertStore
from controlplane.core.inventory import Inventory
from controlplane.core.state import State
from controlplane.core.units import preview_zone
from controlplane.core.units import units as site_units
from controlplane.tls import certs as tls_certs
from controlplane.tls import plan as tls_plan


@dataclass(frozen=True)
class Deployed:
    names: tuple[str, ...]
    chain: bytes
    key: bytes
    ocsp: bool
    not_after: float


def facts(store: CertStore, lineage: str) -> tuple[tls_certs.CertInfo, bytes, bytes] | None:
    """What a stored certificate is (names, expiry, issuer), with its key and chain; None
    when the lineage has no bundle or its bundle holds no certificate."""
    pair = store.read(lineage)
    if pair is None:
        return None
    key, chain = pair
    try:
        leaf = tls_certs.split_pem(chain)[0]
    except (tls_certs.CertProblem, IndexError):
        return None
    return tls_certs.info(leaf), key, chain


def current_plan(inv: Inventory, state: State) -> dict[str, tls_plan.Lineage]:
    """The plan, with each unit kept in the lineage the store has it in (a unit with a
    lineage of its own, after its names failed in a shared one, stays there)."""
    recs = state.certificates()
    previous: dict[str, str] = {}
    for lid in sorted(recs, key=lambda lid: lid.startswith("acme-u-")):
        for u in recs[lid]["units"]:
            previous[u] = lid
    below = (preview_zone(inv),) if inv.cluster.console is not None else ()
    return tls_plan.plan(site_units(inv), inv.cluster.tls, inv.cluster.domain, previous,
                         wildcard_below=below)


def deployable(inv: Inventory, store: CertStore, state: State
               ) -> tuple[dict[str, Deployed], dict[str, str]]:
    """The certificates to ship and which one each unit (tenant or `_portal`) is served
    with: its planned lineage's, else any stored certificate covering all its names (so a
    unit moving between lineages keeps HTTPS meanwhile). Units with none stay on HTTP."""
    plan = current_plan(inv, state)
    stored: dict[str, Deployed] = {}
    for lineage in store.lineages():
        got = facts(store, lineage)
        if got is not None:
            info, key, chain = got
            stored[lineage] = Deployed(info.names, chain, key, info.ocsp_url is not None,
                                       info.not_after)
    planned_for = {u: lid for lid, lin in plan.items() for u in lin.units}
    chosen: dict[str, str] = {}
    names = {k: v.names for k, v in stored.items()}
    for u in site_units(inv):
        if u.issuer == "none":
            continue
        cid = tls_plan.certificate_for(u.names, names, planned_for.get(u.key))
        if cid is not None:
            chosen[u.key] = cid
    used = set(chosen.values())
    return {k: v for k, v in stored.items() if k in used}, chosen
