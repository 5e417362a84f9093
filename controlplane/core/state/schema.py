"""The state database's schema, and how a database made by an older govhost becomes today's.

The version is SQLite's `user_version`. A change to a table is a new migration at the end of
MIGRATIONS, never an edit of an older one or of BASELINE: a county's database runs only the
migrations it has not run yet, in order and in one transaction, so it is wholly of the old
version or wholly of the new, whatever kills the process. Before it runs any, a copy of the
database is kept in `<state>/schema-copies/`: the way back if the new govhost has to go.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from controlplane.core.errors import GovhostError

# Version 1: the tables of every release before the state kept a version (the schema as it
# stood in December 2026). Frozen: later changes are migrations.
BASELINE = """
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

COPIES = "schema-copies"


class StateSchemaError(GovhostError):
    """The state database cannot be brought to this govhost's schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    why: str
    step: Callable[[sqlite3.Connection], None]


def statements(script: str) -> list[str]:
    """The statements of an SQL script, one by one: `executescript` would commit the
    migration's transaction half way."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        if not pending and line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"an unfinished statement: {pending.strip()[:80]}")
    return out


def add_missing_columns(db: sqlite3.Connection, script: str) -> list[str]:
    """Columns the tables of `script` have and the database's tables lack, added with their
    declared defaults; returns "table.column" of each. Releases before versions added columns
    by editing their CREATE statement, which never reached an existing database."""
    ref = sqlite3.connect(":memory:")
    try:
        for stmt in statements(script):
            ref.execute(stmt)
        tables = [r[0] for r in ref.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        added = []
        for table in tables:
            have = {r[1] for r in db.execute(f'PRAGMA table_info("{table}")')}
            for _, name, ctype, notnull, default, pk in ref.execute(
                    f'PRAGMA table_info("{table}")'):
                if name in have:
                    continue
                if pk or (notnull and default is None):
                    raise StateSchemaError(
                        f"the state's table {table} lacks column {name}, which cannot be added "
                        "to rows already there (it has no default); restore a control snapshot "
                        "made by a release of govhost that kept schema versions")
                db.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {ctype}'
                           + (" NOT NULL" if notnull else "")
                           + (f" DEFAULT {default}" if default is not None else ""))
                added.append(f"{table}.{name}")
        return added
    finally:
        ref.close()


# Tables of earlier releases that nothing reads any more: waf_since (when a unit's WAF
# began detecting), replaced by the manifest's stated `waf: detect` exceptions.
RETIRED = ("waf_since",)


def _baseline(db: sqlite3.Connection) -> None:
    """Tables made where missing, the columns an older release's database lacks
    (people.sessions_after, added in 2026) added, retired tables dropped."""
    for stmt in statements(BASELINE):
        db.execute(stmt)
    add_missing_columns(db, BASELINE)
    for table in RETIRED:
        db.execute(f'DROP TABLE IF EXISTS "{table}"')


