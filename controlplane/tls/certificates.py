"""Certificates of the county: the store on the control machine, issuance, renewal, import.

Certificates and keys live in the state directory (`tls/certs/<lineage>.pem`, key and chain
in one file written atomically, mode 0600); the state store keeps each lineage's record
(names, expiry, failures, next attempt) for `cert status` and monitoring. Nodes get them only
through a config release (apply), so a certificate reaches every node that serves its names
the same way as any other config, is checked by `nginx -t` first, and a failed renewal
simply leaves the old one in place.
"""
from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from controlplane.core import inventory as inventory_mod
from controlplane.core import paths, remote
from controlplane.core.certstore import write_private
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.state import State
from controlplane.core.units import units as site_units
from controlplane.tls import certs as tls_certs
from controlplane.tls import plan as tls_plan
from controlplane.tls import store

Say = Callable[[str], None]
# Ships the store's certificates to the nodes and returns the run's result (`.result`,
# `.nodes`): `sites.apply.apply`, handed in by the command. Issuing sits below apply (apply
# reads the store), so it is given the way up rather than importing it.
Deploy = Callable[[County], Any]
WEEK = 7 * 86400


class CertError(GovhostError):
    """A certificate could not be issued, imported or found."""


def _untrusted(inv: inventory_mod.Inventory, lin: tls_plan.Lineage, chain: bytes,
               now: float) -> bool:
    """An ACME certificate whose chain no longer verifies to the CA's root (`acme.issued_root`,
    where one is configured): e.g. a test CA that made a new root. It is issued again."""
    acme = inv.cluster.tls.acme
    if lin.issuer != "acme" or acme is None or acme.issued_root is None:
        return False
    roots = tls_certs.load_roots([acme.issued_root])
    if not roots:
        return False          # the root file is missing: nothing to judge against
    name = next((n for n in lin.names if not n.startswith("*.")), None)
    if name is None:
        return False
    leaf, *rest = tls_certs.split_pem(chain)
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
    try:
        PolicyBuilder().store(Store(roots)).time(
            dt.datetime.fromtimestamp(min(now, leaf.not_valid_after_utc.timestamp() - 1),
                                      dt.timezone.utc)
        ).build_server_verifier(x509.DNSName(name)).verify(leaf, rest)
    except VerificationError:
        return True
    return False


def _lock(county: County):
    return county.exclusive("cert", lambda _: CertError(
        "another certificate run is going on from this machine; try again when it has "
        "finished"), mode=0o600)


# -- status -----------------------------------------------------------------------------

def status(county: County, now: float | None = None) -> list[dict[str, Any]]:
    """One row per lineage: names, issuer, expiry, days left, state, last error."""
    now = time.time() if now is None else now
    inv = county.inv
    state = county.open_state()
    try:
        plan = store.current_plan(inv, state)
        recs = state.certificates()
        _, chosen = store.deployable(inv, county.certs, state)
    finally:
        state.close()
    tls = inv.cluster.tls
    rows = []
    for lid in sorted(set(plan) | set(recs)):
        lin = plan.get(lid)
        rec = recs.get(lid, {})
        got = store.facts(county.certs, lid)
        facts = got[0] if got else None
        cf = tls_plan.CertFacts(facts.names, facts.not_before, facts.not_after) if facts else None
        reason = tls_plan.renewal_reason(lin, cf, now, tls.renew_fraction,
                                         tls.renew_jitter_fraction) if lin else None
        if lin is not None and reason is None and got and _untrusted(inv, lin, got[2], now):
            reason = "untrusted chain"
        if lin is None:
            st = "obsolete"
        elif facts is None:
            st = "import needed" if lin.issuer == "manual" else (
                "failing" if rec.get("failures") else "missing")
        elif now >= facts.not_after:
            st = "expired"
        elif rec.get("failures"):
            st = "failing"
        elif reason:
            st = "due" if reason in ("due", "renewal window (ARI)") else reason
        else:
            st = "ok"
        rows.append({
            "lineage": lid,
            "issuer": (lin.issuer if lin else rec.get("issuer", "")),
            "names": list(lin.names if lin else rec.get("names", [])),
            "units": list(lin.units if lin else rec.get("units", [])),
            "serving": sorted(u for u, c in chosen.items() if c == lid),
            "not_after": facts.not_after if facts else None,
            "days_left": round((facts.not_after - now) / 86400, 1) if facts else None,
            "renew_at": (tls_plan.due_at(lid, cf, tls.renew_fraction, tls.renew_jitter_fraction)
                         if cf else None),
            "state": st,
            "failures": rec.get("failures", 0),
            "last_error": rec.get("last_error") or "",
            "next_attempt": rec.get("next_attempt") or None,
            "serial": facts.serial if facts else None,
            "issued_by": facts.issuer if facts else None,
        })
    return rows


