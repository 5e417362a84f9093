"""The county search index: brought up to date from the live releases, sent to every node.

The control machine keeps the master index (state directory, `search/index.db`). A sync reads
each unit's live digest list from its first replica, reads only the pages whose digest the
index does not hold (streamed, never stored), segments them and records the change; then every
web node gets the changes of this sync in one stream. A node applies a change only on top of
the release it was computed from, and answers with what it holds; a unit it holds at another
release (it was down, or it is new) is sent whole. So a page rolled back or removed is gone
from every node's results when the sync that follows the rollback or removal returns.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from controlplane.core import pagetext, paths
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.manifest import Node
from controlplane.search import dictionary, pages
from controlplane.sites.content_sync import Link, SyncError
from govhost_node import search as node_search
from govhost_node.files import sweep

Say = Callable[[str], None]


SHIP_WAIT = 120      # seconds a sync waits for another one's shipping


class SearchError(GovhostError):
    """The search index could not be brought up to date; results may be stale until the next
    `govhost search sync`."""


def prepare() -> None:
    """Start loading the segmenter's dictionary in a thread of its own, for a command that
    syncs the search after work that waits on its nodes (a publish, a rollback, an approval):
    the load (1-1.5 s of CPU) may then overlap the wait instead of following it. What it
    saves depends on the CPU the nodes' work leaves free (on the lab, where the nodes share
    the control machine's two cores: from nothing to 0.7 s a publish, bench/publish_scale.py).
    A sync that starts before the load ends waits for it. A load that fails says nothing
    here: the sync meets the same failure and reports it."""
    def load() -> None:
        with contextlib.suppress(Exception):
            node_search.initialize()
    threading.Thread(target=load, name="govhost-segmenter", daemon=True).start()


def master(county: County) -> node_search.Index:
    return node_search.Index(str(county.state_dir / "search" / "index.db"))


def sync(county: County, tenants: list[str] | None = None,
         say: Say = lambda _: None) -> dict[str, Any]:
    """Bring the master index and every web node's up to date with the live releases of
    `tenants` (all when None; then units no longer in the inventory are dropped too)."""
    inv = county.inv
    with county.state() as st:
        placed = st.placements()
    nodes = {n.name: n for n in inv.hosts.nodes}
    link = Link(inv.hosts, county.known_hosts, nodes)
    words = dictionary.words(inv)
    node_search.load_words(words)
    idx = master(county)
    try:
        held = idx.releases()
        titles = dict(idx.db.execute("SELECT tenant, title FROM units"))
        changes: list[dict[str, Any]] = [{"words": words}]
        idx.apply(changes[0])
        indexed = pages_read = 0
        wanted = [t for t in inv.tenants if (tenants is None or t.name in tenants)
                  and t.site.type != "proxy" and placed.get(t.name)
                  and placed[t.name][0] in nodes]
        live_now = _live_releases(link, {placed[t.name][0] for t in wanted})
        for t in wanted:
            node = placed[t.name][0]
            if t.name in held and live_now[node] is not None \
                    and live_now[node].get(t.name) == held[t.name] \
                    and titles.get(t.name) == t.title:
                continue
            try:
                rid, files = link.digests(node, t.name)
            except SyncError as exc:
                raise SearchError(f"reading the live release of {t.name}: {exc}") from None
            known = idx.digests(t.name)
            live = {p: d for p, d in files.items() if pagetext.kind_of(p) == "html"}
            drop = sorted(p for p in known if live.get(p) != known[p])
            fetch = sorted(p for p in live if known.get(p) != live[p])
            put = []
            host = inv.site_host(t)
            for name, data in link.files(node, t.name, rid, fetch) if rid else ():
                rec = pages.record(host, name, live[name], data, node_search.segment)
                if rec is not None:
                    put.append(rec)
            pages_read += len(fetch)
            change = {"tenant": t.name, "title": t.title, "release": rid,
                      "base": held.get(t.name), "drop": drop, "put": put}
            idx.apply(change)
            changes.append(change)
            indexed += len(put)
            say(f"{t.name}: {rid or 'nothing published'} ({len(put)} pages indexed, "
                f"{len(drop)} dropped)")
        if tenants is None:
            changes += _remove(idx, sorted(set(held) - {t.name for t in wanted}),
                               "no longer published", say)
        return {"units": len(changes) - 1, "pages_read": pages_read, "indexed": indexed,
                "nodes": _ship(county, idx, changes, say)}
    finally:
        idx.close()


def _live_releases(link: Link, nodes: set[str]) -> dict[str, dict[str, str | None] | None]:
    """Each node's live release of every unit it holds, one call a node: a unit whose live
    release is the one indexed costs nothing more (it cost an SSH session and its digest
    list each: a replaced node's search step took 32.5 s for 300 units, 10 s since). None
    for a node that cannot say (a govhost before `live`, until its next apply): its units
    are asked one by one, as before."""
    out: dict[str, dict[str, str | None] | None] = {}
    for node in sorted(nodes):
        try:
            got = json.loads(link.run(node, "live"))
            out[node] = got if isinstance(got, dict) else None
        except (SyncError, ValueError):
            out[node] = None
    return out


def _remove(idx: node_search.Index, gone: list[str], why: str,
            say: Say) -> list[dict[str, Any]]:
    """Take units out of the master index; the changes that take them out of the nodes'."""
    changes = []
    for t in gone:
        change = {"tenant": t, "remove": True}
        idx.apply(change)
        changes.append(change)
        say(f"{t}: {why}; removed from the county search")
    return changes


@contextlib.contextmanager
def _one_ship_at_a_time(county: County) -> Iterator[None]:
    """Syncs from this control machine ship one after another (a publish's waits for a node
    replacement's): a node sent the master whole must not have a change another sync sent
    it meanwhile undone by a copy made before that change. A sync waits SHIP_WAIT seconds
    at most (a publish is not held up for a replacement's whole search step) and then says
    to sync later; the kernel drops the lock of a process that dies."""
    folder = county.state_dir / "search"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "ship.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + SHIP_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SearchError(
                        f"another search sync has been sending to the nodes for over "
                        f"{SHIP_WAIT} s (a node replaced or added?); the master index has "
                        "this change: run `govhost search sync` when it is done") from None
                time.sleep(0.2)
        # a copy left by a sync that was killed while it shipped
        sweep(folder, 3600, ".whole-")
        yield
    finally:
        os.close(fd)


