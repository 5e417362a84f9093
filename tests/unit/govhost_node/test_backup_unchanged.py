"""A night's backup in proportion to change (issue 37), with the real restic on a local
repository: a unit's files tree unchanged since its last snapshot makes no new snapshot (the
result says `unchanged` and names the one that holds it, and the status is fresh); any write,
chmod, rename, a modification time set back, a new live release, a repository made again,
a tag or --always make one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from govhost_node import backup
from tests.unit.govhost_node.restic_node import night, point_at_repository

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")
PASSWORD = "pw-for-unchanged"


def _tree(home) -> None:
    (home / "releases" / "r1").mkdir(parents=True)
    (home / "releases" / "r2").mkdir()
    (home / "releases" / "r1" / "index.html").write_text("<h1>一</h1>")
    (home / "releases" / "r2" / "index.html").write_text("<h1>二</h1>")
    (home / "current").symlink_to("releases/r1")
    (home / "upload").mkdir()
    (home / "upload" / "a.txt").write_text("甲")
    (home / "var").mkdir()
    (home / "var" / "cache").write_text("not backed up")


@pytest.fixture
def node(tmp_path, monkeypatch):
    homes = {}
    for t in ("jiaoyu", "wenlv"):
        homes[t] = tmp_path / "sites" / t
        _tree(homes[t])
    repo = point_at_repository(tmp_path, monkeypatch, homes, PASSWORD)
    return {"repo": repo, "homes": homes, "tmp": tmp_path}


def _snapshots(repo) -> int:
    out = subprocess.run(["restic", "-r", str(repo), "snapshots", "--json", "--no-lock"],
                         capture_output=True, check=True,
                         env={**os.environ, "RESTIC_PASSWORD": PASSWORD}).stdout
    return len(json.loads(out))


def test_an_unchanged_tree_makes_no_snapshot_and_its_status_stays_fresh(node, capsys):
    first = night(capsys)
    assert all(r["ok"] and not r.get("unchanged") for r in first.values())
    assert _snapshots(node["repo"]) == 2
    second = night(capsys)
    assert all(r["ok"] and r["unchanged"] for r in second.values()), second
    assert {t: r["snapshot"] for t, r in second.items()} == \
        {t: r["snapshot"] for t, r in first.items()}
    assert _snapshots(node["repo"]) == 2
    status = json.loads(open(backup.STATUS).read())
    assert status["jiaoyu"]["files"]["last_success"] == second["jiaoyu"]["finished_at"]


@pytest.mark.parametrize("change", ["write", "chmod", "mtime_set_back", "rename", "release"])
def test_every_kind_of_change_makes_a_snapshot_of_that_unit_only(node, capsys, change):
    night(capsys)
    home = node["homes"]["jiaoyu"]
    f = home / "upload" / "a.txt"
    before = os.stat(f)
    if change == "write":
        f.write_text("乙")                       # same size
    elif change == "chmod":
        f.chmod(0o600)
    elif change == "mtime_set_back":             # what `touch -d` over SFTP can do
        f.write_text("丙")
        os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "rename":
        f.rename(home / "upload" / "b.txt")
    elif change == "release":
        (home / "current").unlink()
        (home / "current").symlink_to("releases/r2")
    again = night(capsys)
    assert not again["jiaoyu"].get("unchanged") and again["jiaoyu"]["ok"], again["jiaoyu"]
    assert again["wenlv"]["unchanged"]
    assert _snapshots(node["repo"]) == 3


def test_what_restic_leaves_out_changes_nothing(node, capsys):
    """var/ and the releases that are not live are not in the snapshot."""
    night(capsys)
    home = node["homes"]["jiaoyu"]
    (home / "var" / "cache").write_text("changed")
    (home / "releases" / "r2" / "index.html").write_text("<h1>改</h1>")
    assert night(capsys)["jiaoyu"]["unchanged"]


def test_a_tag_always_or_a_new_repository_makes_a_snapshot(node, capsys):
    night(capsys)
    assert not any(r.get("unchanged") for r in night(capsys, "reason=pre-restore").values())
    assert not any(r.get("unchanged") for r in night(capsys, always=True).values())
    assert _snapshots(node["repo"]) == 6
    shutil.rmtree(node["repo"])                  # the backup node's disk replaced, say
    subprocess.run(["restic", "-r", str(node["repo"]), "init"], check=True,
                   capture_output=True, env={**os.environ, "RESTIC_PASSWORD": PASSWORD})
    fresh = night(capsys)
    assert not any(r.get("unchanged") for r in fresh.values()) and \
        all(r["ok"] for r in fresh.values())
    assert _snapshots(node["repo"]) == 2


def test_a_failed_snapshot_is_not_taken_for_one_that_holds_the_tree(node, capsys,
                                                                    monkeypatch):
    night(capsys)
    (node["homes"]["jiaoyu"] / "upload" / "a.txt").write_text("丁")

    def broken(*a, **k):
        raise backup.BackupError("restic exit 1 (fatal error (nothing saved)): test")
    monkeypatch.setattr(backup, "_backup", broken)
    with pytest.raises(SystemExit):
        night(capsys)
    capsys.readouterr()
    monkeypatch.undo()
    monkeypatch.setattr(backup, "SPEC", str(node["tmp"] / "backup.json"))
    monkeypatch.setattr(backup, "STATE", str(node["tmp"] / "state"))
    monkeypatch.setattr(backup, "STATUS", str(node["tmp"] / "state" / "status.json"))
    again = night(capsys)
    assert not again["jiaoyu"].get("unchanged") and again["jiaoyu"]["ok"]


def test_a_snapshot_removed_from_the_repository_is_not_taken_to_hold_the_tree(node, capsys):
    """Retention or an operator removed the snapshot the status names: the next run makes
    one again instead of naming a snapshot that is gone."""
    first = night(capsys)
    gone = first["jiaoyu"]["snapshot"]
    subprocess.run(["restic", "-r", str(node["repo"]), "forget", gone], check=True,
                   capture_output=True, env={**os.environ, "RESTIC_PASSWORD": PASSWORD})
    again = night(capsys)
    assert not again["jiaoyu"].get("unchanged") and again["jiaoyu"]["snapshot"] != gone
    assert again["wenlv"]["unchanged"]


def test_a_night_reads_the_status_once_and_writes_it_once_with_every_result(
        tmp_path, monkeypatch, capsys):
    """Before stop 64 each job read status.json whole for its last result and read and wrote
    it whole again for its new one: 154 s a night at 3,333 jobs. Counted, not timed: the
    file opened for reading twice (the run's start, the merge under the lock) and written
    once (results merge every FLUSH_SECONDS, here longer than the night, and at its end)."""
    homes = {}
    for i in range(12):
        homes[f"unit{i:02d}"] = tmp_path / "sites" / f"unit{i:02d}"
        _tree(homes[f"unit{i:02d}"])
    point_at_repository(tmp_path, monkeypatch, homes, PASSWORD)
    night(capsys)
    monkeypatch.setattr(backup._StatusFile, "FLUSH_SECONDS", 3600.0)
    reads, writes = [], []

    def counted_open(path, mode="r", *a, **k):
        if str(path) == backup.STATUS:
            reads.append(path)
        elif str(path).startswith(backup.STATUS) and "w" in mode:
            writes.append(path)
        return open(path, mode, *a, **k)
    monkeypatch.setattr(backup, "open", counted_open, raising=False)
    second = night(capsys)
    assert len(second) == 12 and all(r["ok"] and r["unchanged"] for r in second.values())
    assert (len(reads), len(writes)) == (2, 1)
    status = json.loads(open(backup.STATUS).read())
    assert {t: status[t]["files"]["last_success"] for t in homes} == \
        {t: r["finished_at"] for t, r in second.items()}


def test_results_are_merged_while_the_night_runs_and_a_later_one_stands(tmp_path,
                                                                       monkeypatch):
    """The timer merges what waits (a run killed later keeps it); a result another run at
    once recorded later than ours is not overwritten by ours."""
    monkeypatch.setattr(backup, "STATE", str(tmp_path))
    monkeypatch.setattr(backup, "STATUS", str(tmp_path / "status.json"))
    monkeypatch.setattr(backup._StatusFile, "FLUSH_SECONDS", 0.05)
    status = backup._StatusFile()
    try:
        result = {"finished_at": 100.0, "ok": False, "error": "restic: boom", "seconds": 1.0}
        status.record("jiaoyu", "files", result)
        for _ in range(200):
            if (tmp_path / "status.json").exists():
                break
            status._stop.wait(0.05)
        assert json.loads((tmp_path / "status.json").read_text())["jiaoyu"]["files"][
            "last_error"] == "restic: boom"
        backup._merge_status({("jiaoyu", "files"): {    # another run's, later, a success
            "finished_at": 200.0, "ok": True, "snapshot": "s2", "seconds": 1.0}})
        status.record("jiaoyu", "files", {**result, "finished_at": 150.0})
    finally:
        status.flush()
    entry = json.loads((tmp_path / "status.json").read_text())["jiaoyu"]["files"]
    assert (entry["last_attempt"], entry["last_error"], entry["snapshot"]) == (200.0, "", "s2")
    # a success of ours older than another run's failure is still the latest success
    backup._merge_status({("wenlv", "files"): {"finished_at": 300.0, "ok": False,
                                               "error": "by hand: boom", "seconds": 1.0}})
    backup._merge_status({("wenlv", "files"): {"finished_at": 250.0, "ok": True,
                                               "snapshot": "s9", "seconds": 1.0}})
    entry = json.loads((tmp_path / "status.json").read_text())["wenlv"]["files"]
    assert (entry["last_attempt"], entry["last_error"], entry["last_success"],
            entry["snapshot"]) == (300.0, "by hand: boom", 250.0, "s9")


def test_the_last_merge_waits_for_the_timers_merge_under_way(tmp_path, monkeypatch):
    """flush() must not return while the timer is in the middle of merging what it took:
    the process would exit and those results never reach the file."""
    import threading
    monkeypatch.setattr(backup, "STATE", str(tmp_path))
    monkeypatch.setattr(backup, "STATUS", str(tmp_path / "status.json"))
    monkeypatch.setattr(backup._StatusFile, "FLUSH_SECONDS", 0.01)
    merging, release = threading.Event(), threading.Event()
    real = backup._merge_status

    def slow(results):
        merging.set()
        release.wait(5)
        real(results)
    monkeypatch.setattr(backup, "_merge_status", slow)
    status = backup._StatusFile()
    status.record("jiaoyu", "files", {"finished_at": 1.0, "ok": False, "error": "x",
                                      "seconds": 0.0})
    assert merging.wait(5)                     # the timer took it and is merging
    done = threading.Event()
    threading.Thread(target=lambda: (status.flush(), done.set()), daemon=True).start()
    assert not done.wait(0.3)                   # flush waits for it
    release.set()
    assert done.wait(5)
    assert json.loads((tmp_path / "status.json").read_text())["jiaoyu"]["files"][
        "last_error"] == "x"