# -- issuing ----------------------------------------------------------------------------

_CA_LOCK = threading.Lock()


def _internal_ca(county: County, name: str, now: float) -> tuple[bytes, bytes]:
    """The county CA, made on first use. Renewal signs several lineages at once; without the
    lock two threads could each make a root, and leaves signed by the one overwritten would
    verify to nothing. (Processes are kept apart by the certificate lock.)"""
    d = county.certs.ca_dir
    cert, key = d / "root.pem", d / "root.key"
    with _CA_LOCK:
        if not cert.exists():
            root_pem, key_pem = tls_certs.make_root(name, now)
            write_private(key, key_pem)
            write_private(cert, root_pem)
            cert.chmod(0o644)
        return cert.read_bytes(), key.read_bytes()


def ca_export(county: County) -> bytes:
    """The county CA's root certificate, for installing on the units' computers."""
    inv = county.inv
    with _lock(county):
        return _internal_ca(county, inv.cluster.tls.internal.name, time.time())[0]


class _Nodes:
    """HTTP-01 answers on every web node: any node may receive the CA's request."""

    def __init__(self, county: County):
        self.inv = county.inv
        self.known_hosts = county.known_hosts

    def _run(self, action: str, lines: str) -> None:
        nodes = self.inv.hosts.web_nodes

        def one(node) -> str:
            cmd = remote.ssh_argv(self.inv.hosts, node, self.known_hosts,
                                  f"{paths.NODE_TOOL} challenge {action}")
            try:
                r = subprocess.run(cmd, input=lines, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                return f"{node.name}: timed out"
            return "" if r.returncode == 0 else f"{node.name}: {(r.stderr or r.stdout).strip()}"

        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            errors = [e for e in pool.map(one, nodes) if e]
        if action == "put" and len(errors) == len(nodes):
            raise CertError("no node took the HTTP-01 answers: " + "; ".join(errors))

    def put(self, tokens: Mapping[str, str]) -> None:
        self._run("put", "".join(f"{t} {v}\n" for t, v in tokens.items()))

    def remove(self, tokens: Mapping[str, str]) -> None:
        self._run("remove", "".join(f"{t}\n" for t in tokens))


def _acme_issue(county: County, inv: inventory_mod.Inventory, lineage: tls_plan.Lineage,
                key: bytes) -> bytes:
    from controlplane.dns import update as dns_update
    from controlplane.tls import acme as acme_issue
    acme = inv.cluster.tls.acme
    assert acme is not None
    nodes = _Nodes(county)
    answers = acme_issue.Responders(nodes.put, nodes.remove)
    if acme.dns is not None:
        try:
            updater = dns_update.Updater(acme.dns)
        except dns_update.DnsUpdateError as exc:
            raise acme_issue.AcmeFailure(str(exc)) from None
        answers.publish_dns, answers.withdraw_dns = updater.publish, updater.withdraw
        answers.dns_wait = acme.dns.propagation_seconds
    try:
        client = acme_issue.AcmeClient(acme, county.certs.acme_account)
        return client.issue(lineage.names, key, answers)
    except (CertError, dns_update.DnsUpdateError) as exc:
        raise acme_issue.AcmeFailure(str(exc)) from None


def renew(county: County, *, units: Iterable[str] = (), force: bool = False,
          now: float | None = None, deploy: Deploy | None = None, workers: int = 4,
          say: Say = lambda _: None) -> dict[str, Any]:
    """Issue what is missing and renew what is due (all of it with `force`), then ship the
    new certificates with an apply. `units` limits the run to the lineages of those units."""
    from controlplane.tls import acme as acme_issue
    clock = now if now is not None else time.time()
    inv = county.inv
    wanted_units = set(units)
    known = {u.key for u in site_units(inv)}
    unknown = wanted_units - known
    if unknown:
        raise CertError(f"no such unit: {', '.join(sorted(unknown))} (units are named by "
                        "their manifest's `name`; the portal is `_portal`)")
    tls = inv.cluster.tls
    with _lock(county):
        state = county.open_state()
        try:
            plan = store.current_plan(inv, state)
            recs = state.certificates()
            todo: list[tuple[str, str]] = []
            skipped: list[dict[str, Any]] = []
            for lid, lin in sorted(plan.items()):
                if wanted_units and not wanted_units & set(lin.units):
                    continue
                rec = recs.get(lid, {})
                got = store.facts(county.certs, lid)
                cf = tls_plan.CertFacts(got[0].names, got[0].not_before, got[0].not_after) \
                    if got else None
                reason = tls_plan.renewal_reason(lin, cf, clock, tls.renew_fraction,
                                                 tls.renew_jitter_fraction)
                if reason is None and got and _untrusted(inv, lin, got[2], clock):
                    reason = "untrusted chain"
                if force and reason is None:
                    reason = "forced"
                if reason is None:
                    continue
                if lin.issuer == "manual":
                    skipped.append({"lineage": lid, "reason": reason,
                                    "why": "manual: import a certificate with `govhost cert "
                                           "import`"})
                    continue
                # Backoff is about real attempts: wall time, even when --at moves the clock.
                backing_off = (rec.get("next_attempt") or 0) > time.time() and \
                    set(rec.get("attempt_names") or []) == set(lin.names)
                if backing_off and not force:
                    skipped.append({"lineage": lid, "reason": reason,
                                    "why": f"retry after {time.strftime('%Y-%m-%d %H:%M', time.localtime(rec['next_attempt']))}"
                                           f" ({rec.get('failures', 0)} failures)"})
                    continue
                todo.append((lid, reason))
            acme_todo = [w for w in todo if plan[w[0]].issuer == "acme"]
            used = state.orders_since(clock - WEEK)
            assert tls.acme is not None or not acme_todo
            go, deferred = tls_plan.within_budget(
                acme_todo, used, tls.acme.new_certificates_per_week if tls.acme else 0)
            for lid in deferred:
                skipped.append({"lineage": lid, "reason": dict(acme_todo)[lid],
                                "why": f"weekly budget of new certificates used ({used})"})
            run = [w for w in todo if plan[w[0]].issuer == "internal" or w[0] in go]
            results = []

            def one(item: tuple[str, str]) -> dict[str, Any]:
                lid, reason = item
                lin = plan[lid]
                key = tls_certs.new_key()
                started = time.time()
                try:
                    if lin.issuer == "internal":
                        root, root_key = _internal_ca(county, tls.internal.name, time.time())
                        chain = tls_certs.sign_leaf(root, root_key, key, lin.names, time.time(),
                                                    tls.internal.leaf_days) + root
                    else:
                        say(f"{lid}: ordering {len(lin.names)} names ({reason})")
                        chain = _acme_issue(county, inv, lin, key)
                    facts = tls_certs.info(tls_certs.split_pem(chain)[0])
                    missing = [n for n in lin.names if not tls_plan.covers(facts.names, n)]
                    if missing:
                        raise acme_issue.AcmeFailure(f"the certificate lacks {missing}")
                except acme_issue.AcmeFailure as exc:
                    return {"lineage": lid, "issuer": lin.issuer, "reason": reason, "ok": False,
                            "error": str(exc), "failed_names": list(exc.names),
                            "seconds": round(time.time() - started, 2)}
                return {"lineage": lid, "issuer": lin.issuer, "reason": reason, "ok": True,
                        "key": key, "chain": chain, "facts": facts,
                        "seconds": round(time.time() - started, 2)}

            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(run) or 1))) as pool:
                for r in pool.map(one, run):
                    _record(county, state, plan[r["lineage"]], recs.get(r["lineage"], {}), r,
                            tls.retry_first_seconds, tls.retry_max_seconds)
                    say(f"{r['lineage']}: {'issued' if r['ok'] else 'FAILED ' + r['error']}")
                    results.append({k: v for k, v in r.items()
                                    if k not in ("key", "chain", "facts")})
            # Units whose names failed in a shared certificate now get their own lineage:
            # the others in it are ordered again at once rather than at the next backoff.
            shared_failures = [r for r in results if not r["ok"] and r["failed_names"]
                               and len(plan[r["lineage"]].units) > 1]
            for r in shared_failures:
                _isolate(state, inv, plan[r["lineage"]], r, tls.retry_first_seconds,
                         tls.retry_max_seconds)
            if shared_failures:
                replan = store.current_plan(inv, state)
                again = [(lid, "names changed") for lid, lin in replan.items()
                         if lid in plan and set(lin.names) != set(plan[lid].names)
                         and lin.issuer == "acme"]
                if again:
                    plan = replan
                    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(again)))) as pool:
                        for r in pool.map(one, again):
                            _record(county, state, plan[r["lineage"]],
                                    state.certificates().get(r["lineage"], {}), r,
                                    tls.retry_first_seconds, tls.retry_max_seconds)
                            results.append({k: v for k, v in r.items()
                                            if k not in ("key", "chain", "facts")})
        finally:
            state.close()
    issued = [r for r in results if r["ok"]]
    applied = None
    if issued and deploy is not None:
        res = deploy(county)
        applied = {"result": res.result, "nodes": {o.node: o.result for o in res.nodes}}
        if res.result in ("changed", "unchanged"):
            _prune(county)
    return {"results": results, "skipped": skipped, "apply": applied,
            "orders_this_week": _orders_week(county, clock)}


