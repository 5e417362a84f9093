"""`restore_replicas` (a replaced node's upload areas, PHP files/ and databases from the
backup), the control machine's side: the node stands in here by what its `restore-many`
and `restore-db` print (the node's side runs with the real restic in
tests/unit/govhost_node/test_backup_restore_many.py, and the whole over SSH in the lab's
node replacement). One unit's trouble is its own: a lock another restore holds, a unit
with no snapshot, a call to the node that broke off after some units were restored, a
database whose files could not come back."""
from __future__ import annotations

import contextlib
import json
import subprocess
import types

import pytest

from controlplane.backup import run as backup

RUN = "20261206T020000"


def _snap(t: str, kind: str, n: int) -> dict:
    return {"id": f"{n:064x}", "short_id": f"{n:08x}", "time": "2026-12-06T02:00:00Z",
            "tags": [f"tenant={t}", f"kind={kind}", f"run={RUN}"]}


@pytest.fixture
def county(tmp_path, monkeypatch):
    calls: list[tuple] = []
    node = types.SimpleNamespace(name="n3")
    state = types.SimpleNamespace(audit=lambda *a: calls.append(("audit", a[1])))
    cluster = types.SimpleNamespace(nodes={"n3": node}, state=state)
    monkeypatch.setattr(backup, "cluster", lambda county: contextlib.nullcontext(cluster))
    snaps = [_snap("aaa", "files", 1), _snap("bbb", "files", 2), _snap("ccc", "files", 3),
             _snap("ccc", "db", 4)]
    monkeypatch.setattr(backup, "_snapshots", lambda c, t: snaps)
    c = types.SimpleNamespace(state_dir=tmp_path, calls=calls, printed={})

    def node_call(cl, n, *args, check=True, stdin=None, timeout=0):
        calls.append(args)
        if args[0] == "restore-many":
            asked = [json.loads(x)["tenant"] for x in stdin.splitlines()]
            out = "".join(json.dumps({"tenant": t, "ok": True, "upload": "restored"}) + "\n"
                          for t in asked if t in c.printed.get("ok", asked))
            return subprocess.CompletedProcess(args, c.printed.get("rc", 0), out,
                                               "ssh: connection reset")
        if args[0] == "restore-db":
            return subprocess.CompletedProcess(args, 0, json.dumps({"rows": {"t": 3}}), "")
        raise AssertionError(args)

    monkeypatch.setattr(backup, "_node", node_call)
    county_obj = types.SimpleNamespace(state_dir=tmp_path,
                                       exclusive=lambda name, busy, mode=0: _lock(tmp_path,
                                                                                  name, busy))
    c.obj = county_obj
    return c


def _lock(tmp_path, name, busy):
    from controlplane.core.state import exclusive
    return exclusive(tmp_path, name, busy, 0o600)


WANTS = {"aaa": backup.ReplicaWant(upload=True), "bbb": backup.ReplicaWant(upload=True),
         "ccc": backup.ReplicaWant(upload=True, database=True),
         "ddd": backup.ReplicaWant(upload=True)}


def test_each_unit_is_restored_in_one_call_and_a_unit_without_a_snapshot_fails_alone(county):
    out = {r["tenant"]: r for r in backup.restore_replicas(county.obj, "n3", WANTS)}
    assert [a[0] for a in county.calls if isinstance(a, tuple) and a[0] != "audit"] == \
        ["restore-many", "restore-db"]
    assert all(out[t]["upload"]["restored"] for t in ("aaa", "bbb", "ccc"))
    assert out["ccc"]["database"]["rows"] == 3
    assert "no snapshot" in out["ddd"]["error"]


def test_a_call_that_broke_off_keeps_what_the_node_did_and_the_databases(county):
    county.printed = {"ok": ["aaa"], "rc": 255}       # the node printed aaa, then SSH broke
    out = {r["tenant"]: r for r in backup.restore_replicas(county.obj, "n3", WANTS)}
    assert out["aaa"]["upload"]["restored"] and "error" not in out["aaa"]
    assert "connection reset" in out["bbb"]["error"] and "upload" not in out["bbb"]
    assert out["ccc"]["database"]["rows"] == 3 and "connection reset" in out["ccc"]["error"]


def test_a_unit_another_restore_holds_fails_alone(county, tmp_path):
    with backup._lock(county.obj, "restore-bbb"):
        out = {r["tenant"]: r for r in backup.restore_replicas(county.obj, "n3", WANTS)}
    assert "another backup restore-bbb" in out["bbb"]["error"], out["bbb"]
    assert out["aaa"]["upload"]["restored"] and out["ccc"]["upload"]["restored"]


def test_many_units_are_restored_a_batch_at_a_time(county, monkeypatch):
    """Each batch holds its units' locks (one open file each) only while it runs."""
    monkeypatch.setattr(backup, "REPLICA_BATCH", 2)
    out = backup.restore_replicas(county.obj, "n3", WANTS)
    assert sum(1 for a in county.calls if a[0] == "restore-many") == 2
    assert sorted(r["tenant"] for r in out) == sorted(WANTS)


def test_each_unit_is_chosen_among_its_own_snapshots_only(county, monkeypatch):
    """Before stop 64 every unit was chosen among all of the county's snapshots (0.44 s a
    unit at 60,000). Counted, not timed: the tags of each snapshot are read a few times in
    all, not a few times a unit."""
    from controlplane.backup import plan as backup_plan
    many = [_snap(f"u{i:03d}", kind, 2 * i + (kind == "db"))
            for i in range(40) for kind in ("files", "db")]
    monkeypatch.setattr(backup, "_snapshots", lambda c, t: many)
    read = []
    real = backup_plan.tags
    monkeypatch.setattr(backup_plan, "tags", lambda s: read.append(1) or real(s))
    wants = {f"u{i:03d}": backup.ReplicaWant(upload=True) for i in range(40)}
    out = backup.restore_replicas(county.obj, "n3", wants)
    assert sorted(r["tenant"] for r in out) == sorted(wants)
    assert all(r["upload"]["restored"] for r in out), out[:3]
    assert len(read) < 10 * len(many), len(read)
