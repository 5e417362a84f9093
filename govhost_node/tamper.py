"""govhost-tamper: live content and config stay exactly as published (网页防篡改).

Every live release on this node (each unit's `current` content release and the node's
`/etc/govhost/current` config release) has a digest list. The watcher holds every live file
to it:
  - the kernel tells it of every change under a live release (inotify, through watchdog); a
    changed, added or removed file is checked within a fraction of a second and put back;
  - a sweep every few seconds walks the live trees and hashes only files whose lstat moved
    since they last verified, so a change inotify did not report (an event lost under load,
    a watch that missed a directory moved in) is still put back within seconds;
  - a full check of every live file (every file hashed) runs at start (changes made while
    the watcher was down) and every few minutes;
  - a release going live (publish, rollback, apply) is followed by re-reading the `current`
    links each second; a file is only ever judged against the release live at that moment,
    so a publish is never mistaken for tampering.
Files are put back from a pristine copy kept per digest under /var/lib/govhost/pristine
(root only), made when the watcher first sees a release live and verifies each file against
its digest list. The changed bytes are kept as evidence; each incident is a JSON line in
/var/lib/govhost/tamper/incidents.jsonl; counts for the agent's metrics are in state.json.
A file that cannot be put back (no pristine copy, disk full) stays an open incident there, so
an alert fires; it is never silent.

    govhost-tamper watch [--full-every SECONDS] [--sweep-every SECONDS]
    govhost-tamper check          one full check now (prints what it put back)
    govhost-tamper incidents [--since TS]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import queue
import re
import shutil
import sys
import threading
import time
from typing import Any

from govhost_node import digests as digest_list
from govhost_node.layout import NODE

SITES = NODE.sites
CONFIG = NODE.current
CONFIG_RELEASES = NODE.releases
BASE = f"{NODE.state}/tamper"
PRISTINE = f"{NODE.state}/pristine"
INCIDENTS = f"{BASE}/incidents.jsonl"
STATE = f"{BASE}/state.json"
EVIDENCE = f"{BASE}/evidence"
CONFIG_SCOPE = "_config"
# Written by govhost around a release, not part of its digest list.
OWN = {".digests", ".meta.json", ".complete", "release-id.conf"}
EVIDENCE_MAX = 20 << 20
HEARTBEAT = 10.0
SAVE_EVERY = 1.0
PRUNE_GRACE = 3600.0
# What a PHP site's own `files/` area (uploads through the site) must never hold: code. nginx
# never runs it from there; its presence means a web shell was planted, so it is moved out.
SCRIPT = re.compile(r"\.(php\d?|phtml|phar|pht|inc|cgi|pl|py|sh|jsp|aspx?)$|^\.htaccess$",
                    re.IGNORECASE)


def sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        import stat
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_digests(release: str) -> dict[str, str]:
    return {os.path.normpath(p): d for p, d in digest_list.read(release).items()}


def keep_pristine(scope: str, release: str) -> int:
    """Pristine copies of a release's files, made as it goes live (`govhost-tenants switch`),
    so the watcher can put back a file changed even in its first second live. Only digests not
    kept yet are read, each checked against the digest list first; returns how many were
    copied. A file that does not verify is left to the watcher to report."""
    copied = 0
    for rel, digest in read_digests(release).items():
        keep = pristine_path(scope, digest)
        if not os.path.exists(keep) and _copy_if_intact(os.path.join(release, rel), digest, keep):
            copied += 1
    return copied


def pristine_path(scope: str, digest: str) -> str:
    return os.path.join(PRISTINE, scope, digest[:2], digest)


def _copy_if_intact(src: str, digest: str, keep: str) -> bool:
    """Copy `src` to the pristine store as `keep` if it still holds `digest`."""
    if sha256(src) != digest:
        return False
    os.makedirs(os.path.dirname(keep), mode=0o700, exist_ok=True)
    tmp = f"{keep}.tmp.{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o400)
    os.replace(tmp, keep)
    return True


class Live:
    """A release that is live now: where it is and what every file must hold."""

    def __init__(self, scope: str, link: str):
        self.scope = scope
        self.link = link
        # what the link says: a switch changes it, and one readlink a second tells (realpath's
        # lstat of every part of the path cost 89 ms a second at 3,334 units)
        self.target = os.readlink(link)
        self.path = os.path.realpath(os.path.join(os.path.dirname(link), self.target))
        self.release = os.path.basename(self.path)
        self.digests = read_digests(self.path)
        self.modes: dict[str, int] = {}     # as published (a TLS key stays 0600)
        self.dirs = {os.path.dirname(p) for p in self.digests} | {""}
        for p in list(self.dirs):
            while p:
                p = os.path.dirname(p)
                self.dirs.add(p)

    def still_live(self) -> bool:
        try:
            return os.readlink(self.link) == self.target
        except OSError:
            return False


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)


class Guard:
    """Holds live files to their digest lists; shared by the event worker and full checks."""

    def __init__(self, node: str = ""):
        self.node = node or os.uname().nodename
        self.lock = threading.RLock()
        self.live: dict[str, Live] = {}
        # the live releases by their directory, for scope_of: an event's scope is found by its
        # path's parents (a few lookups), not by trying every live release (3,334 of them a
        # node at 5,000 units: 0.38 ms an event, some 17 s of CPU for one config release staged)
        self.by_path: dict[str, Live] = {}
        self.total: dict[str, int] = {}
        self.open: dict[str, dict[str, str]] = {}     # scope -> {file: why not put back}
        # scope -> (its live release, {file: its lstat when last verified}): a sweep hashes
        # only files whose inode, size, mtime or ctime moved since (ctime cannot be set back
        # by a user). Kept by scope so that a release going live drops its own scope's files,
        # not a pass over every file of the node (666,000 at 5,000 units: 0.3 s under the lock)
        self.verified: dict[str, tuple[str, dict[str, tuple[int, ...]]]] = {}
        self.last_full = 0.0
        # state.json is written at most once a SAVE_EVERY while incidents come (a defacement
        # of thousands of files rewrote it, every scope in it, once a file), and by `flush`
        self._dirty = False
        self._saved_at = float("-inf")
        for d in (BASE, EVIDENCE, PRISTINE):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self._load_counts()

    def _load_counts(self) -> None:
        try:
            with open(STATE, encoding="utf-8") as f:
                s = json.load(f)
            self.total = {k: int(v) for k, v in s.get("incidents", {}).items()}
        except (OSError, ValueError):
            self.total = {}

    def save(self) -> None:
        with self.lock:
            _write_json(STATE, {"heartbeat": time.time(), "last_full_check": self.last_full,
                                "incidents": self.total, "unrepaired": self.open,
                                "watching": {s: lv.release for s, lv in self.live.items()}})
            self._dirty = False
            self._saved_at = time.monotonic()

    def flush(self) -> None:
        """Write the counts if an incident changed them since the last write."""
        if self._dirty:
            self.save()

    def _changed(self) -> None:
        """Counts changed: written now if the last write is SAVE_EVERY old, else by `flush`
        (the event worker's batch end, the sweep's, the heartbeat's)."""
        self._dirty = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY:
            self.save()

    # which releases are live
    def links(self) -> dict[str, tuple[str, str]]:
        """scope -> its `current` link and what the link says."""
        out = {}
        try:
            units = sorted(os.listdir(SITES))
        except OSError:
            units = []
        for scope, link in [(t, os.path.join(SITES, t, "current")) for t in units] + \
                [(CONFIG_SCOPE, CONFIG)]:
            try:
                out[scope] = (link, os.readlink(link))
            except OSError:         # not a link (yet): nothing live there
                pass
        return out

    def refresh(self) -> list[Live]:
        """Follow the `current` links; returns the releases that became live (to adopt)."""
        new = []
        with self.lock:
            links = self.links()
            gone = [scope for scope in self.live if scope not in links]
            for scope in gone:
                self._forget(self.live.pop(scope))
            for scope, (link, target) in links.items():
                lv = self.live.get(scope)
                if lv is None or lv.target != target:
                    try:
                        fresh = Live(scope, link)
                    except (OSError, ValueError) as exc:   # no list, or a damaged one:
                        print(f"govhost-tamper: {scope}: {exc}", file=sys.stderr)
                        continue                           # the other scopes go on
                    if lv is not None:
                        self._forget(lv)
                    self.live[scope] = fresh
                    self.by_path[fresh.path] = fresh
                    self.open.pop(scope, None)     # judged again against the new release
                    new.append(fresh)
        return new

    def _forget(self, lv: Live) -> None:
        """A release no longer live: events under it are no longer its scope's, and what a
        sweep may skip of it is gone (only this scope's entries, whatever the node holds)."""
        if self.by_path.get(lv.path) is lv:
            del self.by_path[lv.path]
        self.verified.pop(lv.scope, None)

    # pristine copies
    def adopt(self, lv: Live) -> list[dict[str, Any]]:
        """Keep a pristine copy of every file of a release that verifies; a file that does
        not is put back (from a copy kept for an earlier release, if there is one)."""
        for rel, digest in lv.digests.items():
            keep = pristine_path(lv.scope, digest)
            src = os.path.join(lv.path, rel)
            if os.path.exists(keep):
                if rel not in lv.modes:
                    try:
                        lv.modes[rel] = os.lstat(src).st_mode & 0o777
                    except OSError:
                        pass
            elif _copy_if_intact(src, digest, keep):
                lv.modes[rel] = os.lstat(src).st_mode & 0o777
        return self.check_release(lv)

    def prune(self, now: float | None = None) -> None:
        """Drop pristine copies no live release needs (kept releases are verified again when
        they go live; rollback targets on disk keep theirs until then). Copies younger than
        PRUNE_GRACE stay: `govhost-tenants switch` makes them just before its release goes
        live, which this watcher may not have seen yet; pruning them then would leave a
        file changed in that release's first seconds with nothing to be put back from."""
        now = time.time() if now is None else now
        with self.lock:
            wanted = {(lv.scope, d) for lv in self.live.values() for d in lv.digests.values()}
        for scope in os.listdir(PRISTINE):
            for root, _, files in os.walk(os.path.join(PRISTINE, scope)):
                for f in files:
                    if (scope, f) in wanted or ".tmp" in f:
                        continue
                    path = os.path.join(root, f)
                    try:
                        if now - os.lstat(path).st_mtime >= PRUNE_GRACE:
                            os.unlink(path)
                    except OSError:
                        pass

    # checking and putting back
    def scope_of(self, path: str) -> tuple[Live, str] | None:
        with self.lock:
            at = path
            while True:
                lv = self.by_path.get(at)
                if lv is not None:
                    return lv, os.path.relpath(path, lv.path)
                parent = os.path.dirname(at)
                if parent == at:
                    return None
                at = parent

    def check_path(self, path: str) -> dict[str, Any] | None:
        found = self.scope_of(path)
        if found is None:
            return None
        lv, rel = found
        rel = os.path.normpath(rel)
        if rel == "." or rel in OWN or rel.startswith(".govhost-tamper"):
            return None
        with self.lock:
            if not lv.still_live():            # a release switch under way: not tampering
                return None
            return self._judge(lv, rel)

    @staticmethod
    def _signature(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)

    def _judge(self, lv: Live, rel: str) -> dict[str, Any] | None:
        path = os.path.join(lv.path, rel)
        expected = lv.digests.get(rel)
        exists = os.path.lexists(path)
        if expected is None:
            if not exists or (rel in lv.dirs and os.path.isdir(path)
                              and not os.path.islink(path)):
                return None
            return self._incident(lv, rel, "added", path)
        if not exists:
            return self._incident(lv, rel, "removed", path)
        if sha256(path) != expected:
            return self._incident(lv, rel, "modified", path)
        mode = lv.modes.get(rel)
        if mode is not None and os.lstat(path).st_mode & 0o777 != mode:
            return self._incident(lv, rel, "mode", path)     # e.g. a TLS key made readable
        try:
            self._verified_of(lv)[rel] = self._signature(os.lstat(path))
        except OSError:
            pass
        return None

    def _verified_of(self, lv: Live) -> dict[str, tuple[int, ...]]:
        """The files of `lv` verified so far (a new map once its scope's release changed)."""
        held = self.verified.get(lv.scope)
        if held is None or held[0] != lv.release:
            held = self.verified[lv.scope] = (lv.release, {})
        return held[1]

    def _incident(self, lv: Live, rel: str, change: str, path: str) -> dict[str, Any] | None:
        now = time.time()
        if rel in self.open.get(lv.scope, {}):
            # Known and still open (reported once, alerting): try again, quietly.
            repaired, why = self._put_back(lv, rel, path, change)
            if not repaired:
                self.open[lv.scope][rel] = why
                return None
        try:
            st = os.lstat(path)
            changed_at = st.st_ctime
        except OSError:
            changed_at = None
        evidence = None
        if change not in ("removed", "mode"):
            evidence = self._keep_evidence(lv, rel, path, now)
        repaired, why = self._put_back(lv, rel, path, change)
        rec = {"at": now, "node": self.node, "tenant": lv.scope, "release": lv.release,
               "file": rel, "change": change, "changed_at": changed_at,
               "live_seconds": round(now - changed_at, 3) if changed_at else None,
               "restored": repaired, "why": why, "evidence": evidence}
        self.total[lv.scope] = self.total.get(lv.scope, 0) + 1
        if repaired:
            self.open.get(lv.scope, {}).pop(rel, None)
            if lv.scope in self.open and not self.open[lv.scope]:
                del self.open[lv.scope]
        else:
            self.open.setdefault(lv.scope, {})[rel] = why or "not put back"
        with open(INCIDENTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._changed()
        return rec

    def _keep_evidence(self, lv: Live, rel: str, path: str, now: float) -> str | None:
        dest = os.path.join(EVIDENCE, time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                            + f"-{lv.scope}-{int(now * 1000) % 1000:03d}", rel)
        try:
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            if os.path.islink(path):
                with open(dest + ".symlink", "w") as f:
                    f.write(os.readlink(path))
                return dest + ".symlink"
            if os.path.isdir(path):
                return None
            with open(path, "rb") as src, open(dest, "wb") as dst:
                dst.write(src.read(EVIDENCE_MAX))
            os.chmod(dest, 0o400)
            return dest
        except OSError:
            return None

    def _put_back(self, lv: Live, rel: str, path: str, change: str) -> tuple[bool, str]:
        try:
            if change == "mode":
                os.chmod(path, lv.modes[rel])
                return True, ""
            if change == "added":
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                return True, ""
            keep = pristine_path(lv.scope, lv.digests[rel])
            if not os.path.exists(keep):
                return False, "no pristine copy of this file on the node (publish again)"
            parent = os.path.dirname(path)
            if os.path.lexists(parent) and not os.path.isdir(parent):
                os.unlink(parent)
            os.makedirs(parent, mode=0o755, exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            tmp = os.path.join(parent, f".govhost-tamper-{os.getpid()}-{threading.get_ident()}")
            shutil.copyfile(keep, tmp)
            os.chmod(tmp, lv.modes.get(rel, 0o600 if lv.scope == CONFIG_SCOPE else 0o644))
            os.replace(tmp, path)       # a new inode: older releases' hard links untouched
            if sha256(path) == lv.digests[rel]:
                return True, ""
            return False, "put back but does not verify"
        except OSError as exc:
            return False, f"{exc.strerror or exc} ({exc.filename or path})"

    def check_uploads(self) -> list[dict[str, Any]]:
        """PHP sites' `files/` areas: changing is their purpose, so they are not held to a
        digest list; scripts in them are moved out as evidence."""
        found = []
        try:
            tenants = sorted(os.listdir(SITES))
        except OSError:
            return found
        for t in tenants:
            base = os.path.join(SITES, t, "files")
            if not os.path.isdir(base) or os.path.islink(base):
                continue
            for root, dirs, files in os.walk(base):
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
                for name in files:
                    if SCRIPT.search(name):
                        found.append(self._quarantine(t, base, os.path.join(root, name)))
        return found

    def _quarantine(self, tenant: str, base: str, path: str) -> dict[str, Any]:
        now = time.time()
        rel = os.path.relpath(path, base)
        dest = os.path.join(EVIDENCE, time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                            + f"-{tenant}-files", rel)
        try:
            changed_at = os.lstat(path).st_ctime
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            shutil.move(path, dest)
            os.chmod(dest, 0o400)
            moved, why = True, ""
        except OSError as exc:
            changed_at, moved, why = None, False, f"{exc.strerror or exc}"
        rec = {"at": now, "node": self.node, "tenant": tenant, "release": "files",
               "file": "files/" + rel, "change": "script", "changed_at": changed_at,
               "live_seconds": round(now - changed_at, 3) if changed_at else None,
               "restored": moved, "why": why, "evidence": dest if moved else None}
        with self.lock:             # the event worker writes the same counts
            self.total[tenant] = self.total.get(tenant, 0) + 1
            if not moved:
                self.open.setdefault(tenant, {})["files/" + rel] = why
            with open(INCIDENTS, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._changed()
        return rec

    def sweep(self) -> list[dict[str, Any]]:
        """A quick check of every live release: what inotify did not report (an event lost,
        a watch missed on a directory that moved in) is still found within a sweep."""
        found = []
        for lv in list(self.live.values()):
            found.extend(self.check_release(lv, quick=True))
        return found

    def check_release(self, lv: Live, quick: bool = False) -> list[dict[str, Any]]:
        """Every file of a live release against its digest list; added and removed files
        are always found (the tree is walked). With `quick` a file is hashed only when its
        lstat moved since it last verified."""
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        with self.lock:
            if not lv.still_live():
                return found
            verified = self._verified_of(lv) if quick else {}
            stack = [("", lv.path)]
            while stack:
                prefix, directory = stack.pop()
                try:
                    entries = list(os.scandir(directory))
                except OSError:
                    continue
                for e in entries:
                    rel = prefix + e.name
                    if rel in OWN or rel.startswith(".govhost-tamper"):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        if rel in lv.dirs:
                            stack.append((rel + "/", e.path))
                            continue
                    else:
                        seen.add(rel)
                        sig = verified.get(rel)
                        if sig is not None:
                            try:
                                st = e.stat(follow_symlinks=False)
                            except OSError:
                                st = None
                            if st is not None and sig == self._signature(st):
                                continue
                    r = self._judge(lv, rel)
                    if r:
                        found.append(r)
            for rel in lv.digests:
                if rel not in seen:
                    r = self._judge(lv, rel)
                    if r:
                        found.append(r)
        return found

    def full_check(self) -> list[dict[str, Any]]:
        found = []
        adopted = set()
        for lv in self.refresh():
            found.extend(self.adopt(lv))
            adopted.add(lv.scope)
        for lv in list(self.live.values()):
            if lv.scope not in adopted:
                found.extend(self.check_release(lv))
        found.extend(self.check_uploads())
        self.last_full = time.time()
        self.save()
        return found


def watch(full_every: float, sweep_every: float = 5.0) -> None:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    guard = Guard()
    guard.save()                        # alive from the first second, before the full check
    events: queue.Queue[str] = queue.Queue()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if event.event_type in ("opened", "closed", "closed_no_write"):
                return
            events.put(event.src_path)
            dest = getattr(event, "dest_path", "")
            if dest:
                events.put(dest)

    observer = Observer()
    handler = Handler()
    watches: dict[str, Any] = {}

    def follow() -> None:
        # Two watches, whatever the number of units: watchdog gives every watch its own
        # inotify instance, and a user may hold only 128 (max_user_instances). Events outside
        # a live release (upload areas, kept releases) are dropped by `check_path`.
        for root in (SITES, CONFIG_RELEASES):
            if root not in watches and os.path.isdir(root):
                watches[root] = observer.schedule(handler, root, recursive=True)
        for lv in guard.refresh():
            guard.adopt(lv)

    def worker() -> None:
        while True:
            first = events.get()
            batch = {first}
            time.sleep(0.05)           # let an editor's write-then-rename settle
            while True:
                try:
                    batch.add(events.get_nowait())
                except queue.Empty:
                    break
            for path in sorted(batch):
                try:
                    rec = guard.check_path(path)
                except Exception as exc:  # noqa: BLE001 - never let the watcher die on one file
                    print(f"govhost-tamper: checking {path}: {exc}", file=sys.stderr)
                    continue
                if rec:
                    print(json.dumps(rec, ensure_ascii=False), flush=True)
            try:
                guard.flush()          # the batch's incidents in state.json, once
            except Exception as exc:  # noqa: BLE001 - a full disk must not end the worker
                print(f"govhost-tamper: writing its state: {exc}", file=sys.stderr)

    observer.start()
    follow()
    found = guard.full_check()          # what changed while the watcher was down
    for rec in found:
        print(json.dumps(rec, ensure_ascii=False), flush=True)
    guard.prune()
    threading.Thread(target=worker, daemon=True).start()
    next_full = time.time() + full_every
    next_sweep = time.time() + sweep_every
    next_beat = 0.0
    while True:
        time.sleep(1.0)
        try:
            follow()
            if time.time() >= next_full:
                guard.full_check()
                guard.prune()
                next_full = time.time() + full_every
            elif sweep_every and time.time() >= next_sweep:
                for rec in guard.sweep():
                    print(json.dumps({**rec, "found_by": "sweep"}, ensure_ascii=False),
                          flush=True)
                next_sweep = time.time() + sweep_every
            if time.time() >= next_beat:
                guard.save()
                next_beat = time.time() + HEARTBEAT
            else:
                guard.flush()
        except Exception as exc:  # noqa: BLE001 - keep watching; the heartbeat shows trouble
            print(f"govhost-tamper: {exc}", file=sys.stderr, flush=True)


def incidents(since: float, evidence_of: tuple[str, ...] = (),
              evidence_max: int = 5 << 20) -> None:
    """The incidents since `since`, and the watcher's state, as JSON. With `evidence_of`
    (file name endings, e.g. .html), the kept bytes of such files go along (base64, up to
    `evidence_max` each), so the control machine can say what words a defacer wrote."""
    out = []
    try:
        with open(INCIDENTS, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("at", 0) >= since:
                    if evidence_of and str(rec.get("file", "")).lower().endswith(evidence_of):
                        data = _evidence(rec.get("evidence"), evidence_max)
                        if data is not None:
                            rec["evidence_b64"] = base64.b64encode(data).decode()
                    out.append(rec)
    except OSError:
        pass
    try:
        with open(STATE, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}
    print(json.dumps({"incidents": out, "state": state}, ensure_ascii=False))


def _evidence(path: Any, limit: int) -> bytes | None:
    """The evidence file's bytes (only a regular file kept under EVIDENCE, not a link)."""
    if not isinstance(path, str) or path.endswith(".symlink"):
        return None
    real = os.path.realpath(path)
    if not real.startswith(EVIDENCE + os.sep):
        return None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def main() -> None:
    ap = argparse.ArgumentParser(prog="govhost-tamper")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--full-every", type=float, default=300.0)
    w.add_argument("--sweep-every", type=float, default=5.0,
                   help="seconds between quick checks (lstat, hashing only what moved); 0: off")
    sub.add_parser("check")
    i = sub.add_parser("incidents")
    i.add_argument("--since", type=float, default=0.0)
    i.add_argument("--evidence-of", default="",
                   help="comma-separated file endings whose kept bytes go along (base64)")
    i.add_argument("--evidence-max", type=int, default=5 << 20)
    a = ap.parse_args()
    if a.cmd == "watch":
        watch(a.full_every, a.sweep_every)
    elif a.cmd == "check":
        print(json.dumps(Guard().full_check(), ensure_ascii=False))
    else:
        incidents(a.since, tuple(e for e in a.evidence_of.lower().split(",") if e),
                  a.evidence_max)


if __name__ == "__main__":
    main()
