"""Which certificates the county needs and when each is renewed: pure, from the inventory.

A *lineage* is one certificate kept over its renewals: the names it covers, its issuer and
the units it serves. The plan is built so a public CA's limits never stop a county: one
wildcard when DNS-01 is configured, otherwise units packed into SAN certificates of at most
`names_per_certificate` names, each unit always whole in one certificate (one nginx server
block takes one certificate). Units keep the lineage they had, so adding a unit never
reshuffles (and re-orders) everyone else's certificate; a unit whose names fail validation
is moved to a lineage of its own so it cannot hold back the units it shared one with.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from controlplane.core.manifest import AcmeSettings, TlsSettings
from controlplane.core.units import Unit, in_zone


@dataclass(frozen=True)
class Lineage:
    id: str
    issuer: str
    names: tuple[str, ...]
    units: tuple[str, ...]


@dataclass(frozen=True)
class CertFacts:
    """What the plan needs to know about a certificate in the store."""

    names: tuple[str, ...]
    not_before: float
    not_after: float


def covers(cert_names: Iterable[str], name: str) -> bool:
    """Does a certificate for `cert_names` cover `name` (a wildcard covers one label)?"""
    name = name.lower()
    for c in cert_names:
        c = c.lower()
        if c == name:
            return True
        if c.startswith("*.") and "." in name and name.split(".", 1)[1] == c[2:]:
            return True
    return False


def challenge_for(name: str, acme: AcmeSettings) -> str:
    """DNS-01 for names in the county's zone when it is configured (and always for a
    wildcard), HTTP-01 otherwise."""
    if acme.challenge == "dns-01" and acme.dns is not None and in_zone(name.lstrip("*."),
                                                                       acme.dns.zone):
        return "dns-01"
    return "http-01"


def wildcard_names(domain: str, acme: AcmeSettings | None,
                   below: Iterable[str] = ()) -> tuple[str, ...] | None:
    """The county's wildcard certificate's names when DNS-01 is configured: the domain, one
    label below it, and one label below each zone of `below` (the units' preview hosts,
    `<unit>.preview.<domain>`, which `*.<domain>` does not cover)."""
    if acme is None or acme.challenge != "dns-01" or acme.dns is None \
            or not in_zone(domain, acme.dns.zone):
        return None
    return (domain, f"*.{domain}", *(f"*.{z}" for z in below if in_zone(z, acme.dns.zone)))


def plan(all_units: Sequence[Unit], tls: TlsSettings, domain: str,
         previous: Mapping[str, str] | None = None,
         isolate: Iterable[str] = (), wildcard_below: Iterable[str] = ()
         ) -> dict[str, Lineage]:
    """The lineages that cover every unit with an issuer. `previous` maps unit key -> the
    lineage id it had; units in `isolate` (their names failed validation) get their own;
    `wildcard_below`: zones the county's wildcard (with DNS-01) covers one label below too."""
    previous = previous or {}
    isolate = set(isolate)
    out: dict[str, list[Unit]] = {}
    issuer_of: dict[str, str] = {}

    def put(lineage: str, issuer: str, u: Unit) -> None:
        out.setdefault(lineage, []).append(u)
        issuer_of[lineage] = issuer

    acme_units: list[Unit] = []
    wild = wildcard_names(domain, tls.acme, wildcard_below)
    for u in sorted(all_units, key=lambda u: u.key):
        if u.issuer in ("internal", "manual"):
            put(f"{u.issuer}-{u.key}", u.issuer, u)
        elif u.issuer == "acme":
            if wild is not None and all(covers(wild, n) for n in u.names):
                put("acme-wildcard", "acme", u)
            elif u.key in isolate or previous.get(u.key) == f"acme-u-{u.key}":
                put(f"acme-u-{u.key}", "acme", u)
            else:
                acme_units.append(u)
    limit = tls.acme.names_per_certificate if tls.acme is not None else 100
    for lineage, members in _pack(acme_units, previous, limit).items():
        for u in members:
            put(lineage, "acme", u)

    result: dict[str, Lineage] = {}
    for lineage, members in out.items():
        if lineage == "acme-wildcard":
            names = list(wild or ())
        else:
            names = []
            for u in members:
                names.extend(n for n in u.names if n not in names)
        result[lineage] = Lineage(lineage, issuer_of[lineage], tuple(names),
                                  tuple(u.key for u in members))
    return result


