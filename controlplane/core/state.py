"""The state store: what was applied where, placements, drained nodes, runs and the audit log.

SQLite in WAL mode so a reader (status, exporter) never blocks an apply; every write is a
single transaction, so a control plane killed mid-apply leaves either the old or the new
record, never half of one.
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS placements (
    tenant TEXT NOT NULL, position INTEGER NOT NULL, node TEXT NOT NULL,
    PRIMARY KEY (tenant, position));
CREATE TABLE IF NOT EXISTS drained (
    node TEXT PRIMARY KEY, since REAL NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS node_state (
    node TEXT PRIMARY KEY, release_id TEXT NOT NULL, digests TEXT NOT NULL,
    applied_at REAL NOT NULL, run_id INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, result TEXT NOT NULL, pid INTEGER, actor TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS content_releases (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, status TEXT NOT NULL,
    published_at REAL NOT NULL, actor TEXT NOT NULL, files INTEGER NOT NULL,
    bytes INTEGER NOT NULL, nodes TEXT NOT NULL, changes TEXT NOT NULL, decided_by TEXT,
    decided_at REAL, PRIMARY KEY (tenant, release_id));
CREATE TABLE IF NOT EXISTS review_chains (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, levels TEXT NOT NULL,
    publisher TEXT NOT NULL, PRIMARY KEY (tenant, release_id));
CREATE TABLE IF NOT EXISTS review_steps (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, level INTEGER NOT NULL, kind TEXT NOT NULL,
    decision TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL, comment TEXT NOT NULL,
    PRIMARY KEY (tenant, release_id, level));
CREATE TABLE IF NOT EXISTS page_days (
    tenant TEXT NOT NULL, day TEXT NOT NULL, path TEXT NOT NULL, views INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, path));
CREATE TABLE IF NOT EXISTS site_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, manifest TEXT NOT NULL,
    form TEXT NOT NULL, contact TEXT NOT NULL, source TEXT NOT NULL, token TEXT NOT NULL, created REAL NOT NULL,
    status TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', decided_by TEXT,
    decided_at REAL);
CREATE TABLE IF NOT EXISTS rollbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, target TEXT NOT NULL,
    proposed_by TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wording_files (
    digest TEXT NOT NULL, lists TEXT NOT NULL, findings TEXT NOT NULL,
    PRIMARY KEY (digest, lists));
CREATE TABLE IF NOT EXISTS wording_releases (
    tenant TEXT NOT NULL, release_id TEXT NOT NULL, lists TEXT NOT NULL, checked_at REAL NOT NULL,
    files INTEGER NOT NULL, findings TEXT NOT NULL, PRIMARY KEY (tenant, release_id));
CREATE TABLE IF NOT EXISTS backups (
    run TEXT NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL, node TEXT NOT NULL,
    snapshot TEXT, ok INTEGER NOT NULL, started_at REAL, finished_at REAL NOT NULL,
    seconds REAL, files INTEGER, bytes INTEGER, bytes_added INTEGER, error TEXT,
    PRIMARY KEY (run, tenant, kind));
CREATE INDEX IF NOT EXISTS backups_tenant ON backups (tenant, finished_at);
CREATE TABLE IF NOT EXISTS backup_checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, tenant TEXT, ok INTEGER NOT NULL,
    at REAL NOT NULL, seconds REAL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probe_hours (
    tenant TEXT NOT NULL, hour REAL NOT NULL, probes INTEGER NOT NULL, failures INTEGER NOT NULL,
    PRIMARY KEY (tenant, hour));
CREATE TABLE IF NOT EXISTS probe_failures (
    tenant TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS probe_failures_tenant ON probe_failures (tenant, at);
CREATE TABLE IF NOT EXISTS probe_days (
    tenant TEXT NOT NULL, day TEXT NOT NULL, probes INTEGER NOT NULL, failures INTEGER NOT NULL,
    PRIMARY KEY (tenant, day));
CREATE TABLE IF NOT EXISTS visit_days (
    tenant TEXT NOT NULL, day TEXT NOT NULL, page_views INTEGER NOT NULL,
    visitors INTEGER NOT NULL, collected_at REAL NOT NULL, PRIMARY KEY (tenant, day));
CREATE TABLE IF NOT EXISTS compliance (
    week TEXT NOT NULL, tenant TEXT NOT NULL, checked_at REAL NOT NULL, verdicts TEXT NOT NULL,
    PRIMARY KEY (week, tenant));
CREATE TABLE IF NOT EXISTS certificates (
    lineage TEXT PRIMARY KEY, issuer TEXT NOT NULL, names TEXT NOT NULL, units TEXT NOT NULL,
    not_before REAL, not_after REAL, serial TEXT, fingerprint TEXT, ocsp INTEGER,
    issued_at REAL, last_attempt REAL, last_error TEXT, failures INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0, failed_names TEXT NOT NULL DEFAULT '[]',
    attempt_names TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS cert_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, lineage TEXT NOT NULL,
    issuer TEXT NOT NULL, names INTEGER NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS launches (
    tenant TEXT PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, checks TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    name TEXT PRIMARY KEY, display TEXT NOT NULL, unit TEXT, roles TEXT NOT NULL,
    email TEXT NOT NULL, password TEXT NOT NULL, totp TEXT, totp_step INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0, must_change INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL, password_at REAL NOT NULL,
    sessions_after REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS enrolments (
    token TEXT PRIMARY KEY, name TEXT NOT NULL, made_by TEXT NOT NULL, made_at REAL NOT NULL,
    expires REAL NOT NULL, used REAL);
-- The console's sessions, kept by its broker (console/broker.py): the id's hash only.
CREATE TABLE IF NOT EXISTS console_sessions (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, since REAL NOT NULL, seen REAL NOT NULL,
    must_change INTEGER NOT NULL);
-- Browsers a person logged in from (device cookies): they skip the wait a stranger's
-- guessing puts on the person's name (never the wait of their own address). Hashes only.
CREATE TABLE IF NOT EXISTS devices (
    token TEXT PRIMARY KEY, name TEXT NOT NULL, made REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS logins (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, address TEXT NOT NULL,
    at REAL NOT NULL, ok INTEGER NOT NULL, why TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logins_name ON logins (name, at);
CREATE INDEX IF NOT EXISTS logins_address ON logins (address, at);
-- IPv6 sources are throttled by /64: the window's failures are found by time, not a scan.
CREATE INDEX IF NOT EXISTS logins_at ON logins (at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);
"""


