"""What runs every few seconds reads the county's newest rows, not its history: a probe
round's record and clean-up, the exporter's scrape, the console's overview. Counted in
SQLite's own steps (its progress handler), so the test fails on code that scans the
history, whatever the host's speed; and the indexed answers checked against the plain
definition on random rounds and releases."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.compliance import rules
from controlplane.core.state import SCHEMA_VERSION, State

from .test_state_schema import DATA, layout, load, load_new

DAY = 86400


@pytest.fixture
def utc(monkeypatch):
    """Local days and weeks are the host's: the fixture was written in UTC (and a history
    written back from now by days meets a day twice after the clocks go back)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(params=["UTC", "Europe/Berlin", "Asia/Kolkata"])
def zone(request, monkeypatch):
    """A zone without clock changes, one with them, one half an hour off the hour."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def steps(db: sqlite3.Connection, fn) -> int:
    """SQLite's virtual machine steps (in hundreds) that `fn` takes."""
    n = [0]

    def tick() -> int:
        n[0] += 1
        return 0
    db.set_progress_handler(tick, 100)
    try:
        fn()
    finally:
        db.set_progress_handler(None, 0)
    return n[0]


def history(st: State, units: int, days: int, now: float) -> None:
    """`days` days of what a county keeps, before `now`: probe hours (ten weeks at most)
    and days, a release a unit a day, a compliance week a week."""
    names = [f"unit{i:03d}" for i in range(units)]
    hour = now - now % 3600
    with st.tx() as db:
        db.executemany("INSERT INTO probe_hours VALUES (?, ?, 120, 0)",
                       [(n, hour - h * 3600) for n in names
                        for h in range(1, min(days, 70) * 24 + 1)])
        db.executemany("INSERT INTO probe_days VALUES (?, ?, 2880, 0)",
                       [(n, time.strftime("%Y-%m-%d", time.localtime(now - d * DAY)))
                        for n in names for d in range(1, days + 1)])
        db.executemany("INSERT INTO content_releases (tenant, release_id, status, "
                       "published_at, actor, files, bytes, nodes, changes) VALUES "
                       "(?, ?, ?, ?, 'li', 3, 300, '[]', '{}')",
                       [(n, f"r{d:04d}", "live" if d == 1 else "superseded", now - d * DAY)
                        for n in names for d in range(1, days + 1)])
        db.executemany("INSERT INTO compliance VALUES (?, ?, ?, '{}')",
                       [(f"w{d:04d}", n, now - d * DAY) for n in names
                        for d in range(1, days + 1, 7)])
        db.executemany("INSERT INTO wording_files VALUES (?, 'L1', '[]')",
                       [(f"{n}-{d}",) for n in names for d in range(1, days + 1)])
        db.executemany("INSERT INTO audit (ts, actor, action, target, detail) VALUES "
                       "(?, 'li', 'content.publish', ?, '{}')",
                       [(now - d * DAY, n) for n in names for d in range(1, days + 1)])


def everyday_steps(tmp_path: Path, days: int) -> dict[str, int]:
    now = time.time()
    st = State(tmp_path / f"{days}.db")
    try:
        history(st, 40, days, now)
        names = [f"unit{i:03d}" for i in range(40)]
        w0, _ = rules.week_bounds(rules.week_of(now))
        return {
            "round": steps(st.db, lambda: st.record_probe_round(now, {n: [] for n in names})),
            "week counts": steps(st.db, lambda: st.probe_week_counts(names, w0, now + 1)),
            "last published": steps(st.db, lambda: st.last_published(names)),
            "pending": steps(st.db, lambda: st.content_releases(status="pending")),
            "live releases": steps(st.db, st.live_releases),
            "latest compliance": steps(st.db, st.compliance),
            "wording cache": steps(st.db, lambda: st.wording_cache("L1", {"new": []})),
            "account ties": steps(st.db, lambda: st.account_ties(names[:3], now - 30 * DAY)),
        }
    finally:
        st.close()


def test_the_everyday_reads_and_writes_do_not_grow_with_the_history(tmp_path, utc):
    """Two months of history against two days, 40 units: before the indexes each of these
    read every row (probe hours and days, releases, compliance weeks, the wording cache,
    the audit log), 20-60x the steps."""
    short, long = everyday_steps(tmp_path, 2), everyday_steps(tmp_path, 60)
    for what, n in long.items():
        assert n <= 2 * short[what] + 5, (what, short[what], n)


