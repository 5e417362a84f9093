"""The state's schema versions: a database written by an older release opens, keeps every
record and gains what it lacked; migrations run in order, once, all or nothing.

The fixtures under data/ were written by the older releases' own State class (their
state.py from git), not by hand: see their first line.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from controlplane.core.state import SCHEMA_VERSION, State, StateSchemaError
from controlplane.core.state import schema as state_schema

DATA = Path(__file__).parent / "data"
OLD = sorted(DATA.glob("state-*.sql"))


def load(sql: Path, path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(sql.read_text(encoding="utf-8"))
    db.close()
    return path


def layout(path: Path) -> dict:
    """Every table's columns (name, type, not null, default) and every index's name."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        out = {t: sorted(tuple(c[1:5]) for c in db.execute(f'PRAGMA table_info("{t}")'))
               for t in tables}
        out["indexes"] = sorted(r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        return out
    finally:
        db.close()


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def test_the_fixtures_are_databases_from_before_versions():
    assert len(OLD) >= 2
    for sql in OLD:
        assert sql.read_text(encoding="utf-8").startswith("-- A state database written by")
    assert "sessions_after" not in (DATA / "state-712fe19.sql").read_text(encoding="utf-8")


@pytest.mark.parametrize("sql", OLD, ids=lambda p: p.stem)
def test_a_database_of_an_older_release_is_upgraded_and_keeps_every_record(sql, tmp_path):
    path = load(sql, tmp_path / "state.db")
    before = counts(path)
    st = State(path)
    try:
        assert st.upgraded == list(range(1, SCHEMA_VERSION + 1))   # every migration, in order
        assert state_schema.version(st.db) == SCHEMA_VERSION
        assert st.message_answers() == []          # version 2's table, there and empty
        assert st.placements() == {"jiaoyu": ("n1", "n2"), "renshe": ("n2", "n3")}
        assert st.drained() == frozenset({"n3"})
        assert st.applied()["n1"].release_id == "20261201T000000-abcdef"
        [rel] = st.content_releases("jiaoyu")
        assert (rel["release_id"], rel["actor"], rel["files"]) == (
            "20261201T010203-0a1b2c", "zhang", 3)
        assert st.last_backups() == {("jiaoyu", "files"): 1764550100.0}
        assert st.last_backups("jiaoyu") == st.last_backups() and st.last_backups("x") == {}
        assert [e["detail"] for e in st.audit_log() if e["action"] == "test.fixture"]
        # the column the older release lacked is there, with its default, and works
        assert st.db.execute("SELECT sessions_after FROM people WHERE name = 'li'"
                             ).fetchone() == (0,)
        with st.tx() as db:
            db.execute("UPDATE people SET sessions_after = 5 WHERE name = 'li'")
        # and what this release writes goes in
        st.record_launch("jiaoyu", True, [{"check": "waf", "ok": True}])
        assert "jiaoyu" in st.launched()
    finally:
        st.close()
    after = counts(path)
    assert all(after[t] >= n for t, n in before.items() if t not in state_schema.RETIRED), (
        before, after)
    assert not set(after) & set(state_schema.RETIRED)
    # a copy of the database as it was is kept, and is the older version
    [copy] = (tmp_path / state_schema.COPIES).iterdir()
    assert copy.name.startswith("state.db.v0-")
    assert copy.stat().st_mode & 0o077 == 0
    assert counts(copy) == before
    # opening again runs nothing
    again = State(path)
    assert again.upgraded == []
    again.close()
    assert len(list((tmp_path / state_schema.COPIES).iterdir())) == 1


@pytest.mark.parametrize("sql", OLD, ids=lambda p: p.stem)
def test_an_upgraded_database_has_the_layout_of_a_new_one(sql, tmp_path):
    State(tmp_path / "new.db").close()
    State(load(sql, tmp_path / "old.db")).close()
    assert layout(tmp_path / "old.db") == layout(tmp_path / "new.db")


def test_a_new_database_gets_the_newest_version_and_no_copy(tmp_path):
    st = State(tmp_path / "state.db")
    assert st.upgraded == [v.version for v in state_schema.MIGRATIONS]
    assert state_schema.version(st.db) == SCHEMA_VERSION
    st.close()
    assert not (tmp_path / state_schema.COPIES).exists()


def test_a_database_of_a_newer_govhost_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "state.db"
    State(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.execute("CREATE TABLE from_the_future (x)")
    db.close()
    with pytest.raises(StateSchemaError, match="newer govhost") as err:
        State(path)
    assert str(path) in str(err.value)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def test_migrations_are_numbered_one_after_another():
    assert [m.version for m in state_schema.MIGRATIONS] == list(
        range(1, len(state_schema.MIGRATIONS) + 1))
    assert all(m.why for m in state_schema.MIGRATIONS)


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), timeout=30, isolation_level=None)