def _orders_week(county: County, now: float) -> int:
    state = county.open_state()
    try:
        return state.orders_since(now - WEEK)
    finally:
        state.close()


def _record(county: County, state: State, lin: tls_plan.Lineage, rec: Mapping[str, Any],
            r: Mapping[str, Any], first: int, maximum: int) -> None:
    now = time.time()
    if r["issuer"] == "acme":
        state.record_order(lin.id, "acme", len(lin.names), r["ok"],
                           r.get("error", "") or r["reason"])
    if r["ok"]:
        _retain_if_narrower(county, lin)
        county.certs.write(lin.id, r["key"], r["chain"])
        f = r["facts"]
        state.save_certificate(lin.id, issuer=lin.issuer, names=lin.names, units=lin.units,
                               not_before=f.not_before, not_after=f.not_after, serial=f.serial,
                               fingerprint=f.fingerprint, ocsp=int(f.ocsp_url is not None),
                               issued_at=now, last_attempt=now, last_error=None, failures=0,
                               next_attempt=0, failed_names=[], attempt_names=lin.names)
        state.audit("cert.issue", lin.id, {"names": len(lin.names), "serial": f.serial,
                                           "reason": r["reason"]})
    else:
        failures = int(rec.get("failures") or 0) + 1
        state.save_certificate(lin.id, issuer=lin.issuer, units=lin.units,
                               last_attempt=now, last_error=r["error"], failures=failures,
                               next_attempt=now + tls_plan.backoff_seconds(failures, first,
                                                                           maximum),
                               failed_names=[n.lower() for n in r["failed_names"]],
                               attempt_names=lin.names)
        state.audit("cert.fail", lin.id, {"error": r["error"][:500], "failures": failures})


