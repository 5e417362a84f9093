"""Which stored certificate each unit is served with: what apply ships.

Reads the certificate store (files) and the state store's lineage records, never a CA, so
apply, status and the exporter can ask it at no cost. Issuing and renewing are in
`certificates`, which sits above apply (it ships what it issued with an apply).

What a stored certificate is (its leaf's names, expiry, issuer) is kept by the digest of its
chain's bytes: in this process (the console, the exporter and the prober ask again and
again) and in the county's memo (core/memo.py) for the runs after, so a one-unit action in
a county of 5,000 lineages parses only the certificates written since it last looked, not
all of them. Every bundle is still read each time: the key is what was read, not the file's
dates, so a kept answer is never one about other bytes (a bundle rewritten in the same
second with the same size is new bytes, and a new key).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Iterable

import cryptography

from controlplane.core.certstore import CertStore
from controlplane.core.inventory import Inventory
from controlplane.core.memo import Memo
from controlplane.core.memo import key as memo_key
from controlplane.core.state import State
from controlplane.core.units import Unit, preview_zone
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
    info = _known(chain, None)[1]
    return None if info is None else (info, key, chain)


def parse(chain: bytes) -> tls_certs.CertInfo | None:
    """The facts of a chain's leaf (its first certificate); None when it holds none."""
    try:
        leaf = tls_certs.split_pem(chain)[0]
    except (tls_certs.CertProblem, IndexError):
        return None
    return tls_certs.info(leaf)


# -- facts kept between calls -------------------------------------------------------------

_KIND = "cert-facts"
# The facts are cryptography's reading of the bytes (the issuer's RFC 4514 string, the
# names): another version is another key. Govhost's own code is in every memo key already.
_LIBRARY = f"cryptography={cryptography.__version__}"
_NONE = b"null"


class _Parsed:
    """This process's facts by chain digest, with the memo's form of them. Bounded: once it
    holds more than twice what a whole look at the store used (renewals leave old digests
    behind in a long-lived process), it keeps only those."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.facts: dict[bytes, tuple[tls_certs.CertInfo | None, bytes]] = {}

    def get(self, digest: bytes) -> tuple[tls_certs.CertInfo | None, bytes] | None:
        with self.lock:
            return self.facts.get(digest)

    def put(self, digest: bytes, info: tls_certs.CertInfo | None, packed: bytes) -> None:
        with self.lock:
            self.facts[digest] = (info, packed)

    def keep_only(self, used: Iterable[bytes]) -> None:
        keep = set(used)
        with self.lock:
            if len(self.facts) > 2 * len(keep):
                self.facts = {d: f for d, f in self.facts.items() if d in keep}

    def clear(self) -> None:
        with self.lock:
            self.facts.clear()


_parsed = _Parsed()


def _known(chain: bytes, memo: Memo | None) -> tuple[bytes, tls_certs.CertInfo | None]:
    """(digest of `chain`, `parse(chain)`), parsed only when neither this process nor the
    memo has it. A memo that lacks it, or holds something else under its key (what does
    not read back whole), is given it: it keeps, for the next run, every chain this run
    looked at."""
    k = memo_key(_KIND, _LIBRARY, chain)
    digest = k[1]
    kept = memo.get(k) if memo is not None else None
    here = _parsed.get(digest)
    if here is not None:
        info, packed = here
    else:
        good, info = _unpack(kept) if kept is not None else (False, None)
        if not good:
            info = parse(chain)
        packed = kept if good and kept is not None else _pack(info)
        _parsed.put(digest, info, packed)
    if memo is not None and kept != packed:
        memo.put(k, packed)
    return digest, info


def _pack(info: tls_certs.CertInfo | None) -> bytes:
    if info is None:
        return _NONE
    return json.dumps({"names": list(info.names), "not_before": info.not_before,
                       "not_after": info.not_after, "serial": info.serial,
                       "issuer": info.issuer, "fingerprint": info.fingerprint,
                       "ocsp_url": info.ocsp_url}, sort_keys=True).encode()


def _unpack(data: bytes) -> tuple[bool, tls_certs.CertInfo | None]:
    """(read back whole, the facts): a value of any other shape is not used."""
    if data == _NONE:
        return True, None
    try:
        v: Any = json.loads(data)
    except ValueError:
        return False, None
    if not isinstance(v, dict) or set(v) != {"names", "not_before", "not_after", "serial",
                                              "issuer", "fingerprint", "ocsp_url"}:
        return False, None
    names, texts = v["names"], (v["serial"], v["issuer"], v["fingerprint"])
    times = (v["not_before"], v["not_after"])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
            and all(isinstance(t, str) for t in texts)
            and all(type(t) in (int, float) for t in times)
            and (v["ocsp_url"] is None or isinstance(v["ocsp_url"], str))):
        return False, None
    return True, tls_certs.CertInfo(tuple(names), float(times[0]), float(times[1]), *texts,
                                    ocsp_url=v["ocsp_url"])


def current_plan(inv: Inventory, state: State) -> dict[str, tls_plan.Lineage]:
    """The plan, with each unit kept in the lineage the store has it in (a unit with a
    lineage of its own, after its names failed in a shared one, stays there)."""
    return _plan(inv, state, site_units(inv))


def _plan(inv: Inventory, state: State, units: list[Unit]) -> dict[str, tls_plan.Lineage]:
    recs = state.certificates()
    previous: dict[str, str] = {}
    for lid in sorted(recs, key=lambda lid: lid.startswith("acme-u-")):
        for u in recs[lid]["units"]:
            previous[u] = lid
    below = (preview_zone(inv),) if inv.cluster.console is not None else ()
    return tls_plan.plan(units, inv.cluster.tls, inv.cluster.domain, previous,
                         wildcard_below=below)


def deployable(inv: Inventory, store: CertStore, state: State
               ) -> tuple[dict[str, Deployed], dict[str, str]]:
    """The certificates to ship and which one each unit (tenant or `_portal`) is served
    with: its planned lineage's, else any stored certificate covering all its names (so a
    unit moving between lineages keeps HTTPS meanwhile). Units with none stay on HTTP."""
    units = site_units(inv)
    plan = _plan(inv, state, units)
    stored: dict[str, Deployed] = {}
    used: list[bytes] = []
    for lineage, (key, chain) in store.read_all().items():
        digest, info = _known(chain, inv.memo)
        used.append(digest)
        if info is not None:
            stored[lineage] = Deployed(info.names, chain, key, info.ocsp_url is not None,
                                       info.not_after)
    _parsed.keep_only(used)
    if inv.memo is not None:
        inv.memo.flush()
    planned_for = {u: lid for lid, lin in plan.items() for u in lin.units}
    chosen: dict[str, str] = {}
    names = {k: v.names for k, v in stored.items()}
    for u in units:
        if u.issuer == "none":
            continue
        cid = tls_plan.certificate_for(u.names, names, planned_for.get(u.key))
        if cid is not None:
            chosen[u.key] = cid
    used = set(chosen.values())
    return {k: v for k, v in stored.items() if k in used}, chosen
