"""A node that lacks most units (new, replaced, its index dropped for a new version) gets the
master index whole (`govhost-search load`), the others only the changes; with the real
`govhost-search` of each "node" run here (over SSH on the lab), real SQLite and jieba. A
copy that is damaged, cut short or of another version changes nothing on the node."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from controlplane.core import paths
from controlplane.search import index, pages
from controlplane.sites import content_sync
from govhost_node import search as node_search

REPO = Path(__file__).resolve().parents[3]
UNITS = [f"unit{i:02d}" for i in range(6)]


class SearchLink(content_sync.Link):
    """Each node's `govhost-search` on an index under the test's directory, without SSH."""

    def __init__(self, base: Path) -> None:
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "calls", [])

    def argv(self, node: str, *args: str, tool: str = content_sync.TOOL) -> list[str]:
        assert tool == paths.NODE_SEARCH_TOOL
        self.calls.append((node, args[0]))
        driver = ("import sys; from govhost_node import search; "
                  "sys.argv = ['govhost-search', sys.argv[1], '--db', sys.argv[2]]; "
                  "search.main()")
        return [sys.executable, "-c", driver, args[0], str(self.base / node / "index.db")]


def _change(unit: str, release: str, base: str | None, n: int = 3) -> dict:
    put = [pages.record(f"{unit}.qingshui.gov.cn", f"p{j}.html", f"{unit}-{release}-{j}",
                        f"<title>{unit} 通知 {j}</title><p>{unit} 政务公开 {release}</p>"
                        .encode(), node_search.segment) for j in range(n)]
    return {"tenant": unit, "title": unit, "release": release, "base": base, "drop": [],
            "put": put}


def _node(base: Path, node: str, changes: list[dict]) -> None:
    idx = node_search.Index(str(base / node / "index.db"))
    try:
        for c in changes:
            idx.apply(c)
    finally:
        idx.close()


def _held(base: Path, node: str) -> dict:
    idx = node_search.Index(str(base / node / "index.db"))
    try:
        return {"units": idx.releases(), "hits": idx.search("政务公开")["total"]}
    finally:
        idx.close()


@pytest.fixture
def county(tmp_path, monkeypatch):
    link = SearchLink(tmp_path)
    monkeypatch.setattr(index, "Link", lambda *a: link)
    web = [types.SimpleNamespace(name=n) for n in ("n1", "n2")]
    (tmp_path / "state" / "search").mkdir(parents=True)
    return types.SimpleNamespace(
        inv=types.SimpleNamespace(hosts=types.SimpleNamespace(web_nodes=web)),
        known_hosts=tmp_path / "known_hosts", state_dir=tmp_path / "state", link=link,
        base=tmp_path)


def test_a_node_lacking_most_units_gets_the_master_whole(county):
    words = {"words": ["政务公开"]}
    master = index.master(county)
    try:
        for c in [words, *(_change(u, "r1", None) for u in UNITS)]:
            master.apply(c)
        # n1 holds every unit at r1; n2 is new but for one stale unit the county no longer has
        _node(county.base, "n1", [words, *(_change(u, "r1", None) for u in UNITS)])
        _node(county.base, "n2", [_change("gone", "r9", None)])
        # this sync: unit00 published again
        change = _change("unit00", "r2", "r1", n=4)
        master.apply(change)
        out = index._ship(county, master, [words, change], lambda _: None)
    finally:
        master.close()
    assert out["n2"].get("index_file") and out["n2"]["sent_whole"] == UNITS
    assert out["n2"]["removed"] == ["gone"]
    assert not out["n1"].get("index_file") and out["n1"]["sent_whole"] == []
    for node in ("n1", "n2"):
        held = _held(county.base, node)
        assert held["units"] == {"unit00": "r2", **{u: "r1" for u in UNITS[1:]}}, node
        assert held["hits"] == 4 + 3 * 5, node
    assert [c for c in county.link.calls if c[0] == "n2"] == [("n2", "apply"), ("n2", "load")]
    # the copy made for it is gone
    assert sorted(p.name for p in (county.state_dir / "search").iterdir()
                  if not p.name.startswith("index.db-")) == ["index.db", "ship.lock"]


def _load(base: Path, node: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(SearchLink(base).argv(node, "load", tool=paths.NODE_SEARCH_TOOL),
                          input=data, capture_output=True, cwd=REPO)


@pytest.mark.parametrize("damage", ["cut", "garbage", "not sqlite", "version"])
def test_a_bad_copy_changes_nothing_on_the_node(tmp_path, damage):
    _node(tmp_path, "m", [_change(u, "r1", None) for u in UNITS])
    _node(tmp_path, "n2", [_change("unit00", "r7", None)])
    before = _held(tmp_path, "n2")
    src = node_search.Index(str(tmp_path / "m" / "index.db"))
    try:
        if damage == "version":
            src.db.execute("PRAGMA user_version = 99")
        packed = index._copy(src, tmp_path)
    finally:
        src.close()
    data = packed.read_bytes()
    data = {"cut": data[: len(data) // 2], "garbage": b"x" * 5000,
            "not sqlite": b"SQLite format 2\0" + b"y" * 8192, "version": data}[damage]
    r = _load(tmp_path, "n2", data)
    assert r.returncode != 0 and b"nothing changed" in r.stderr, r
    assert _held(tmp_path, "n2") == before
    assert [p.name for p in (tmp_path / "n2").iterdir() if p.name.startswith(".incoming")] == []


def test_a_good_copy_is_taken_whole(tmp_path):
    _node(tmp_path, "m", [_change(u, "r1", None) for u in UNITS])
    _node(tmp_path, "n2", [_change("unit00", "r7", None), _change("gone", "r1", None)])
    left = tmp_path / "n2" / ".incoming-left-by-a-reboot"     # a load killed long ago
    left.write_bytes(b"x" * 100)
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    src = node_search.Index(str(tmp_path / "m" / "index.db"))
    try:
        packed = index._copy(src, tmp_path)
    finally:
        src.close()
    r = _load(tmp_path, "n2", packed.read_bytes())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["held"] == {u: "r1" for u in UNITS}
    assert _held(tmp_path, "n2") == {"units": {u: "r1" for u in UNITS}, "hits": 18}
    assert sorted(p.name for p in (tmp_path / "n2").iterdir()) == ["index.db"] + \
        [f"index.db-{x}" for x in ("shm", "wal") if (tmp_path / "n2" / f"index.db-{x}").exists()]
    # the copy went in through the write-ahead log, which is emptied again
    wal = tmp_path / "n2" / "index.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_copy_that_cannot_be_made_here_sends_unit_by_unit(county, monkeypatch):
    def full_disk(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(index, "_copy", full_disk)
    master = index.master(county)
    try:
        for c in [{"words": ["政务公开"]}, *(_change(u, "r1", None) for u in UNITS)]:
            master.apply(c)
        said: list[str] = []
        out = index._ship(county, master, [{"words": ["政务公开"]}], said.append)
    finally:
        master.close()
    for node in ("n1", "n2"):
        assert not out[node].get("index_file") and out[node]["sent_whole"] == UNITS, out
        assert _held(county.base, node)["units"] == {u: "r1" for u in UNITS}
    assert sum("could not be copied" in s for s in said) == 1, said


def test_syncs_ship_one_after_another(county):
    """Another sync (another process) is shipping: this one waits for it before it sends a
    node anything, so a whole copy made before that sync's change cannot undo it."""
    import fcntl
    import threading
    master = index.master(county)
    try:
        master.apply(_change("unit00", "r1", None))
        lock = os.open(county.state_dir / "search" / "ship.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock, fcntl.LOCK_EX)
        done: list[dict] = []
        t = threading.Thread(target=lambda: done.append(
            index._ship(county, master, [], lambda _: None)))
        t.start()
        t.join(1.0)
        assert county.link.calls == [] and not done      # waiting, nothing sent
        os.close(lock)                                    # the other sync ends
        t.join(60)
        assert done and all(not r.get("error") for r in done[0].values()), done
    finally:
        master.close()


def test_a_sync_waits_for_another_a_bounded_time(county, monkeypatch):
    """A publish is not held up for a replacement's whole search step: after SHIP_WAIT it
    says to sync later (the master index has its change), and nothing is sent."""
    import fcntl
    monkeypatch.setattr(index, "SHIP_WAIT", 0.3)
    folder = county.state_dir / "search"
    left = folder / ".whole-left-by-a-killed-sync.db"      # swept by the next ship
    left.write_bytes(b"x")
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    master = index.master(county)
    try:
        master.apply(_change("unit00", "r1", None))
        lock = os.open(folder / "ship.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with pytest.raises(index.SearchError, match="govhost search sync"):
                index._ship(county, master, [], lambda _: None)
        finally:
            os.close(lock)
        assert county.link.calls == [] and left.exists()
        index._ship(county, master, [], lambda _: None)
        assert not left.exists()
    finally:
        master.close()