def _copy(idx: node_search.Index, folder: Path) -> Path:
    """A consistent copy of the master index beside it (SQLite's backup), sent as it is:
    gzip at its fastest level took a lab run's whole-index step from 4.7 s to 10-11 s (60
    units of Chinese pages, 177 MB packed to 96 MB: the packing costs more than the bytes
    on a data center's network). Nothing is left behind when it fails (a full disk)."""
    fd, raw = tempfile.mkstemp(prefix=".whole-", suffix=".db", dir=folder)
    os.close(fd)
    try:
        dst = sqlite3.connect(raw)
        try:
            idx.db.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")     # one file, no -wal beside it
        finally:
            dst.close()
        return Path(raw)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(raw)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{raw}-journal")


def drop_removed(county: County, say: Say = lambda _: None) -> list[str]:
    """Units that are no longer served (gone from the inventory, or now a proxy site) leave
    the county search at once, on every node; after an apply. Returns them."""
    inv = county.inv
    keep = {t.name for t in inv.tenants if t.site.type != "proxy"}
    idx = master(county)
    try:
        gone = sorted(set(idx.releases()) - keep)
        if gone:
            _ship(county, idx, _remove(idx, gone, "no longer served", say), say)
        return gone
    finally:
        idx.close()


def _ship(county: County, idx: node_search.Index, changes: list[dict[str, Any]],
          say: Say) -> dict[str, dict[str, Any]]:
    """Every web node sent `changes` (and whole units where it is behind), side by side;
    per node what it holds. Raises SearchError naming the nodes it could not reach."""
    web = list(county.inv.hosts.web_nodes)
    link = Link(county.inv.hosts, county.known_hosts, {n.name: n for n in web})

    def send(node: Node, lines: list[str]) -> dict[str, Any]:
        return json.loads(link.run(node.name, "apply", data="".join(lines).encode(),
                                   tool=paths.NODE_SEARCH_TOOL))["held"]

    want = idx.releases()
    exports: dict[str, dict[str, Any] | None] = {}
    lock = threading.Lock()     # one connection to the master index, shared by the threads
    whole: list[Path | None] = []    # the master copied once (None: it could not be)

    def one(node: Node) -> tuple[str, dict[str, Any]]:
        try:
            held = send(node, [json.dumps(c, ensure_ascii=False) + "\n" for c in changes])
            behind = sorted(t for t in want if held.get(t, "-") != want[t])
            stale = sorted(set(held) - set(want))
            if len(behind) * 2 > len(want):
                # most units missing (a new or replaced node): the master's file itself
                with lock:
                    if not whole:
                        try:
                            whole.append(_copy(idx, county.state_dir / "search"))
                        except (OSError, sqlite3.Error) as exc:      # a full disk here
                            whole.append(None)
                            say(f"the whole index could not be copied ({exc}); unit by unit")
                try:
                    if whole[0] is not None:
                        with whole[0].open("rb") as f:
                            held = json.loads(link.run(
                                node.name, "load", data=f, timeout=1800,
                                tool=paths.NODE_SEARCH_TOOL))["held"]
                        say(f"{node.name}: the whole index sent ({len(behind)} unit(s) "
                            "behind)")
                        return node.name, {"units": len(held), "sent_whole": behind,
                                           "removed": stale, "index_file": True}
                except SyncError as exc:     # a node whose govhost predates `load`, its disk
                    say(f"{node.name}: the whole index not taken ({exc}); unit by unit")
            if behind or stale:
                lines = [json.dumps({"tenant": t, "remove": True}) + "\n" for t in stale]
                for t in behind:
                    with lock:
                        if t not in exports:
                            exports[t] = idx.export(t)
                    if exports[t] is not None:
                        lines.append(json.dumps(exports[t], ensure_ascii=False) + "\n")
                held = send(node, lines)
                say(f"{node.name}: {len(behind)} unit(s) sent whole, {len(stale)} removed")
            return node.name, {"units": len(held), "sent_whole": behind, "removed": stale}
        except (SyncError, OSError, subprocess.TimeoutExpired, ValueError,
                sqlite3.Error) as exc:
            return node.name, {"error": str(exc)}

    try:
        with _one_ship_at_a_time(county), ThreadPoolExecutor(max_workers=max(1, len(web))) \
                as pool:
            result = dict(pool.map(one, web))
    finally:
        for f in whole:
            if f is not None:
                f.unlink(missing_ok=True)
    failed = {n: r["error"] for n, r in result.items() if "error" in r}
    if failed:
        raise SearchError("the search index could not be sent to " + "; ".join(
            f"{n}: {e}" for n, e in sorted(failed.items())) + " (the other nodes are up to "
            "date; run `govhost search sync` when the node is back)")
    return result
