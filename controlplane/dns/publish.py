"""Keeping the county's DNS server on the plan: `govhost dns push` (RFC 2136, TSIG-signed).

The plan (controlplane.dns.plan) says which A and AAAA records every name needs; with
floating addresses, those addresses only. Here the server's answers are read, compared name
by name, and every name whose records differ is replaced in signed updates: each name's
old A (or AAAA) set deleted and the new one added in the same message, so the server never
answers a name with nothing. Names outside the configured zone are left to their own zone
(listed, not touched). Names govhost no longer serves are not deleted: govhost cannot tell
them from records the county keeps there for itself.

The key should be allowed A and AAAA only (BIND: `update-policy { grant KEY subdomain ZONE.
A AAAA; }`), apart from the ACME key, which needs TXT only.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from controlplane.core.manifest import Rfc2136
from controlplane.core.units import in_zone
from controlplane.dns.plan import Record
from controlplane.dns.update import DnsUpdateError, Updater

Key = tuple[str, str]            # (name, "A" | "AAAA")
NAMES_PER_UPDATE = 100           # keeps each signed message well inside 64 KiB


@dataclass(frozen=True)
class Change:
    name: str
    type: str
    now: tuple[str, ...]
    after: tuple[str, ...]


def wanted(plan: Iterable[Record], zone: str) -> tuple[dict[Key, frozenset[str]], list[str]]:
    """The plan's record sets inside `zone` (A and AAAA of every name the plan has: an
    empty set where the plan has none, so a family the county dropped is taken away), and
    the names outside it (sorted)."""
    sets: dict[Key, set[str]] = {}
    outside: set[str] = set()
    for r in plan:
        if in_zone(r.name, zone):
            for typ in ("A", "AAAA"):
                sets.setdefault((r.name, typ), set())
            sets[(r.name, r.type)].add(r.value)
        else:
            outside.add(r.name)
    return {k: frozenset(v) for k, v in sets.items()}, sorted(outside)


@dataclass(frozen=True)
class Answer:
    values: frozenset[str]
    ttl: int | None = None       # None: no records
    cname: bool = False          # the name is an alias on the server: left alone


def changes(want: Mapping[Key, frozenset[str]], have: Mapping[Key, Answer],
            ttl: int) -> list[Change]:
    """Every record set whose server answer differs from the plan (values, or the TTL of
    records that stay), in name order; names that are CNAMEs on the server are skipped."""
    out = []
    for (name, typ), values in sorted(want.items()):
        got = have.get((name, typ), Answer(frozenset()))
        if got.cname:
            continue
        if got.values != values or (values and got.ttl != ttl):
            out.append(Change(name, typ, tuple(sorted(got.values)), tuple(sorted(values))))
    return out


def current(cfg: Rfc2136, keys: Iterable[Key], workers: int = 16) -> dict[Key, Answer]:
    """What the server answers now for each (name, type), asked of it directly (not through
    a resolver's cache)."""
    def ask(key: Key) -> tuple[Key, Answer]:
        name, typ = key
        q = dns.message.make_query(dns.name.from_text(name), typ)
        try:
            resp, _ = dns.query.udp_with_fallback(q, cfg.server, timeout=5, port=cfg.port)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsUpdateError(f"asking {cfg.server}:{cfg.port} for {name} {typ} failed: "
                                 f"{type(exc).__name__}: {exc}") from None
        if resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsUpdateError(f"{cfg.server} answered {name} {typ} with "
                                 f"{dns.rcode.to_text(resp.rcode())}: is it the primary "
                                 f"server of zone {cfg.zone}?")
        rtype = dns.rdatatype.from_text(typ)
        mine = [rrset for rrset in resp.answer if rrset.name == q.question[0].name]
        if any(rrset.rdtype == dns.rdatatype.CNAME for rrset in mine):
            return key, Answer(frozenset(), cname=True)
        sets = [rrset for rrset in mine if rrset.rdtype == rtype]
        return key, Answer(frozenset(rd.to_text() for rrset in sets for rd in rrset),
                           sets[0].ttl if sets else None)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(ask, list(keys)))


def push(cfg: Rfc2136, todo: list[Change], ttl: int) -> int:
    """Replace each changed record set; returns the number of signed updates sent."""
    updater = Updater(cfg)
    sent = 0
    for i in range(0, len(todo), NAMES_PER_UPDATE):
        updater.replace({(c.name, c.type): list(c.after)
                         for c in todo[i:i + NAMES_PER_UPDATE]}, ttl)
        sent += 1
    return sent