def _retain_if_narrower(county: County, lin: tls_plan.Lineage) -> None:
    """A lineage re-issued without some names (a unit moved out of it) keeps its old
    certificate under another name, so the units that moved go on being served with it
    until their own certificate exists; `_prune` drops it once nothing uses it."""
    got = store.facts(county.certs, lin.id)
    if got is None or all(tls_plan.covers(lin.names, n) for n in got[0].names):
        return
    county.certs.bundle_path(lin.id).replace(
        county.certs.bundle_path(f"{lin.id}.was-{got[0].serial[-12:]}"))


def _isolate(state: State, inv: inventory_mod.Inventory, lin: tls_plan.Lineage,
             r: Mapping[str, Any], first: int, maximum: int) -> None:
    """Units whose names failed in a shared certificate get a lineage of their own that
    carries the failure (error, backoff), so it shows in `cert status` and is retried on
    its own schedule while the rest of the shared certificate is issued again."""
    failed = {n.lower().removeprefix("*.") for n in r["failed_names"]}
    for u in site_units(inv):
        if u.key in lin.units and failed & {n.lower() for n in u.names}:
            state.save_certificate(f"acme-u-{u.key}", issuer="acme", units=[u.key],
                                   names=u.names, last_attempt=time.time(),
                                   last_error=r["error"], failures=1,
                                   next_attempt=time.time() + tls_plan.backoff_seconds(
                                       1, first, maximum),
                                   failed_names=sorted(failed & {n.lower() for n in u.names}),
                                   attempt_names=u.names)