@dataclass(frozen=True)
class AppliedNode:
    release_id: str
    digests: dict[str, str]
    applied_at: float


def actor() -> str:
    """Who is acting: the login name behind sudo where there is one."""
    named = os.environ.get("SUDO_USER") or os.environ.get("USER")
    if named:
        return named
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class State:
    def __init__(self, path: Path):
        self.path = Path(path)
        # Password hashes, second-factor secrets and sessions: for root only (the console's
        # web process runs as another account and must not read them).
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # placements
    def placements(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for tenant, node in self.db.execute(
                "SELECT tenant, node FROM placements ORDER BY tenant, position"):
            out.setdefault(tenant, []).append(node)
        return {t: tuple(n) for t, n in out.items()}

    def save_placements(self, placement: Mapping[str, Sequence[str]]) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM placements")
            db.executemany(
                "INSERT INTO placements (tenant, position, node) VALUES (?, ?, ?)",
                [(t, i, n) for t, nodes in placement.items() for i, n in enumerate(nodes)])

    # drained nodes
    def drained(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.db.execute("SELECT node FROM drained"))

    def set_drained(self, node: str, drained: bool) -> bool:
        """Mark or unmark; returns whether anything changed."""
        with self.tx() as db:
            if drained:
                cur = db.execute("INSERT OR IGNORE INTO drained VALUES (?, ?, ?)",
                                 (node, time.time(), actor()))
            else:
                cur = db.execute("DELETE FROM drained WHERE node = ?", (node,))
            changed = cur.rowcount > 0
            if changed:
                self._audit(db, "node.drain" if drained else "node.undrain", node, {})
        return changed

    # applied releases
    def applied(self) -> dict[str, AppliedNode]:
        return {node: AppliedNode(rid, json.loads(dig), at) for node, rid, dig, at in
                self.db.execute("SELECT node, release_id, digests, applied_at FROM node_state")}

    def record_applied(self, node: str, release_id: str, digests: Mapping[str, str],
                       run_id: int) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO node_state VALUES (?, ?, ?, ?, ?)",
                       (node, release_id, json.dumps(dict(digests), sort_keys=True),
                        time.time(), run_id))

    def forget_node(self, node: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM node_state WHERE node = ?", (node,))

    # content releases (publish, review, rollback)
    def add_content_release(self, tenant: str, release_id: str, status: str,
                            summary: Mapping[str, Any], nodes: Sequence[str]) -> None:
        changes = {k: summary.get(k, []) for k in ("added", "changed", "removed", "skipped")}
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO content_releases (tenant, release_id, status, "
                       "published_at, actor, files, bytes, nodes, changes) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (tenant, release_id, status, summary.get("published_at", time.time()),
                        summary.get("published_by", actor()), summary.get("files", 0),
                        summary.get("bytes", 0), json.dumps(list(nodes)),
                        json.dumps(changes, ensure_ascii=False)))
            self._audit(db, f"content.{status}", f"{tenant}/{release_id}",
                        {"files": summary.get("files"), "bytes": summary.get("bytes"),
                         "nodes": list(nodes)}, summary.get("published_by"))

    def set_content_status(self, tenant: str, release_id: str, status: str,
                           action: str | None = None, who: str | None = None) -> None:
        with self.tx() as db:
            db.execute("UPDATE content_releases SET status = ?, decided_by = ?, decided_at = ? "
                       "WHERE tenant = ? AND release_id = ?",
                       (status, who or actor(), time.time(), tenant, release_id))
            self._audit(db, f"content.{action or status}", f"{tenant}/{release_id}", {}, who)

    def add_review_chain(self, tenant: str, release_id: str, levels: Sequence[str],
                         publisher: str) -> None:
        """The levels a pending release must pass, as the manifest said when it was
        published (a later change of the manifest does not move a release under way)."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO review_chains (tenant, release_id, levels, "
                       "publisher) VALUES (?, ?, ?, ?)",
                       (tenant, release_id, json.dumps(list(levels)), publisher))

    def review_chain(self, tenant: str, release_id: str) -> dict[str, Any] | None:
        """{levels, publisher, steps} of a release that went through review, or None."""
        row = self.db.execute("SELECT levels, publisher FROM review_chains WHERE tenant = ? "
                              "AND release_id = ?", (tenant, release_id)).fetchone()
        if row is None:
            return None
        keys = ("level", "kind", "decision", "by", "at", "comment")
        steps = [dict(zip(keys, r)) for r in self.db.execute(
            f"SELECT {', '.join(keys)} FROM review_steps WHERE tenant = ? AND release_id = ? "
            "ORDER BY level", (tenant, release_id))]
        return {"levels": json.loads(row[0]), "publisher": row[1], "steps": steps}

    def add_rollback(self, tenant: str, target: str, by: str, levels: Sequence[str]) -> int:
        """A proposed rollback, waiting for its review chain (kept under the key
        `rollback:<id>` beside the releases' chains)."""
        with self.tx() as db:
            cur = db.execute("INSERT INTO rollbacks (tenant, target, proposed_by, at, status) "
                             "VALUES (?, ?, ?, ?, 'pending')", (tenant, target, by, time.time()))
            pid = int(cur.lastrowid or 0)
            db.execute("INSERT INTO review_chains (tenant, release_id, levels, publisher) "
                       "VALUES (?, ?, ?, ?)",
                       (tenant, f"rollback:{pid}", json.dumps(list(levels)), by))
            self._audit(db, "content.rollback.proposed", f"{tenant}/{target}",
                        {"proposal": pid, "levels": list(levels)}, by)
        return pid

    def rollbacks(self, tenant: str, status: str | None = None) -> list[dict[str, Any]]:
        keys = ("id", "tenant", "target", "proposed_by", "at", "status")
        sql = f"SELECT {', '.join(keys)} FROM rollbacks WHERE tenant = ?"
        args: list[Any] = [tenant]
        if status:
            sql += " AND status = ?"
            args.append(status)
        return [dict(zip(keys, r)) for r in self.db.execute(sql + " ORDER BY id", args)]

    def set_rollback_status(self, pid: int, status: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE rollbacks SET status = ? WHERE id = ?", (status, pid))

    # site requests (controlplane/onboarding)
    _REQUEST_KEYS = ("id", "name", "manifest", "form", "contact", "source", "token", "created",
                     "status", "comment", "decided_by", "decided_at")

    def add_site_request(self, name: str, manifest: str, form: Mapping[str, str],
                         contact: str, source: str, token_hash: str) -> int:
        """A unit's request for a site (its manifest, and the form it came from)."""
        with self.tx() as db:
            cur = db.execute("INSERT INTO site_requests (name, manifest, form, contact, source, "
                             "token, created, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                             (name, manifest, json.dumps(dict(form), ensure_ascii=False),
                              contact, source, token_hash, time.time()))
            rid = int(cur.lastrowid or 0)
            self._audit(db, "site-request.submitted", name, {"request": rid,
                                                             "source": source}, contact)
        return rid

    def site_requests(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(self._REQUEST_KEYS)} FROM site_requests"
        args: tuple[Any, ...] = ()
        if status:
            sql, args = sql + " WHERE status = ?", (status,)
        return [dict(zip(self._REQUEST_KEYS, r))
                for r in self.db.execute(sql + " ORDER BY id DESC", args)]

    def site_request(self, rid: int) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {', '.join(self._REQUEST_KEYS)} FROM site_requests "
                              "WHERE id = ?", (rid,)).fetchone()
        return dict(zip(self._REQUEST_KEYS, row)) if row else None

    def requests_from(self, source: str, since: float) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM site_requests WHERE source = ? AND "
                                   "created > ?", (source, since)).fetchone()[0])

    def decide_site_request(self, rid: int, status: str, by: str, comment: str) -> bool:
        """Close a pending request (approved or returned); False if it was not pending (two
        operators at once: the first decision stands)."""
        with self.tx() as db:
            cur = db.execute("UPDATE site_requests SET status = ?, comment = ?, decided_by = ?, "
                             "decided_at = ? WHERE id = ? AND status = 'pending'",
                             (status, comment, by, time.time(), rid))
            if cur.rowcount != 1:
                return False
            self._audit(db, f"site-request.{status}", str(rid), {"comment": comment}, by)
        return True

    def add_review_step(self, tenant: str, release_id: str, level: int, kind: str,
                        decision: str, by: str, at: float, comment: str) -> None:
        """One level's decision, with its audit entry in the reviewer's name. A level is
        decided once: a second decision of the same level (two reviewers at once) fails."""
        with self.tx() as db:
            db.execute("INSERT INTO review_steps (tenant, release_id, level, kind, decision, "
                       "by, at, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (tenant, release_id, level, kind, decision, by, at, comment))
            self._audit(db, f"content.review.{decision}", f"{tenant}/{release_id}",
                        {"level": level + 1, "kind": kind, "comment": comment}, by)

    def content_releases(self, tenant: str | None = None,
                         status: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT tenant, release_id, status, published_at, actor, files, bytes, nodes, "
               "changes, decided_by, decided_at FROM content_releases")
        where, args = [], []
        if tenant:
            where.append("tenant = ?")
            args.append(tenant)
        if status:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        keys = ("tenant", "release_id", "status", "published_at", "actor", "files", "bytes",
                "nodes", "changes", "decided_by", "decided_at")
        rows = [dict(zip(keys, r)) for r in self.db.execute(sql + " ORDER BY release_id", args)]
        for r in rows:
            r["nodes"], r["changes"] = json.loads(r["nodes"]), json.loads(r["changes"])
        return rows

    def launched(self) -> dict[str, float]:
        """Units that passed `govhost launch`, and when."""
        return dict(self.db.execute("SELECT tenant, at FROM launches"))

    def record_launch(self, tenant: str, passed: bool, checks: Sequence[Mapping[str, Any]]
                      ) -> None:
        """A launch attempt: audited either way; a passed one opens the site for good."""
        with self.tx() as db:
            if passed:
                db.execute("INSERT OR REPLACE INTO launches (tenant, at, actor, checks) "
                           "VALUES (?, ?, ?, ?)", (tenant, time.time(), actor(),
                                                   json.dumps(list(checks))))
            self._audit(db, "launch.passed" if passed else "launch.refused", tenant,
                        {"failed": [c["check"] for c in checks if not c["ok"]]})

    def last_published(self) -> dict[str, float]:
        """Per tenant, when content that went live was last published (freshness)."""
        return dict(self.db.execute(
            "SELECT tenant, MAX(published_at) FROM content_releases "
            "WHERE status NOT IN ('pending', 'rejected') GROUP BY tenant"))

    # wording checks: findings per file content under one version of the lists (so a file is
    # read once per list change), and per release (what the reviewer and compliance see)
    def wording_cached(self, lists: str, digests: Sequence[str]) -> dict[str, list]:
        out: dict[str, list] = {}
        wanted = list(dict.fromkeys(digests))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for d, f in self.db.execute(f"SELECT digest, findings FROM wording_files WHERE "
                                        f"lists = ? AND digest IN ({marks})", [lists, *chunk]):
                out[d] = json.loads(f)
        return out

    def wording_cache(self, lists: str, found: Mapping[str, list]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO wording_files VALUES (?, ?, ?)",
                           [(d, lists, json.dumps(f, ensure_ascii=False))
                            for d, f in found.items()])
            db.execute("DELETE FROM wording_files WHERE lists != ?", (lists,))

    def record_wording(self, tenant: str, release_id: str, lists: str, files: int,
                       findings: Sequence[Mapping[str, Any]]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO wording_releases VALUES (?, ?, ?, ?, ?, ?)",
                       (tenant, release_id, lists, time.time(), files,
                        json.dumps(list(findings), ensure_ascii=False)))

    def wording(self, tenant: str | None = None,
                release_id: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        sql, args = ("SELECT tenant, release_id, lists, checked_at, files, findings "
                     "FROM wording_releases"), []
        if tenant:
            sql += " WHERE tenant = ?" + (" AND release_id = ?" if release_id else "")
            args = [tenant] + ([release_id] if release_id else [])
        return {(t, r): {"tenant": t, "release": r, "lists": ls, "checked_at": at,
                         "files": n, "findings": json.loads(f)}
                for t, r, ls, at, n, f in self.db.execute(sql, args)}

    # the backup catalogue: snapshots made through govhost, verifies, drills, off-site copies
    def record_backup(self, r: Mapping[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO backups (run, tenant, kind, node, snapshot, ok, "
                       "started_at, finished_at, seconds, files, bytes, bytes_added, error) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (r["run"], r["tenant"], r["kind"], r["node"], r.get("snapshot"),
                        int(bool(r["ok"])), r.get("started_at"), r["finished_at"],
                        r.get("seconds"), r.get("files"), r.get("bytes"), r.get("bytes_added"),
                        r.get("error") or ""))

    def backups(self, tenant: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        keys = ("run", "tenant", "kind", "node", "snapshot", "ok", "started_at", "finished_at",
                "seconds", "files", "bytes", "bytes_added", "error")
        where, args = ("WHERE tenant = ?", [tenant]) if tenant else ("", [])
        rows = self.db.execute(f"SELECT {', '.join(keys)} FROM backups {where} "
                               "ORDER BY finished_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(zip(keys, r), ok=bool(r[5])) for r in rows]

    def last_backups(self) -> dict[tuple[str, str], float]:
        """(tenant, kind) -> when its last successful backup through govhost finished."""
        return {(t, k): ts for t, k, ts in self.db.execute(
            "SELECT tenant, kind, MAX(finished_at) FROM backups WHERE ok = 1 "
            "GROUP BY tenant, kind")}

    def record_check(self, kind: str, tenant: str | None, ok: bool, seconds: float,
                     detail: Mapping[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO backup_checks (kind, tenant, ok, at, seconds, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (kind, tenant, int(ok), time.time(), seconds,
                                                     json.dumps(detail, sort_keys=True)))
            self._audit(db, f"backup.{kind}", tenant or "repository",
                        {"ok": ok, "seconds": seconds})

    def checks(self, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self.db.execute(f"SELECT kind, tenant, ok, at, seconds, detail FROM backup_checks "
                               f"{where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [{"kind": k, "tenant": t, "ok": bool(ok), "at": at, "seconds": s,
                 "detail": json.loads(d)} for k, t, ok, at, s, d in rows]

    # compliance: probe counts per tenant and hour, failed probes, weekly verdicts
    def record_probe_round(self, at: float, rounds: Mapping[str, list[dict[str, Any]]]) -> None:
        """rounds: tenant -> the failed node probes of this round (empty list: all fine)."""
        hour = at - at % 3600
        with self.tx() as db:
            db.executemany(
                "INSERT INTO probe_hours (tenant, hour, probes, failures) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (tenant, hour) DO UPDATE SET probes = probes + 1, "
                "failures = failures + excluded.failures",
                [(t, hour, 1 if failed else 0) for t, failed in rounds.items()])
            # The yearly report's uptime: one row per unit and day, kept over a year.
            day = time.strftime("%Y-%m-%d", time.localtime(at))
            db.executemany(
                "INSERT INTO probe_days (tenant, day, probes, failures) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (tenant, day) DO UPDATE SET probes = probes + 1, "
                "failures = failures + excluded.failures",
                [(t, day, 1 if failed else 0) for t, failed in rounds.items()])
            db.execute("DELETE FROM probe_days WHERE day < ?", (time.strftime(
                "%Y-%m-%d", time.localtime(at - 800 * 86400)),))
            db.executemany("INSERT INTO probe_failures (tenant, at, detail) VALUES (?, ?, ?)",
                           [(t, at, json.dumps(f, sort_keys=True))
                            for t, f in rounds.items() if f])
            cutoff = at - 70 * 86400               # ten weeks are kept
            db.execute("DELETE FROM probe_hours WHERE hour < ?", (cutoff,))
            db.execute("DELETE FROM probe_failures WHERE at < ?", (cutoff,))

    def probe_year(self, year: int) -> dict[str, tuple[int, int]]:
        """Per tenant: (probes, failed probes) over the year's days."""
        return {t: (p, f) for t, p, f in self.db.execute(
            "SELECT tenant, SUM(probes), SUM(failures) FROM probe_days WHERE day LIKE ? "
            "GROUP BY tenant", (f"{year}-%",))}

    def record_visit_days(self, rows: Sequence[tuple[str, str, int, int]],
                          pages: Sequence[tuple[str, str, str, int]] = ()) -> None:
        """(tenant, day, page views, visitors) as counted from the nodes' logs, and the pages
        most read (tenant, day, path, views); a day counted again (it was still going on)
        replaces its earlier count."""
        now = time.time()
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO visit_days (tenant, day, page_views, "
                           "visitors, collected_at) VALUES (?, ?, ?, ?, ?)",
                           [(*r, now) for r in rows])
            db.executemany("DELETE FROM page_days WHERE tenant = ? AND day = ?",
                           sorted({(t, d) for t, d, _, _ in pages}))
            db.executemany("INSERT INTO page_days (tenant, day, path, views) VALUES "
                           "(?, ?, ?, ?)", pages)

    def visits(self, tenant: str, since_day: str) -> list[tuple[str, int, int]]:
        """(day, page views, visitors) of one unit from `since_day` on."""
        return [tuple(r) for r in self.db.execute(
            "SELECT day, page_views, visitors FROM visit_days WHERE tenant = ? AND day >= ? "
            "ORDER BY day", (tenant, since_day))]

    def top_pages(self, tenant: str, since_day: str, limit: int = 10
                  ) -> list[tuple[str, int]]:
        """The unit's most read pages from `since_day` on: (path, views)."""
        return [tuple(r) for r in self.db.execute(
            "SELECT path, SUM(views) AS v FROM page_days WHERE tenant = ? AND day >= ? "
            "GROUP BY path ORDER BY v DESC, path LIMIT ?", (tenant, since_day, limit))]

    def visit_year(self, year: int) -> dict[str, tuple[int, int, int]]:
        """Per tenant: (page views, visitors summed over days, days counted)."""
        return {t: (v, u, n) for t, v, u, n in self.db.execute(
            "SELECT tenant, SUM(page_views), SUM(visitors), COUNT(*) FROM visit_days "
            "WHERE day LIKE ? GROUP BY tenant", (f"{year}-%",))}

    def last_visit_day(self) -> str | None:
        """The last day counted completely (the day before the newest day counted)."""
        row = self.db.execute("SELECT MAX(day) FROM visit_days").fetchone()
        return row[0] if row else None

    def probe_week(self, tenant: str, start: float, end: float
                   ) -> tuple[int, int, list[dict[str, Any]]]:
        probes, failures = self.db.execute(
            "SELECT COALESCE(SUM(probes), 0), COALESCE(SUM(failures), 0) FROM probe_hours "
            "WHERE tenant = ? AND hour >= ? AND hour < ?",
            (tenant, start - start % 3600, end)).fetchone()
        times = [{"at": at, "nodes": json.loads(d)} for at, d in self.db.execute(
            "SELECT at, detail FROM probe_failures WHERE tenant = ? AND at >= ? AND at < ? "
            "ORDER BY at", (tenant, start, end))]
        return int(probes), int(failures), times

    def probe_days(self, tenant: str, start: float, end: float) -> dict[str, int]:
        """Local day (YYYY-MM-DD) -> probe rounds recorded for `tenant` that day."""
        out: dict[str, int] = {}
        for hour, n in self.db.execute(
                "SELECT hour, probes FROM probe_hours WHERE tenant = ? AND hour >= ? "
                "AND hour < ?", (tenant, start - start % 3600, end)):
            day = time.strftime("%Y-%m-%d", time.localtime(hour))
            out[day] = out.get(day, 0) + int(n)
        return out

    def probe_week_counts(self, start: float, end: float) -> dict[str, tuple[int, int]]:
        """tenant -> (probes, failures) since `start`: one query for every tenant."""
        return {t: (int(p), int(f)) for t, p, f in self.db.execute(
            "SELECT tenant, SUM(probes), SUM(failures) FROM probe_hours WHERE hour >= ? "
            "AND hour < ? GROUP BY tenant", (start - start % 3600, end))}

    def record_compliance(self, week: str, at: float,
                          verdicts: Mapping[str, Mapping[str, Any]]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO compliance (week, tenant, checked_at, "
                           "verdicts) VALUES (?, ?, ?, ?)",
                           [(week, t, at, json.dumps(v, ensure_ascii=False, sort_keys=True))
                            for t, v in verdicts.items()])

    def compliance(self, week: str | None = None) -> dict[str, dict[str, Any]]:
        """tenant -> {checked_at, verdicts} of `week` (the latest week checked if None)."""
        if week is None:
            row = self.db.execute("SELECT week FROM compliance WHERE checked_at <= ? "
                                  "ORDER BY checked_at DESC LIMIT 1",
                                  (time.time() + 60,)).fetchone()
            if row is None:
                return {}
            week = row[0]
        return {t: {"week": week, "checked_at": at, "verdicts": json.loads(v)}
                for t, at, v in self.db.execute(
                    "SELECT tenant, checked_at, verdicts FROM compliance WHERE week = ?",
                    (week,))}

    # runs and audit
    _CERT_COLUMNS = ("lineage", "issuer", "names", "units", "not_before", "not_after", "serial",
                     "fingerprint", "ocsp", "issued_at", "last_attempt", "last_error",
                     "failures", "next_attempt", "failed_names", "attempt_names")

    def certificates(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute(f"SELECT {', '.join(self._CERT_COLUMNS)} FROM certificates")
        out = {}
        for row in rows:
            rec = dict(zip(self._CERT_COLUMNS, row))
            for k in ("names", "units", "failed_names", "attempt_names"):
                rec[k] = json.loads(rec[k])
            out[rec["lineage"]] = rec
        return out

    def save_certificate(self, lineage: str, **fields: Any) -> None:
        """Create or update a lineage's record with `fields` (lists stored as JSON)."""
        for k in ("names", "units", "failed_names", "attempt_names"):
            if k in fields:
                fields[k] = json.dumps(list(fields[k]))
        unknown = set(fields) - set(self._CERT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown certificate fields {sorted(unknown)}")
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO certificates (lineage, issuer, names, units) "
                       "VALUES (?, ?, '[]', '[]')", (lineage, fields.get("issuer", "")))
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                db.execute(f"UPDATE certificates SET {sets} WHERE lineage = ?",
                           (*fields.values(), lineage))

    def forget_certificate(self, lineage: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM certificates WHERE lineage = ?", (lineage,))

    def record_order(self, lineage: str, issuer: str, names: int, ok: bool, detail: str,
                     at: float | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO cert_orders (at, lineage, issuer, names, ok, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (time.time() if at is None else at, lineage, issuer, names, int(ok),
                        detail[:2000]))

    def orders_since(self, since: float, issuer: str = "acme", ok_only: bool = True) -> int:
        q = "SELECT COUNT(*) FROM cert_orders WHERE at >= ? AND issuer = ?"
        if ok_only:
            q += " AND ok = 1"
        return self.db.execute(q, (since, issuer)).fetchone()[0]

    def start_run(self, kind: str) -> int:
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO runs (kind, started_at, result, pid, actor) VALUES (?, ?, ?, ?, ?)",
                (kind, time.time(), "running", os.getpid(), actor()))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, result: str, summary: Mapping[str, Any],
                   audit: Mapping[str, Any] | None = None) -> None:
        """`audit`: what the audit log keeps of a long summary (the whole summary if None)."""
        with self.tx() as db:
            db.execute("UPDATE runs SET finished_at = ?, result = ?, summary = ? WHERE id = ?",
                       (time.time(), result, json.dumps(summary, sort_keys=True), run_id))
            self._audit(db, f"run.{result}", f"run {run_id}",
                        summary if audit is None else audit)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, kind, started_at, finished_at, result, pid, actor, summary FROM runs "
            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        keys = ("id", "kind", "started_at", "finished_at", "result", "pid", "actor", "summary")
        out = []
        for row in rows:
            d = dict(zip(keys, row))
            d["summary"] = json.loads(d["summary"]) if d["summary"] else None
            out.append(d)
        return out

    def last_run(self, kind: str) -> dict[str, Any] | None:
        """The newest finished run of a kind (a security check's report for the compliance
        report), or None."""
        row = self.db.execute(
            "SELECT id, finished_at, result, summary FROM runs WHERE kind = ? AND finished_at "
            "IS NOT NULL ORDER BY id DESC LIMIT 1", (kind,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "finished_at": row[1], "result": row[2],
                "summary": json.loads(row[3]) if row[3] else None}

    def audit(self, action: str, target: str, detail: Mapping[str, Any],
              who: str | None = None) -> None:
        with self.tx() as db:
            self._audit(db, action, target, detail, who)

    def account_ties(self, names: Iterable[str], since: float) -> frozenset[tuple[str, str]]:
        """(maker, account) for every account among `names` created or reset since `since`
        by a person of a unit (the audit log's user.add and user.reset; the county's
        operators, at the CLI or in the console, are not counted)."""
        names = sorted(set(names))
        if not names:
            return frozenset()
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT actor, target FROM audit WHERE action IN ('user.add', 'user.reset') "
            f"AND ts >= ? AND target IN ({marks}) AND actor IN (SELECT name FROM people "
            f"WHERE unit IS NOT NULL)", (since, *names)).fetchall()
        return frozenset((a, t) for a, t in rows if a != t)

    def audit_log(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT ts, actor, action, target, detail FROM audit "
                               "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"ts": ts, "actor": a, "action": ac, "target": t, "detail": json.loads(d)}
                for ts, a, ac, t, d in rows]

    @staticmethod
    def _audit(db: sqlite3.Connection, action: str, target: str, detail: Mapping[str, Any],
               who: str | None = None) -> None:
        db.execute("INSERT INTO audit (ts, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                   (time.time(), who or actor(), action, target,
                    json.dumps(detail, sort_keys=True)))

    # Other stores that keep their tables in this database write their audit entries in
    # their own transactions (controlplane.people.store); `who`: a console user's name.
    audit_in = _audit


# Written by `govhost control restore` until it has asked the nodes what changed after the
# snapshot; apply refuses to run meanwhile (it would undo publishes it does not know yet).
RESTORE_PENDING = "restore-pending.json"


def state_dir(inventory: Path) -> Path:
    """Where state lives: GOVHOST_STATE_DIR, else <inventory>/.govhost (kept out of Git)."""
    env = os.environ.get("GOVHOST_STATE_DIR")
    return (Path(env) if env else Path(inventory) / ".govhost").resolve()


@contextmanager
def exclusive(d: Path, name: str, busy: Callable[[int], Exception],
              mode: int = 0o644) -> Iterator[int]:
    """An exclusive lock on `<d>/<name>.lock` (d: the state directory) held for the block
    (the kernel releases it if the process dies). When another process holds it, raises
    `busy(fd)` at once."""
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{name}.lock", os.O_RDWR | os.O_CREAT, mode)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(fd) from None
        yield fd
    finally:
        os.close(fd)
