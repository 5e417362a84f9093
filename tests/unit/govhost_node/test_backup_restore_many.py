"""A replaced node's upload areas and PHP files/ from the backup, many units in one call
(`govhost-backup restore-many`), with the real restic on a local repository (the node reaches
the repository over SFTP; the lab's machine test of `node replace` goes that way): each unit
gets its own snapshot's trees and nothing else, what was there is kept beside the restore,
and one unit that cannot be restored is its own failed line while the others go on."""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil

import pytest

from govhost_node import backup
from tests.unit.govhost_node.restic_node import night, point_at_repository

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")
PASSWORD = "pw-for-restore-many"


@pytest.fixture
def node(tmp_path, monkeypatch):
    sites = tmp_path / "sites"
    homes = {}
    for t in ("jiaoyu", "wenlv", "renshe"):
        home = homes[t] = sites / t
        (home / "releases" / "r1").mkdir(parents=True)
        (home / "releases" / "r1" / "index.html").write_text(f"<h1>{t}</h1>")
        (home / "current").symlink_to("releases/r1")
        (home / "upload" / "草稿").mkdir(parents=True)
        (home / "upload" / "草稿" / "通知.html").write_text(f"{t} 未发布")
        (home / "files").mkdir()
        (home / "files" / "up.txt").write_text(f"{t} 网站自己写的")
    point_at_repository(tmp_path, monkeypatch, homes, PASSWORD, node="n3")
    monkeypatch.setattr(backup, "SITES", str(sites))
    monkeypatch.setattr(backup, "RESTORE", str(tmp_path / "restore"))
    return {"homes": homes, "tmp": tmp_path}


def _snapshot_ids(capsys) -> dict[str, str]:
    return {t: r["snapshot"] for t, r in night(capsys).items()}


