"""Tenant content: from the upload area to an immutable release live on every replica.

A publish builds the release on the tenant's first replica (the node its SFTP account
uploads to), from regular files only; unchanged files are hard links to the live release.
The other replicas get only the files they lack, streamed from the first replica through
the control machine, and check every file against the release's digest list. Only when
every replica holds the release does it go live (or, for a tenant under review, wait for
an approval). Rollback and approval are symlink swaps. Every step is in the audit log.
"""
from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from controlplane.core import accounts, paths, remote
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.inventory import Inventory
from controlplane.core.manifest import Node, Tenant
from controlplane.core.state import State, actor
from controlplane.core.units import PREVIEW, preview_host
from controlplane.people import chains, review
from controlplane.search import index as search_index
from controlplane.sites import content_sync, preview
from controlplane.sites.apply import placement
from controlplane.wording import check as wording_check

TOOL = paths.NODE_TENANTS_TOOL
DB_TOOL = paths.NODE_DB_TOOL
ARCHIVE_DIR = "/var/lib/govhost/archive"
_QUOTA = 5

Say = Callable[[str], None]


class ContentError(GovhostError):
    """A publish, rollback or review step could not be done; the live site is unchanged."""


@dataclass
class Target:
    county: County
    tenant: str
    replicas: list[Node]
    hosts: Any
    known_hosts: Path
    quota_bytes: int
    review: list[str]           # the levels a release must pass, in order
    keep: int
    state: State


def _tenant_lock(county: County, tenant: str):
    return county.exclusive(f"content-{tenant}", lambda _: ContentError(
        f"another publish, rollback or review of {tenant} is running; try again when it has "
        "finished"))


def _with_content(inv: Inventory, tenant: str) -> Tenant:
    """The unit, if it is one whose content the platform holds (not a proxy site)."""
    t = inv.tenant(tenant)
    if t is None:
        raise ContentError(f"no unit named {tenant!r}; `govhost unit list` shows them")
    if t.site.type == "proxy":
        raise ContentError(f"{tenant} is a proxy site: its content lives in its own "
                           "application, not on the platform")
    return t


@contextmanager
def target(county: County, tenant: str) -> Iterator[Target]:
    with _tenant_lock(county, tenant):
        state = county.open_state()
        try:
            inv, placed = placement(county, state)
            t = _with_content(inv, tenant)
            applied = placed[tenant]
            saved = state.placements().get(tenant)
            if not saved or tuple(saved) != tuple(applied):
                raise ContentError(f"{tenant}'s replicas are not applied yet; run `govhost "
                                   "apply` first")
            by_name = {n.name: n for n in inv.hosts.nodes}
            yield Target(county, tenant, [by_name[n] for n in applied], inv.hosts,
                         county.known_hosts, inv.quota_bytes(t),
                         t.review.levels, inv.cluster.defaults.keep_content_releases,
                         state)
        finally:
            state.close()


