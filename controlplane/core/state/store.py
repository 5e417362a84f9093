"""The state database's connection, its transactions, runs and the audit log: what every
capability's records (the other modules of this package) write through.

SQLite in WAL mode so a reader (status, exporter) never blocks an apply; every write is a
single transaction, so a control plane killed mid-apply leaves either the old or the new
record, never half of one. Opening a database of an older govhost upgrades it (schema.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from controlplane.core.state.schema import upgrade


def actor() -> str:
    """Who is acting: the login name behind sudo where there is one."""
    named = os.environ.get("SUDO_USER") or os.environ.get("USER")
    if named:
        return named
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class Store:
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
        try:
            self.upgraded = upgrade(self.db, self.path)
        except BaseException:
            self.db.close()
            raise

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