def _message_answers(db: sqlite3.Connection) -> None:
    """Citizens' messages answered by their units (controlplane/messages): what the unit's
    page shows, kept here as the record; the messages themselves stay on the nodes."""
    db.execute("""CREATE TABLE IF NOT EXISTS message_answers (
        number TEXT PRIMARY KEY, unit TEXT NOT NULL, received TEXT NOT NULL,
        subject TEXT NOT NULL, text TEXT NOT NULL, token_hash TEXT NOT NULL,
        answer TEXT NOT NULL, publish INTEGER NOT NULL, answered_by TEXT NOT NULL,
        answered_at REAL NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS message_answers_unit ON message_answers (unit)")


def _message_handling(db: sqlite3.Connection) -> None:
    """How the units handle their citizens' messages (controlplane/messages/inbox.py): the
    control machine's index of the messages the nodes hold (number, unit, day, subject: no
    text, name or contact, which stay on the nodes), forwards to another unit, answers
    waiting for the unit's review chain (kept under `answer:<id>` beside the releases'
    chains), and the reminders and alerts already sent (each once)."""
    db.execute("""CREATE TABLE IF NOT EXISTS message_index (
        number TEXT PRIMARY KEY, unit TEXT NOT NULL, received TEXT NOT NULL,
        subject TEXT NOT NULL, seen_at REAL NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS message_index_unit ON message_index (unit)")
    db.execute("""CREATE TABLE IF NOT EXISTS message_routes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, number TEXT NOT NULL, from_unit TEXT NOT NULL,
        to_unit TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS message_routes_number ON message_routes (number)")
    db.execute("""CREATE TABLE IF NOT EXISTS message_drafts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, number TEXT NOT NULL, unit TEXT NOT NULL,
        answer TEXT NOT NULL, publish INTEGER NOT NULL, by TEXT NOT NULL, at REAL NOT NULL,
        status TEXT NOT NULL)""")
    db.execute("CREATE INDEX IF NOT EXISTS message_drafts_number ON message_drafts (number)")
    db.execute("""CREATE TABLE IF NOT EXISTS message_notices (
        number TEXT NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (number, kind))""")


def _history_indexes(db: sqlite3.Connection) -> None:
    """What runs every few seconds (a probe round's record and clean-up, the exporter's
    scrape, the console's overview and unit pages) finds this week's and the newest rows by
    index, not by reading the county's history: at 5,000 units a year of it is millions of
    rows, and the scrape took 1.2 s, a round's record 0.8 s and the overview 0.5 s
    (bench/state_history.py). The clean-ups find the rows past keeping by time; the last
    live release of a unit and its pending ones are looked up by unit and time and by
    status; the latest compliance week by when it was checked; the wording cache's rows of
    other word lists by their lists (each unit's check dropped them with a scan of every
    file read); the audit log's account changes by action and time (a review page's
    conflict check read the whole log)."""
    for stmt in (
            "CREATE INDEX IF NOT EXISTS probe_hours_hour ON probe_hours (hour)",
            "CREATE INDEX IF NOT EXISTS probe_days_day ON probe_days (day)",
            "CREATE INDEX IF NOT EXISTS probe_failures_at ON probe_failures (at)",
            "CREATE INDEX IF NOT EXISTS content_releases_published "
            "ON content_releases (tenant, published_at, status)",
            "CREATE INDEX IF NOT EXISTS content_releases_status ON content_releases (status)",
            "CREATE INDEX IF NOT EXISTS compliance_checked ON compliance (checked_at)",
            "CREATE INDEX IF NOT EXISTS wording_files_lists ON wording_files (lists)",
            "CREATE INDEX IF NOT EXISTS audit_action ON audit (action, ts)"):
        db.execute(stmt)


def _message_reads(db: sqlite3.Connection) -> None:
    """The day of the control machine's last whole read of every node's messages: the
    hourly reminder then asks the nodes only for the days since (it read every message
    every hour: 0.9 s of each node and 19 MB sent at 40,000 messages, growing for ever)."""
    db.execute("""CREATE TABLE IF NOT EXISTS message_reads (
        kind TEXT PRIMARY KEY, day TEXT NOT NULL, at REAL NOT NULL)""")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the baseline: every table of the releases before schema versions", _baseline),
    Migration(2, "citizens' messages: the units' answers", _message_answers),
    Migration(3, "citizens' messages: index, forwards, answers under review, reminders",
              _message_handling),
    Migration(4, "the history's indexes: this week's and the newest rows without a scan",
              _history_indexes),
    Migration(5, "citizens' messages: the day of the last whole read of the nodes",
              _message_reads),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _keep_copy(db: sqlite3.Connection, path: Path, have: int) -> Path:
    """A consistent copy (SQLite's backup API), readable by root only."""
    d = path.parent / COPIES
    d.mkdir(mode=0o700, exist_ok=True)
    stem = f"{path.name}.v{have}-{time.strftime('%Y%m%dT%H%M%S')}"
    for n in range(1000):                 # an upgrade tried again within the second
        dest = d / (stem if n == 0 else f"{stem}.{n}")
        try:
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            break
        except FileExistsError:
            continue
    else:
        raise StateSchemaError(f"cannot name a copy of {path} in {d}; clear it out")
    out = sqlite3.connect(str(dest))
    try:
        db.backup(out)
    finally:
        out.close()
    return dest


def upgrade(db: sqlite3.Connection, path: Path,
            migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the database at `path` (open as `db`, autocommit) to the newest version; returns
    the versions run. A database of a newer govhost is refused, not guessed at. Processes
    opening an old database at once take turns: the first keeps the copy and upgrades, the
    others find it done."""
    newest = migrations[-1].version
    have = version(db)
    if have > newest:
        raise StateSchemaError(
            f"{path} is of state schema version {have}, made by a newer govhost; this one "
            f"knows versions up to {newest}. Run the newer govhost (or restore a control "
            "snapshot made by this release)")
    if have == newest:
        return []
    fd = os.open(path.parent / f"{path.name}.upgrade.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        have = version(db)          # another process may have upgraded it meanwhile
        if have >= newest:
            return []
        if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            _keep_copy(db, path, have)
        db.execute("BEGIN IMMEDIATE")
        try:
            ran = []
            for m in migrations:
                if m.version > have:
                    m.step(db)
                    db.execute(f"PRAGMA user_version = {int(m.version)}")
                    ran.append(m.version)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return ran
    finally:
        os.close(fd)