def _ssh(tg: Target, node: Node, *args: str, data: bytes | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = " ".join([TOOL, *(shlex.quote(a) for a in args)])
    return subprocess.run(remote.ssh_argv(tg.hosts, node, tg.known_hosts, cmd),
                          capture_output=True, timeout=timeout, **remote.feed(data))


def _ok(tg: Target, node: Node, *args: str, data: bytes | None = None) -> str:
    r = _ssh(tg, node, *args, data=data)
    if r.returncode != 0:
        raise ContentError(f"{args[0]} on {node.name}: "
                           f"{r.stderr.decode(errors='replace').strip() or r.returncode}")
    return r.stdout.decode()


def _digests(tg: Target, node: Node, rid: str = "current") -> tuple[str | None, dict[str, str]]:
    link = content_sync.Link(tg.hosts, tg.known_hosts, {node.name: node})
    try:
        return link.digests(node.name, tg.tenant, rid)
    except content_sync.SyncError as exc:
        raise ContentError(str(exc)) from None


def _copy(tg: Target, src: Node, dst: Node, rid: str, files: dict[str, str]) -> None:
    """Stream to `dst` the files of release `rid` it lacks, from `src` (delta against the
    release `dst` has live)."""
    base, _ = _digests(tg, dst)
    link = content_sync.Link(tg.hosts, tg.known_hosts, {src.name: src, dst.name: dst})
    try:
        content_sync.transfer(link, tg.tenant, src.name, dst.name, rid, base)
    except content_sync.SyncError as exc:
        raise ContentError(str(exc)) from None


def _go_live(tg: Target, rid: str, say: Say) -> None:
    for node in tg.replicas:
        _ok(tg, node, "switch", tg.tenant, rid)
        say(f"{node.name}: {rid} live")
    for r in tg.state.content_releases(tg.tenant, "live"):
        if r["release_id"] != rid:
            tg.state.set_content_status(tg.tenant, r["release_id"], "superseded", "superseded")
    pending = [r["release_id"] for r in tg.state.content_releases(tg.tenant, "pending")]
    for node in tg.replicas:
        _ok(tg, node, "prune", tg.tenant, str(tg.keep), *pending)


def _wording(tg: Target, first: Node, rid: str, files: dict[str, str], restore: bool,
             say: Say) -> list[dict[str, Any]]:
    """The county's word lists over the files the release changed; a `block` finding
    refuses it (a restore of content that was live before is let through, with the findings
    recorded)."""
    ls = wording_check.lists(tg.county.inv)
    if ls is None:
        return []
    link = content_sync.Link(tg.hosts, tg.known_hosts, {first.name: first})
    try:
        found, _ = wording_check.scan(link, first.name, tg.tenant, rid, files, ls, tg.state)
    except content_sync.SyncError as exc:
        raise ContentError(f"the wording check could not read the release: {exc}") from None
    n = wording_check.counts(found)
    block = [f for f in found if f["severity"] == "block"]
    if block and not restore:
        tg.state.audit("content.refused", f"{tg.tenant}/{rid}",
                       {"reason": "wording", "findings": block[:50]})
        raise ContentError(wording_check.refusal(tg.tenant, block))
    if found:
        say(f"wording: {n['block']} block, {n['review']} for the reviewer, {n['note']} notes "
            f"(`govhost review show {tg.tenant} {rid}`)")
    return found


def _reindex(county: County, tenant: str, say: Say) -> None:
    """The county search follows what is live; a node it cannot reach is caught up by the
    next sync, and the publish itself stands."""
    try:
        res = search_index.sync(county, [tenant])
        say(f"search: {res['indexed']} page(s) indexed on {len(res['nodes'])} node(s)")
    except Exception as exc:  # noqa: BLE001 - the release is live; never report it failed
        say(f"search index not updated ({exc}); run `govhost search sync {tenant}`")


def new_release_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def publish(county: County, tenant: str, say: Say = lambda _: None,
            source: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Turn the upload area into a release on every replica; live now, or pending review.

    With `source` (a tree restored from a backup on the first replica) the release is built
    from it instead and goes live without review: it is content that was live before, and
    the restore itself can be rolled back like any publish."""
    with target(county, tenant) as tg:
        first, others = tg.replicas[0], tg.replicas[1:]
        # a restore goes live without review: it is content that was live before
        waits_review = bool(tg.review) and source is None
        if not waits_review:
            search_index.prepare()          # it goes live: the search follows
        rid = new_release_id()
        r = _ssh(tg, first, "publish", tenant, rid, by or actor(), str(tg.quota_bytes),
                 *([source] if source else []))
        if r.returncode == _QUOTA:
            tg.state.audit("content.refused", f"{tenant}/{rid}", {"reason": "quota"})
            raise ContentError(r.stderr.decode(errors="replace").strip().removeprefix(
                "govhost-tenants: ") + f" (quota {tg.quota_bytes // 2**20} MB; the live site "
                "is unchanged)")
        if r.returncode != 0:
            raise ContentError(f"publish on {first.name}: "
                               f"{r.stderr.decode(errors='replace').strip()}")
        summary = json.loads(r.stdout)
        say(f"{first.name}: built {rid} ({summary['files']} files, {summary['linked']} "
            "unchanged and hard-linked)")
        try:
            _, files = _digests(tg, first, rid)
            found = _wording(tg, first, rid, files, restore=source is not None, say=say)
            for node in others:
                _copy(tg, first, node, rid, files)
                say(f"{node.name}: received {rid}")
        except Exception:
            for node in tg.replicas:      # a release not on every replica goes nowhere
                _ssh(tg, node, "drop", tenant, rid)
            raise
        nodes = [n.name for n in tg.replicas]
        if waits_review:
            tg.state.add_content_release(tenant, rid, "pending", summary, nodes)
            tg.state.add_review_chain(tenant, rid, tg.review, summary.get("published_by")
                                      or by or actor())
            say(f"{rid} waits for review ({len(tg.review)} level(s): "
                f"{', '.join(tg.review)}): `govhost review approve {tenant} {rid}`")
            status = "pending"
        else:
            tg.state.add_content_release(tenant, rid, "live", summary, nodes)
            _go_live(tg, rid, say)
            _reindex(county, tenant, say)
            status = "live"
        return {"tenant": tenant, "release": rid, "status": status, "nodes": nodes,
                "wording": wording_check.counts(found),
                **{k: summary[k] for k in ("files", "bytes", "linked", "added", "changed",
                                           "removed", "skipped")}}


def releases(county: County, tenant: str) -> list[dict[str, Any]]:
    """The releases on the tenant's first replica, with what the state store knows."""
    with target(county, tenant) as tg:
        rows = json.loads(_ok(tg, tg.replicas[0], "releases", tenant))
        known = {r["release_id"]: r for r in tg.state.content_releases(tenant)}
        for row in rows:
            rec = known.get(row["id"], {})
            row["status"] = "live" if row["live"] else rec.get("status", "kept")
        return rows


def rollback(county: County, tenant: str, release: str | None = None,
             say: Say = lambda _: None, by: str | None = None) -> dict[str, Any]:
    """Make an earlier release live again on every replica (default: the one before)."""
    with target(county, tenant) as tg:
        rows = json.loads(_ok(tg, tg.replicas[0], "releases", tenant))
        live = next((r["id"] for r in rows if r["live"]), None)
        pending = {r["release_id"] for r in tg.state.content_releases(tenant, "pending")}
        if release is None:
            older = [r["id"] for r in rows if live and r["id"] < live and r["id"] not in pending]
            if not older:
                raise ContentError(f"{tenant} has no release before {live or 'the live one'} "
                                   "to roll back to")
            release = older[-1]
        if release not in {r["id"] for r in rows}:
            raise ContentError(f"{tenant} has no release {release}; `govhost releases "
                               f"{tenant}` lists them")
        search_index.prepare()      # the checks passed: it goes live, the search follows
        for node in tg.replicas:
            if not _has(tg, node, release):
                raise ContentError(f"release {release} is not on {node.name}; nothing changed")
        for node in tg.replicas:
            _ok(tg, node, "switch", tenant, release)
            say(f"{node.name}: {release} live")
        if live:
            tg.state.set_content_status(tenant, live, "rolled-back", "rollback", by)
        tg.state.set_content_status(tenant, release, "live", "rollback-target", by)
        _reindex(county, tenant, say)
        return {"tenant": tenant, "live": release, "was": live}


def _has(tg: Target, node: Node, rid: str) -> bool:
    return _ssh(tg, node, "digests", tg.tenant, rid).returncode == 0


def pending(county: County) -> list[dict[str, Any]]:
    """Releases waiting for review, each with its chain (`review`: levels, steps, the level
    waiting)."""
    st = county.open_state()
    try:
        rows = st.content_releases(status="pending")
        for r in rows:
            chain = _chain(st, r)
            r["review"] = chain and chains.chain_view(chain)
        return rows
    finally:
        st.close()


def review_show(county: County, tenant: str, release: str) -> dict[str, Any]:
    st = county.open_state()
    try:
        rows = [r for r in st.content_releases(tenant) if r["release_id"] == release]
        checked = st.wording(tenant, release).get((tenant, release))
        chain = _chain(st, rows[0]) if rows else None
    finally:
        st.close()
    if not rows:
        raise ContentError(f"no release {release} of {tenant} in review; `govhost review "
                           "list` shows the pending ones")
    return {**rows[0], "wording": checked["findings"] if checked else [],
            "review": chain and chains.chain_view(chain)}


def preview_link(county: County, tenant: str, release: str, by: str | None = None,
                 now: float | None = None) -> dict[str, Any]:
    """A signed link that shows `release` of `tenant` through any node until it expires,
    as the public would see it once live; issued in `by`'s name (audited)."""
    inv = county.inv
    if inv.cluster.console is None:
        raise ContentError("previews are served with the console: add `console:` to "
                           "cluster.yaml and apply")
    _with_content(inv, tenant)
    with county.state() as st:
        rec = next((r for r in st.content_releases(tenant) if r["release_id"] == release),
                   None)
        if rec is None:
            raise ContentError(f"no release {release} of {tenant}; `govhost review list` "
                               "shows the pending ones")
        if rec["status"] in ("rejected", "dropped"):
            raise ContentError(f"{tenant} {release} was {rec['status']}: it is no longer "
                               "kept on the nodes")
        link = preview.link(preview_host(inv, tenant), PREVIEW + tenant in inv.served_with,
                            preview.key(inv.secret), tenant, release,
                            time.time() if now is None else now,
                            inv.cluster.console.preview_minutes)
        st.audit("content.preview", f"{tenant}/{release}", {"expires": link["expires"]}, by)
    return link


def chain_of(county: County, tenant: str, release: str) -> review.Chain | None:
    """The review chain of one release (None: it went live without review)."""
    st = county.open_state()
    try:
        rec = next((r for r in st.content_releases(tenant) if r["release_id"] == release),
                   None)
        return rec and _chain(st, rec)
    finally:
        st.close()


def _chain(st: State, rec: dict[str, Any]) -> review.Chain | None:
    """The release's review chain; a release left pending by a govhost from before review
    chains had one level of the unit."""
    row = st.review_chain(rec["tenant"], rec["release_id"])
    if row is None:
        return review.Chain(("unit",), rec["actor"], (), rec["published_at"]) \
            if rec["status"] == "pending" else None
    return chains.chain_from(row, rec["published_at"])


def decide(county: County, tenant: str, release: str, approve: bool,
           say: Say = lambda _: None, by: str | None = None,
           kinds: frozenset[str] = frozenset(review.LEVEL_NAMES), comment: str = "",
           four_eyes: bool = False) -> dict[str, Any]:
    """Decide the waiting level of a pending release. The last approval makes it live on
    every replica; a rejection at any level drops it. `by`/`kinds`: who decides and which
    levels they may (the console passes the person and `four_eyes`; the CLI is the county's
    operator at the control machine, for any level)."""
    who = by or actor()
    with target(county, tenant) as tg:
        rec = next((r for r in tg.state.content_releases(tenant, "pending")
                    if r["release_id"] == release), None)
        if rec is None:
            raise ContentError(f"{tenant} has no release {release} waiting for review")
        chain = _chain(tg.state, rec)
        assert chain is not None
        chain, step = record_step(tg.state, tenant, release, chain, who, kinds, approve, comment,
                            four_eyes)
        if chain.approved:
            search_index.prepare()
            tg.state.set_content_status(tenant, release, "live", "approved", who)
            _go_live(tg, release, say)
            _reindex(county, tenant, say)
            status = "live"
        elif chain.rejected:
            for node in tg.replicas:
                _ok(tg, node, "drop", tenant, release)
            tg.state.set_content_status(tenant, release, "rejected", "rejected", who)
            say(f"{release} rejected; the live site is unchanged")
            status = "rejected"
        else:
            status = "pending"
            say(f"{release}: level {step.level + 1} of {len(chain.levels)} approved; waits "
                f"for {chain.levels[chain.next_level or 0]}")
        return {"tenant": tenant, "release": release, "status": status,
                "review": chains.chain_view(chain)}


def refusal(county: County, chain: review.Chain, who: str,
            kinds: frozenset[str]) -> str | None:
    """Why `who` may not decide `chain` now in the console (four eyes), or None."""
    with county.state() as st:
        return chain.refusal(who, kinds, True, chains.ties(st, chain, who))


def record_step(st: State, tenant: str, key: str, chain: review.Chain, who: str,
                kinds: frozenset[str], approve: bool, comment: str, four_eyes: bool
                ) -> tuple[review.Chain, review.Step]:
    """One decision on the waiting level of the chain kept under `key`, recorded."""
    try:
        return chains.record_step(st, tenant, key, chain, who, kinds, approve, comment,
                                  four_eyes)
    except review.ReviewError as exc:
        raise ContentError(f"{tenant} {key}: {exc}") from None


def rollback_levels(county: County, tenant: str) -> tuple[str, ...]:
    """Who confirms a unit's rollback: its review chain, or one of its reviewers where it
    publishes without review (an editor proposes, somebody else confirms)."""
    t = county.inv.tenant(tenant)
    return tuple(t.review.levels) if t and t.review.levels else ("unit",)


def propose_rollback(county: County, tenant: str, release: str, by: str
                     ) -> dict[str, Any]:
    """An editor asks for `release` to be live again; it waits for the rollback's review
    chain. Refused for a release not kept on the unit's first replica, the live one, one
    waiting for review, or while another proposal of the unit is open."""
    kept = {r["id"]: r for r in releases(county, tenant)}
    if release not in kept:
        raise ContentError(f"{tenant} has no release {release} kept on its replicas "
                           "(older ones are pruned); choose one of the release history")
    if kept[release]["live"] or kept[release]["status"] == "pending":
        raise ContentError(f"{release} is {kept[release]['status']}; roll back to an earlier "
                           "release")
    levels = rollback_levels(county, tenant)
    with county.state() as st:
        if st.rollbacks(tenant, "pending"):
            raise ContentError(f"{tenant} has a rollback waiting already; decide it first")
        pid = st.add_rollback(tenant, release, by, levels)
    return {"tenant": tenant, "proposal": pid, "target": release, "levels": list(levels)}


def rollback_proposals(county: County, tenant: str) -> list[dict[str, Any]]:
    """A unit's rollback proposals, newest first, each with its chain."""
    with county.state() as st:
        rows = st.rollbacks(tenant)
        for r in rows:
            r["review"] = chains.chain_view(_rollback_chain(st, tenant, r["id"]))
    return sorted(rows, key=lambda r: -r["id"])


def _rollback_chain(st: State, tenant: str, pid: int) -> review.Chain:
    row = st.review_chain(tenant, f"rollback:{pid}")
    if row is None:
        raise ContentError(f"{tenant} has no rollback proposal {pid}")
    proposed = next((r["at"] for r in st.rollbacks(tenant) if r["id"] == pid), None)
    return chains.chain_from(row, proposed)


def rollback_chain(county: County, tenant: str, pid: int) -> review.Chain:
    with county.state() as st:
        return _rollback_chain(st, tenant, pid)


def decide_rollback(county: County, tenant: str, pid: int, approve: bool, by: str,
                    kinds: frozenset[str], comment: str = "", four_eyes: bool = True,
                    say: Say = lambda _: None) -> dict[str, Any]:
    """Decide the waiting level of a rollback proposal; the last approval rolls back on
    every replica (as `govhost rollback` does), a rejection closes it."""
    with county.state() as st:
        rec = next((r for r in st.rollbacks(tenant, "pending") if r["id"] == pid), None)
        if rec is None:
            raise ContentError(f"{tenant} has no rollback proposal {pid} waiting")
        chain, _ = record_step(st, tenant, f"rollback:{pid}", _rollback_chain(st, tenant, pid),
                         by, kinds, approve, comment, four_eyes)
        if chain.rejected:
            st.set_rollback_status(pid, "rejected")
    status = "rejected" if chain.rejected else "pending"
    if chain.approved:
        try:
            rollback(county, tenant, rec["target"], say, by)
        except GovhostError:
            with county.state() as st:
                st.set_rollback_status(pid, "failed")
            raise
        with county.state() as st:
            st.set_rollback_status(pid, "done")
        status = "done"
    return {"tenant": tenant, "proposal": pid, "target": rec["target"], "status": status,
            "review": chains.chain_view(chain)}


def remove(county: County, tenant: str, say: Say = lambda _: None) -> dict[str, Any]:
    """Archive and delete what is left of a tenant whose manifest is gone and applied."""
    with _tenant_lock(county, tenant):
        state = county.open_state()
        try:
            inv, _ = placement(county, state)
            if inv.tenant(tenant) is not None:
                raise ContentError(
                    f"{tenant} is still in the inventory ({inv.sources[tenant]}): remove that "
                    "file and run `govhost apply` (the site stops being served), then run "
                    "`govhost unit remove` to archive and delete its data")
            if state.placements().get(tenant):
                raise ContentError(f"{tenant} is still placed: run `govhost apply` first")
            kh = county.known_hosts
            done: dict[str, Any] = {}
            for node in inv.hosts.nodes:
                cmd = (f"if [ -d /srv/govhost/sites/{shlex.quote(tenant)} ]; then {TOOL} remove "
                       f"{shlex.quote(tenant)} {ARCHIVE_DIR}; fi")
                r = subprocess.run(remote.ssh_argv(inv.hosts, node, kh, cmd),
                                   capture_output=True, text=True, timeout=600,
                                   stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    raise ContentError(f"removing {tenant} on {node.name}: {r.stderr.strip()}")
                if r.stdout.strip():
                    done[node.name] = json.loads(r.stdout)
                    say(f"{node.name}: archived to {done[node.name]['archive']}")
            db = accounts.db_node(inv)
            if db is not None:              # its database, if it had one: dumped, then dropped
                cmd = (f"if [ -x {DB_TOOL} ]; then {DB_TOOL} remove {shlex.quote(tenant)} "
                       f"{shlex.quote(accounts.db_name(tenant))} {ARCHIVE_DIR}; fi")
                r = subprocess.run(remote.ssh_argv(inv.hosts, db, kh, cmd),
                                   capture_output=True, text=True, timeout=600,
                                   stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    raise ContentError(f"removing the database of {tenant} on {db.name}: "
                                       f"{r.stderr.strip()}")
                out = json.loads(r.stdout) if r.stdout.strip() else {}
                if out.get("removed"):
                    done.setdefault(db.name, {})["database"] = out
                    say(f"{db.name}: database {out['removed']} archived to {out['archive']}")
            # Its releases are archived, not live anywhere: a unit added again under the same
            # name starts without content (and nothing expects the old releases back).
            for r in state.content_releases(tenant):
                if r["status"] in ("live", "pending"):
                    state.set_content_status(tenant, r["release_id"], "archived", "removed")
            state.audit("tenant.removed", tenant, {"nodes": done})
            try:            # its pages leave the county search with it
                search_index.drop_removed(county, say)
            except Exception as exc:  # noqa: BLE001 - the removal is done and audited
                say(f"search index not updated ({exc}); run `govhost search sync`")
            return {"tenant": tenant, "nodes": done, "user": accounts.user_name(tenant)}
        finally:
            state.close()