def _prune(county: County) -> None:
    """Drop lineages no unit is planned for or served with (after an apply shipped the
    config that no longer uses them)."""
    inv = county.inv
    with _lock(county):
        state = county.open_state()
        try:
            plan = store.current_plan(inv, state)
            _, chosen = store.deployable(inv, county.certs, state)
            keep = set(plan) | set(chosen.values())
            for lid in set(state.certificates()) - keep:
                state.forget_certificate(lid)
            d = county.certs.certs_dir
            for path in d.glob("*.pem") if d.is_dir() else []:
                if path.stem not in keep:
                    path.unlink()
        finally:
            state.close()


# -- import -----------------------------------------------------------------------------

def import_cert(county: County, unit: str, cert_file: Path, key_file: Path,
                roots: Iterable[Path] = (), deploy: Deploy | None = None) -> dict[str, Any]:
    """A bought certificate for a unit whose issuer is `manual`: refused unless the key is
    its key, the chain verifies to a trusted root and it covers every name of the unit."""
    inv = county.inv
    by_key = {u.key: u for u in site_units(inv)}
    if unit not in by_key:
        raise CertError(f"no such unit {unit!r}")
    u = by_key[unit]
    if u.issuer != "manual":
        raise CertError(f"{unit} gets its certificates from issuer {u.issuer!r}; set "
                        "`tls: {issuer: manual}` in its manifest to import one")
    try:
        chain, key = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {exc.filename}: {exc.strerror}") from None
    trust = tls_certs.load_roots([tls_certs.SYSTEM_ROOTS, *map(str, roots)])
    try:
        facts = tls_certs.check(chain, key, u.names, trust)
    except tls_certs.CertProblem as exc:
        raise CertError(f"refused {cert_file}: {exc}") from None
    if facts.not_after <= time.time():
        raise CertError(f"refused {cert_file}: it expired on "
                        f"{time.strftime('%Y-%m-%d', time.gmtime(facts.not_after))}")
    lid = f"manual-{unit}"
    with _lock(county):
        state = county.open_state()
        try:
            _record(county, state, tls_plan.Lineage(lid, "manual", u.names, (unit,)), {},
                    {"ok": True, "issuer": "manual", "reason": "import", "key": key,
                     "chain": chain, "facts": facts}, 1, 1)
        finally:
            state.close()
    applied = None
    if deploy is not None:
        res = deploy(county)
        applied = {"result": res.result, "nodes": {o.node: o.result for o in res.nodes}}
    return {"lineage": lid, "names": list(facts.names), "not_after": facts.not_after,
            "issuer": facts.issuer, "apply": applied}