def _group_id(n: int) -> str:
    return f"acme-{n:03d}"


def _pack(acme_units: list[Unit], previous: Mapping[str, str], limit: int
          ) -> dict[str, list[Unit]]:
    """SAN groups: a unit stays in its previous group while it fits; the others fill the
    lowest-numbered group with room, then new groups. A unit with more names than the limit
    gets a group to itself (it cannot be split)."""
    groups: dict[str, list[Unit]] = {}
    size: dict[str, int] = {}
    pending: list[Unit] = []
    for u in acme_units:
        g = previous.get(u.key, "")
        fits = size.get(g, 0) == 0 or size[g] + len(u.names) <= limit
        if g.startswith("acme-") and g[5:].isdigit() and fits:
            groups.setdefault(g, []).append(u)
            size[g] = size.get(g, 0) + len(u.names)
        else:
            pending.append(u)
    next_n = max((int(g[5:]) for g in groups), default=0) + 1
    for u in pending:
        room = next((g for g in sorted(groups) if size[g] + len(u.names) <= limit), None)
        if room is None:
            room = _group_id(next_n)
            next_n += 1
            groups[room] = []
            size[room] = 0
        groups[room].append(u)
        size[room] += len(u.names)
    return groups


def certificate_for(unit_names: Sequence[str], certs: Mapping[str, Sequence[str]],
                    preferred: str | None = None) -> str | None:
    """The certificate (id) that covers every name of a server block: its planned lineage
    when that certificate covers it, else any that does (e.g. while names move), the first
    in id order. Asked once a unit: the others are sorted only when the planned one does
    not cover it (a county of 5,000 units each in a lineage of its own sorted 5,000 ids
    5,000 times)."""
    if preferred in certs and all(covers(certs[preferred], n) for n in unit_names):
        return preferred
    for cid in sorted(c for c in certs if c != preferred):
        if all(covers(certs[cid], n) for n in unit_names):
            return cid
    return None


def _fraction(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2 ** 64


def due_at(lineage: str, facts: CertFacts, renew_fraction: float,
           jitter_fraction: float) -> float:
    """When a certificate renews: at `renew_fraction` of its lifetime, brought forward by a
    share of the lifetime that is fixed per lineage, so a county's certificates spread out
    instead of renewing in the same minute (and the time does not move between runs)."""
    life = max(0.0, facts.not_after - facts.not_before)
    return facts.not_before + life * renew_fraction - life * jitter_fraction * _fraction(lineage)


def renewal_reason(lineage: Lineage, facts: CertFacts | None, now: float,
                   renew_fraction: float, jitter_fraction: float,
                   ari_start: float | None = None) -> str | None:
    """Why this lineage needs a new certificate now (None: it does not)."""
    if facts is None:
        return "missing"
    if now >= facts.not_after:
        return "expired"
    if set(facts.names) != set(lineage.names):
        return "names changed"
    if ari_start is not None:
        return "renewal window (ARI)" if now >= ari_start else None
    if now >= due_at(lineage.id, facts, renew_fraction, jitter_fraction):
        return "due"
    return None


def backoff_seconds(failures: int, first: int, maximum: int) -> int:
    """How long after the n-th failure in a row the next attempt may start."""
    if failures <= 0:
        return 0
    return min(maximum, first * 2 ** min(failures - 1, 30))


URGENCY = {"expired": 0, "missing": 1, "names changed": 2, "untrusted chain": 2,
           "renewal window (ARI)": 3, "due": 3}


def within_budget(wanted: Sequence[tuple[str, str]], used_this_week: int, per_week: int
                  ) -> tuple[list[str], list[str]]:
    """Split (lineage, reason) pairs into those issued now and those deferred, most urgent
    first, so a weekly limit of new certificates is never exceeded."""
    left = max(0, per_week - used_this_week)
    ordered = sorted(wanted, key=lambda w: (URGENCY.get(w[1], 9), w[0]))
    return [w[0] for w in ordered[:left]], [w[0] for w in ordered[left:]]