def _restore_many(monkeypatch, capsys, wants: list) -> dict[str, dict]:
    text = "".join((w if isinstance(w, str) else json.dumps(w)) + "\n" for w in wants)
    monkeypatch.setattr(backup.sys, "stdin", io.StringIO(text))
    backup.restore_many(argparse.Namespace(jobs=2))
    return {r["tenant"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


def _wipe(home) -> None:
    """The replaced node: releases back from peers, empty upload area and files/."""
    for d in ("upload", "files"):
        shutil.rmtree(home / d)
        (home / d).mkdir()


def test_each_unit_gets_its_own_trees_and_nothing_more(node, monkeypatch, capsys):
    snaps = _snapshot_ids(capsys)
    homes = node["homes"]
    for home in homes.values():
        _wipe(home)
    (homes["jiaoyu"] / "upload" / "新的.html").write_text("replace 之后才写的")
    out = _restore_many(monkeypatch, capsys, [
        {"tenant": "jiaoyu", "snapshot": snaps["jiaoyu"], "upload": True},
        {"tenant": "wenlv", "snapshot": snaps["wenlv"], "upload": True, "php_files": True}])
    assert set(out) == {"jiaoyu", "wenlv"} and all(r["ok"] for r in out.values()), out
    for t in ("jiaoyu", "wenlv"):
        assert (homes[t] / "upload" / "草稿" / "通知.html").read_text() == f"{t} 未发布"
        # only the trees swapped in were restored (and moved in): no release, no `current`
        assert os.listdir(out[t]["dir"] + str(homes[t])) == [], t
        assert out[t]["release"] is None
    assert (homes["wenlv"] / "files" / "up.txt").read_text() == "wenlv 网站自己写的"
    assert out["wenlv"]["php_files"] == "restored" and "php_files" not in out["jiaoyu"]
    assert not (homes["jiaoyu"] / "files" / "up.txt").exists()       # not asked for
    assert os.listdir(homes["renshe"] / "upload") == []                # not asked for
    # what was there is kept beside the restore, not lost
    kept = os.path.join(out["jiaoyu"]["upload_before"], "新的.html")
    assert open(kept, encoding="utf-8").read() == "replace 之后才写的"


def test_one_unit_that_cannot_be_restored_fails_alone(node, monkeypatch, capsys):
    snaps = _snapshot_ids(capsys)
    homes = node["homes"]
    for home in homes.values():
        _wipe(home)
    out = _restore_many(monkeypatch, capsys, [
        {"tenant": "jiaoyu", "snapshot": "0123456789abcdef", "upload": True},   # no such
        {"tenant": "wenlv", "snapshot": snaps["wenlv"], "upload": True}])
    assert not out["jiaoyu"]["ok"] and "0123456" in out["jiaoyu"]["error"], out["jiaoyu"]
    assert out["wenlv"]["ok"]
    assert os.listdir(homes["jiaoyu"] / "upload") == []
    assert (homes["wenlv"] / "upload" / "草稿" / "通知.html").exists()


@pytest.mark.parametrize("line", [
    '{"tenant": "../etc", "snapshot": "0123456789abcdef", "upload": true}',
    '{"tenant": "jiaoyu", "snapshot": "$(reboot)", "upload": true}',
    '{"tenant": "jiaoyu"}',
    "not json",
])
def test_a_bad_line_refuses_the_whole_list_before_anything_is_touched(node, monkeypatch,
                                                                     capsys, line):
    snaps = _snapshot_ids(capsys)
    homes = node["homes"]
    _wipe(homes["wenlv"])
    with pytest.raises(SystemExit):
        _restore_many(monkeypatch, capsys, [
            {"tenant": "wenlv", "snapshot": snaps["wenlv"], "upload": True}, line])
    assert os.listdir(homes["wenlv"] / "upload") == []
    assert not os.path.exists(backup.RESTORE) or os.listdir(backup.RESTORE) == []


@pytest.fixture
def watched_restic(tmp_path, monkeypatch):
    """The real restic behind a wrapper first on PATH that writes each call's arguments to a
    log, and that makes a lock-free restore fail, after it wrote part of its files, while
    the file `fail-unlocked` exists. That failure stands in for a `prune` removing a pack
    the restore still reads: a race this test cannot time with the real prune."""
    real = shutil.which("restic")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, marker = tmp_path / "restic-calls", tmp_path / "fail-unlocked"
    locked = tmp_path / "locked-tries"
    wrapper = bin_dir / "restic"
    wrapper.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        'if [[ " $* " == *" restore "* && " $* " == *" --no-lock "* ]] '
        f"&& [ -e {marker} ]; then\n"
        f'  {real} "$@" >/dev/null 2>&1\n'
        '  echo "Fatal: There were 1 errors" >&2; exit 1\n'
        "fi\n"
        'if [[ " $* " == *" restore "* && " $* " != *" --no-lock "* ]] '
        f"&& [ -s {locked} ] && [ $(cat {locked}) -gt 0 ]; then\n"
        f"  echo $(( $(cat {locked}) - 1 )) > {locked}\n"
        '  echo "Fatal: unable to create lock in backend: repository is already locked '
        'exclusively by PID 4242 on backup by root (UID 0, GID 0)" >&2; exit 1\n'
        "fi\n"
        f'exec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(backup, "RESTORE_LOCK_PAUSE", 0.01)
    monkeypatch.setattr(backup, "_lock_wait", {})         # a new process's wait
    return {"log": log, "marker": marker, "locked": locked}


def _restores(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.split()[:1] != ["snapshots"]
            and " restore " in f" {line} "]


def test_restores_read_without_the_repository_lock(node, watched_restic, monkeypatch, capsys):
    """Taking and dropping restic's lock was most of a small restore's time (0.28 s of it
    over SFTP on the lab, 0.06 s without): each restore reads without it first."""
    snaps = _snapshot_ids(capsys)
    homes = node["homes"]
    for home in homes.values():
        _wipe(home)
    watched_restic["log"].write_text("")
    out = _restore_many(monkeypatch, capsys, [
        {"tenant": t, "snapshot": snaps[t], "upload": True} for t in ("jiaoyu", "wenlv")])
    assert all(r["ok"] for r in out.values()), out
    calls = _restores(watched_restic["log"])
    assert len(calls) == 2 and all("--no-lock" in c.split() for c in calls), calls
    for t in ("jiaoyu", "wenlv"):
        assert (homes[t] / "upload" / "草稿" / "通知.html").read_text() == f"{t} 未发布"


def test_a_lock_free_restore_that_fails_is_tried_again_under_the_lock(node, watched_restic,
                                                                     monkeypatch, capsys):
    snaps = _snapshot_ids(capsys)
    homes = node["homes"]
    _wipe(homes["jiaoyu"])
    watched_restic["log"].write_text("")
    watched_restic["marker"].touch()
    out = _restore_many(monkeypatch, capsys, [
        {"tenant": "jiaoyu", "snapshot": snaps["jiaoyu"], "upload": True}])
    assert out["jiaoyu"]["ok"], out
    calls = [c.split() for c in _restores(watched_restic["log"])]
    assert [("--no-lock" in c) for c in calls] == [True, False], calls
    assert (homes["jiaoyu"] / "upload" / "草稿" / "通知.html").read_text() == "jiaoyu 未发布"
    # the second try restored into an emptied directory: only what the snapshot holds
    assert sorted(os.listdir(homes["jiaoyu"] / "upload")) == ["草稿"]


def test_the_try_under_the_lock_waits_for_an_exclusive_lock_to_go(node, watched_restic,
                                                                  monkeypatch, capsys):
    """A prune holds the repository exclusively: the second try waits (restic 0.14 refuses
    at once) and restores when the lock is gone."""
    snaps = _snapshot_ids(capsys)
    homes = node["homes"]
    _wipe(homes["jiaoyu"])
    watched_restic["log"].write_text("")
    watched_restic["marker"].touch()
    watched_restic["locked"].write_text("3")
    out = _restore_many(monkeypatch, capsys, [
        {"tenant": "jiaoyu", "snapshot": snaps["jiaoyu"], "upload": True}])
    assert out["jiaoyu"]["ok"], out
    calls = [c.split() for c in _restores(watched_restic["log"])]
    assert [("--no-lock" in c) for c in calls] == [True, False, False, False, False], calls
    assert (homes["jiaoyu"] / "upload" / "草稿" / "通知.html").read_text() == "jiaoyu 未发布"


def test_a_lock_that_stays_is_waited_for_a_bounded_time(node, watched_restic, monkeypatch,
                                                         capsys):
    snaps = _snapshot_ids(capsys)
    _wipe(node["homes"]["jiaoyu"])
    watched_restic["marker"].touch()
    watched_restic["locked"].write_text("1000")
    monkeypatch.setattr(backup, "RESTORE_LOCK_WAIT", 0.2)
    out = _restore_many(monkeypatch, capsys, [
        {"tenant": "jiaoyu", "snapshot": snaps["jiaoyu"], "upload": True}])
    assert not out["jiaoyu"]["ok"] and "already locked" in out["jiaoyu"]["error"], out
    # the first try's reason is kept beside the lock's
    assert "There were 1 errors" in out["jiaoyu"]["error"], out
    assert os.listdir(node["homes"]["jiaoyu"] / "upload") == []


def test_units_waiting_for_a_lock_share_one_wait(node, watched_restic, monkeypatch, capsys):
    """Units behind a lock that stays, one after another: together they wait one
    RESTORE_LOCK_WAIT, not one each (at 200 units a call, each its own 30 minutes would be
    days). The first tries twice (0.2 s apart, the wait 0.3 s); the second starts after the
    wait is over and tries once, where a wait of its own would give it two tries too."""
    snaps = _snapshot_ids(capsys)
    for home in node["homes"].values():
        _wipe(home)
    watched_restic["marker"].touch()
    watched_restic["locked"].write_text("1000")
    monkeypatch.setattr(backup, "RESTORE_LOCK_WAIT", 0.3)
    monkeypatch.setattr(backup, "RESTORE_LOCK_PAUSE", 0.2)
    watched_restic["log"].write_text("")
    first, second = "jiaoyu", "wenlv"
    text = "".join(json.dumps({"tenant": t, "snapshot": snaps[t], "upload": True}) + "\n"
                   for t in (first, second))
    monkeypatch.setattr(backup.sys, "stdin", io.StringIO(text))
    backup.restore_many(argparse.Namespace(jobs=1))
    out = {r["tenant"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert not out[first]["ok"] and not out[second]["ok"], out
    locked = [c for c in _restores(watched_restic["log"]) if "--no-lock" not in c.split()]
    tries = {t: sum(snaps[t] in c for c in locked) for t in (first, second)}
    assert tries == {first: 2, second: 1}, tries