def test_a_database_of_the_previous_release_gains_the_indexes_and_answers_as_before(
        tmp_path, utc):
    """Written by the release before (schema version 3, see the fixture's first line): only
    the migrations from 4 on run, the rows stay, and the answers are those the release before gave on
    the same database (printed by its own code when the fixture was written)."""
    path = load(DATA / "version3-c7c2551.sql", tmp_path / "state.db")
    st = State(path)
    try:
        assert st.upgraded == list(range(4, SCHEMA_VERSION + 1))
        start, end = rules.week_bounds("2026-W49")
        assert st.probe_week_counts(["jiaoyu", "chahe"], start, end) == {
            "chahe": (7, 0), "jiaoyu": (7, 2)}
        assert st.last_published(["jiaoyu", "chahe"]) == {"jiaoyu": 1796112000.0}
        assert {t: r["week"] for t, r in st.compliance().items()} == {
            "chahe": "2026-W49", "jiaoyu": "2026-W49"}
        assert [r["release_id"] for r in st.content_releases(status="pending")] == [
            "20261203T080000-cccccc"]
    finally:
        st.close()
    assert layout(path) == layout(load_new(tmp_path / "new.db"))


STATUSES = ("pending", "rejected", "live", "superseded", "approved", "rolled-back")


@pytest.mark.parametrize("week", ["2026-W13", "2026-W43", "2026-W49"])   # Berlin's clocks
@settings(max_examples=25, deadline=None,                                  # change in W13, W43
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 21 * 24 * 60 - 1),
                                 st.booleans()), max_size=40),
       releases=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(STATUSES),
                                   st.integers(0, 10**6)), max_size=12))
def test_the_indexed_answers_are_the_plain_definition(tmp_path_factory, zone, week, rounds,
                                                      releases):
    """A week's probes are the rounds whose local time falls in it (its bounds local
    midnights, in a week the clocks change too); a unit's last publish is its newest
    release that was neither pending nor rejected; a unit asked for twice counts once."""
    names = ["a", "b", "c"]
    start, end = rules.week_bounds(week)
    monday = time.strftime("%Y-%m-%d %H:%M", time.localtime(start))
    assert monday.endswith("00:00") and time.localtime(start).tm_wday == 0
    assert time.strftime("%H:%M", time.localtime(end)) == "00:00", (zone, week)
    base = start - 7 * DAY                   # the rounds fall over W48, W49 and W50
    st_ = State(tmp_path_factory.mktemp("s") / "state.db")
    try:
        for unit, minute, failed in sorted(rounds, key=lambda r: r[1]):
            st_.record_probe_round(base + minute * 60, {names[unit]: [{"x": 1}] if failed
                                                        else []})
        want: dict[str, tuple[int, int]] = {}
        for unit, minute, failed in rounds:
            if start <= base + minute * 60 < end:
                p, f = want.get(names[unit], (0, 0))
                want[names[unit]] = (p + 1, f + failed)
        assert st_.probe_week_counts(names, start, end) == want
        assert st_.probe_week_counts(names + names, start, end) == want
        with st_.tx() as db:
            for i, (unit, status, at) in enumerate(releases):
                db.execute("INSERT INTO content_releases (tenant, release_id, status, "
                           "published_at, actor, files, bytes, nodes, changes) VALUES "
                           "(?, ?, ?, ?, 'li', 1, 1, '[]', '{}')",
                           (names[unit], f"r{i:03d}", status, float(at)))
        last: dict[str, float] = {}
        for unit, status, at in releases:
            if status not in ("pending", "rejected"):
                last[names[unit]] = max(last.get(names[unit], 0.0), float(at))
        assert st_.last_published(names) == last
        assert st_.last_published(["b"]) == {k: v for k, v in last.items() if k == "b"}
    finally:
        st_.close()


def test_the_live_release_ids_are_those_of_the_live_rows(tmp_path, utc):
    """Stop 66: a unit page, `govhost status`, a probe round's drift check and a backup
    check read each unit's live release id alone; before, every live release's row was
    read with its file lists decoded (1.8 s at 5,000 units of 200 files)."""
    st = State(tmp_path / "s.db")
    try:
        history(st, 12, 20, time.time())
        with st.tx() as db:       # a unit that never went live, and one rolled back
            db.execute("UPDATE content_releases SET status = 'pending' WHERE tenant = "
                       "'unit003'")
            db.execute("UPDATE content_releases SET status = CASE release_id WHEN 'r0005' "
                       "THEN 'live' ELSE 'superseded' END WHERE tenant = 'unit004'")
        want = {r["tenant"]: r["release_id"] for r in st.content_releases(status="live")}
        assert st.live_releases() == want and "unit003" not in want
        assert want["unit004"] == "r0005"
        for unit in ("unit004", "unit003", "nobody"):
            assert st.live_releases(unit) == {k: v for k, v in want.items() if k == unit}
        plan = " ".join(str(r) for r in st.db.execute(
            "EXPLAIN QUERY PLAN SELECT tenant, release_id FROM content_releases "
            "WHERE tenant = ? AND +status = 'live' ORDER BY release_id", ("unit004",)))
        assert "(tenant=?)" in plan and "status" not in plan, plan   # the unit's rows only
    finally:
        st.close()