def test_migrations_run_in_order_and_a_failing_one_undoes_the_whole_upgrade(tmp_path):
    path = load(OLD[0], tmp_path / "state.db")
    ran: list[int] = []

    def add_note(db):
        ran.append(2)
        db.execute("ALTER TABLE placements ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    def broken(db):
        ran.append(3)
        db.execute("UPDATE placements SET note = 'half'")
        raise RuntimeError("migration 3 fails half way")

    base = state_schema.MIGRATIONS[0]
    failing = (base, state_schema.Migration(2, "note", add_note),
               state_schema.Migration(3, "broken", broken))
    db = _open(path)
    with pytest.raises(RuntimeError):
        state_schema.upgrade(db, path, failing)
    assert ran == [2, 3]
    assert state_schema.version(db) == 0
    assert "note" not in {c[1] for c in db.execute("PRAGMA table_info(placements)")}
    assert db.execute("SELECT COUNT(*) FROM placements").fetchone()[0] == 4
    fixed = (*failing[:2], state_schema.Migration(3, "fixed", lambda d: d.execute(
        "UPDATE placements SET note = 'n' || position")))
    assert state_schema.upgrade(db, path, fixed) == [1, 2, 3]
    assert state_schema.upgrade(db, path, fixed) == []
    assert sorted(r[0] for r in db.execute("SELECT note FROM placements")) == [
        "n0", "n0", "n1", "n1"]
    db.close()


def test_processes_opening_an_old_database_at_once_upgrade_it_once(tmp_path):
    path = load(OLD[0], tmp_path / "state.db")
    results: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it():
        start.wait()
        try:
            st = State(path)
            results.append(st.upgraded)
            st.close()
        except BaseException as exc:   # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[], [], [], list(range(1, SCHEMA_VERSION + 1))]


def test_a_missing_column_without_a_default_is_refused_by_name(tmp_path):
    """A column an older table lacks and that cannot be filled in for rows already there:
    refused with the table and column named, and the database left as it was."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE site_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "name TEXT NOT NULL)")
    db.execute("INSERT INTO site_requests (name) VALUES ('jiaoyu')")
    db.commit()
    db.close()
    with pytest.raises(StateSchemaError, match="site_requests lacks column manifest"):
        State(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'placements'"
                      ).fetchone() is None
    db.close()


def test_statements_are_split_where_sqlite_would_end_them():
    script = ("-- a comment; with a semicolon\nCREATE TABLE a (x TEXT DEFAULT ';');\n"
              "CREATE TABLE b (y);\n")
    assert state_schema.statements(script) == ["CREATE TABLE a (x TEXT DEFAULT ';');",
                                               "CREATE TABLE b (y);"]
    with pytest.raises(ValueError, match="unfinished"):
        state_schema.statements("CREATE TABLE c (z")


def test_a_database_of_version_1_gets_the_message_answers_and_keeps_its_records(tmp_path):
    """Version 1's schema (no message answers) upgraded to 2, then on."""
    path = load(OLD[0], tmp_path / "state.db")
    db = sqlite3.connect(path)
    with db:
        state_schema.MIGRATIONS[0].step(db)
        db.execute("PRAGMA user_version = 1")
    db.close()
    before = counts(path)
    st = State(path)
    try:
        assert st.upgraded == list(range(2, SCHEMA_VERSION + 1))
        st.record_answer({"number": "JY-20261205-1-000001", "unit": "jiaoyu",
                          "received": "2026-12-05T02:00:00Z", "subject": "路灯",
                          "text": "坏了", "token_hash": "0" * 64}, "已修复", True, "wang")
        assert [a["answer"] for a in st.message_answers("jiaoyu")] == ["已修复"]
        assert st.audit_log(1)[0]["action"] == "messages.answer"
    finally:
        st.close()
    after = counts(path)
    assert all(after[t] >= n for t, n in before.items())


def test_a_database_of_the_previous_release_gains_the_message_tables_and_keeps_its_answers(
        tmp_path):
    """Written by the release before this one (schema version 2, see the fixture's first
    line): only migration 3 runs; the answer it held is still there, and the new tables
    (index, forwards, answers under review, reminders) take records."""
    path = load(DATA / "version2-42b997a.sql", tmp_path / "state.db")
    st = State(path)
    try:
        assert st.upgraded == list(range(3, SCHEMA_VERSION + 1))
        [a] = st.message_answers("jiaoyu")
        assert (a["number"], a["answer"], a["publish"]) == ("JY-20261205-1-000001", "已修复。",
                                                             True)
        st.index_messages([{"number": "JY-20261206-1-000002", "unit": "jiaoyu",
                            "received": "2026-12-06T01:00:00Z", "subject": "路灯"}])
        st.add_route("JY-20261206-1-000002", "jiaoyu", "wenlv", "旅游景区的事", "li")
        assert st.routes()["JY-20261206-1-000002"][-1]["to_unit"] == "wenlv"
        assert st.notice_once("JY-20261206-1-000002", "remind")
        assert not st.notice_once("JY-20261206-1-000002", "remind")
    finally:
        st.close()
    assert layout(path) == layout(load_new(tmp_path / "new.db"))


def load_new(path: Path) -> Path:
    State(path).close()
    return path
