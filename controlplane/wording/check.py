"""The wording check of releases: at publish, and over the live county when the lists change.

A release's readable files (HTML, text, PDF, Word) are read from the replica that holds it,
streamed through the control machine and never stored there. What each file holds is
checked once per version of the lists: findings are kept by file digest, so a publish reads
only the files it changed, and the live county is read again only after the lists change.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from controlplane.core import pagetext, wordlists
from controlplane.core.county import County
from controlplane.core.inventory import Inventory
from controlplane.core.state import State
from controlplane.sites.content_sync import Link, SyncError
from controlplane.wording.match import Matcher, findings

Say = Callable[[str], None]
_MATCHERS: dict[str, Matcher] = {}


@dataclass(frozen=True)
class Lists:
    digest: str
    matcher: Matcher
    words: int


def lists(inv: Inventory) -> Lists | None:
    """The county's lists compiled (once per content), or None when it keeps none."""
    if not inv.wording:
        return None
    # The lists and how pages are read: a new reader reads every file again.
    d = hashlib.sha256(f"{wordlists.digest(dict(inv.wording))}:{pagetext.READER}".encode()
                       ).hexdigest()
    if d not in _MATCHERS:
        _MATCHERS.clear()
        _MATCHERS[d] = Matcher(inv.wording)
    m = _MATCHERS[d]
    return Lists(d, m, len(m.rules))


def scan(link: Link, node: str, tenant: str, rid: str, files: Mapping[str, str],
         ls: Lists, state: State) -> tuple[list[dict[str, Any]], int]:
    """The findings in release `rid` (whose digest list is `files`), recorded for it, and
    how many files had to be read (the others were read before under the same lists)."""
    readable = {p: d for p, d in files.items() if pagetext.kind_of(p)}
    cached = state.wording_cached(ls.digest, list(readable.values()))
    by_digest: dict[str, str] = {}
    for p, d in readable.items():
        if d not in cached:
            by_digest.setdefault(d, p)
    found: dict[str, list] = {d: [] for d in by_digest}
    for name, data in link.files(node, tenant, rid, sorted(by_digest.values())):
        page = pagetext.extract(name, data)
        if page is not None:
            found[readable[name]] = findings(ls.matcher, page)
    if found:
        state.wording_cache(ls.digest, found)
    every = {**cached, **found}
    out = [{"file": p, **f} for p in sorted(readable) for f in every.get(readable[p], [])]
    state.record_wording(tenant, rid, ls.digest, len(readable), out)
    return out, len(by_digest)


def counts(found: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(1 for f in found if f["severity"] == s) for s in wordlists.SEVERITIES}


def serious(result: Mapping[str, Any]) -> int:
    """Findings a person must act on (`block` and `review`, not `note`) over the live sites of
    a `check_live` result: what `wording check` exits 1 for and apply reports."""
    return sum(1 for u in result["units"].values() for f in u.get("findings", [])
               if f["severity"] in wordlists.SERIOUS)


def describe(f: Mapping[str, Any]) -> str:
    """One finding as a person reads it: where, what, the right form, the context."""
    right = f"; write {f['right']}" if f.get("right") else ""
    note = f" ({f['note']})" if f.get("note") else ""
    place = f" ({f['place']})" if f.get("place", "body") != "body" else ""
    return (f"{f['file']}, {f['where']} {f['line']}{place}: {f['found']!r} is {f['severity']}: "
            f"{f['word']}{right}{note} — …{f['before']}【{f['found']}】{f['after']}…")


def refusal(tenant: str, block: list[dict[str, Any]]) -> str:
    shown = "\n  ".join(describe(f) for f in block[:20])
    more = f"\n  … and {len(block) - 20} more" if len(block) > 20 else ""
    return (f"{tenant}: the release has {len(block)} wording finding(s) that block "
            f"publishing; correct them in the upload area and publish again (the live site is "
            f"unchanged):\n  {shown}{more}")


def recheck_if_changed(county: County, say: Say = lambda _: None) -> dict[str, Any] | None:
    """After an apply: when the lists changed since the live county was last checked against
    them, check it now (None when there was nothing to do)."""
    ls = lists(county.inv)
    if ls is None:
        return None
    mark = county.state_dir / "wording-checked"
    try:
        if mark.read_text().strip() == ls.digest:
            return None
    except OSError:
        pass
    return check_live(county, say)


def check_live(county: County, say: Say = lambda _: None,
               workers: int = 4, only: str | None = None) -> dict[str, Any]:
    """Every unit's live release (`only`: that unit's) checked against the current lists
    (only files not yet checked under them are read). Used after a list change, by the
    compliance check, and for one unit by its launch (which read every unit's digest
    lists, an SSH session a unit: some 107 s at 5,000 units, for each launch)."""
    inv = county.inv
    ls = lists(inv)
    if ls is None:
        return {"lists": None, "units": {}}
    with county.state() as st:
        placed = st.placements()
    nodes = {n.name: n for n in inv.hosts.nodes}
    link = Link(inv.hosts, county.known_hosts, nodes)
    work = [(t.name, placed[t.name][0]) for t in inv.tenants
            if t.site.type != "proxy" and placed.get(t.name) and placed[t.name][0] in nodes
            and only in (None, t.name)]

    def one(item: tuple[str, str]) -> tuple[str, dict[str, Any]]:
        tenant, node = item
        try:
            first, files = link.digests(node, tenant)
        except SyncError as exc:
            return tenant, {"error": str(exc)}
        if first is None:
            return tenant, {"release": None, "findings": []}
        st = county.open_state()
        try:
            found, read = scan(link, node, tenant, first, files, ls, st)
        except SyncError as exc:
            return tenant, {"error": str(exc)}
        finally:
            st.close()
        say(f"{tenant}: {first}: {len(found)} finding(s)")
        return tenant, {"release": first, "node": node, "read": read, "findings": found}

    with ThreadPoolExecutor(max_workers=workers) as pool:
        units = dict(pool.map(one, work))
    if only is None and not any(u.get("error") for u in units.values()):
        mark = county.state_dir / "wording-checked"     # the lists the live county was read under
        tmp = mark.with_suffix(".tmp")
        tmp.write_text(ls.digest + "\n")
        tmp.replace(mark)
    return {"lists": ls.digest, "words": ls.words, "units": units}
