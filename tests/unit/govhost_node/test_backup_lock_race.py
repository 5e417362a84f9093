"""restic 0.14's lock race, met for real: a lock listed in the repository that is gone when
restic loads it (another node's snapshot ended meanwhile) makes restic retry that load for
about 44 s. Here the vanished lock is a link to nothing in a real local repository's
`locks/`, which restic lists and then cannot open, exactly as a lock removed in between."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from govhost_node import backup

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")
PASSWORD = "pw-for-the-race"


@pytest.fixture
def county_repo(tmp_path):
    """A local repository, a site to back up, a lock that vanished, and the node's Restic."""
    repo = tmp_path / "repo"
    subprocess.run(["restic", "-r", str(repo), "init"], check=True, capture_output=True,
                   env={**os.environ, "RESTIC_PASSWORD": PASSWORD})
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>首页</p>")
    vanished = repo / "locks" / ("ab" * 32)
    vanished.symlink_to(tmp_path / "removed-meanwhile")
    restic = backup.Restic({"repository": {"local": True, "path": str(repo), "user": "root"},
                            "password": PASSWORD})
    restic.env["RESTIC_CACHE_DIR"] = str(tmp_path / "cache")
    return restic, repo, site, vanished


def test_a_restic_that_meets_the_race_is_started_again_and_backs_up(county_repo, monkeypatch):
    """The first restic says it retries the vanished lock: it is interrupted at once and a
    new one started, which finds the lock gone from the listing (the other snapshot is over)
    and makes the snapshot. Nothing of the interrupted restic is left in the repository."""
    restic, repo, site, vanished = county_repo
    real, tries = backup._watched, []

    def watched(*args, **kw):
        r, pid = real(*args, **kw)
        tries.append((kw["watch"], pid, r.returncode, r.stderr))
        if pid is not None:
            vanished.unlink()                 # the other node's lock is gone for good now
        return r, pid

    monkeypatch.setattr(backup, "_watched", watched)
    r = restic.run("backup", "--json", "--host", "govhost", str(site))
    assert r.returncode == 0, r.stderr
    assert r.lock_races == 1
    assert backup.restic_summary(r.stdout)["snapshot_id"]
    (watch1, pid1, rc1, err1), (watch2, pid2, rc2, _) = tries
    assert watch1 and pid1 and rc1 == 130            # SIGINT: restic's own clean exit
    assert b"Load(<lock/ababababab>, 0, 0) returned error, retrying" in err1
    assert watch2 and pid2 is None and rc2 == 0
    assert os.listdir(repo / "locks") == []          # the interrupted one left no lock
    snaps = json.loads(restic.run("snapshots", "--json", "--no-lock").stdout)
    assert len(snaps) == 1


def test_the_last_try_is_left_to_restics_own_retries(county_repo):
    """Once the restarts are used up restic is not interrupted: it waits out its retries and
    goes on (it skips a lock it cannot load), so a repository where the race never ends
    still gets its snapshot, late. Here the wait is cut by the deadline, which raises as
    subprocess.run does, with what restic said."""
    restic, _repo, site, _ = county_repo
    cmd = restic.cmd("backup", "--json", "--host", "govhost", str(site))
    with pytest.raises(subprocess.TimeoutExpired) as exc:
        backup._watched(cmd, restic.env, time.monotonic() + 3, 3, watch=False)
    assert exc.value.stderr.count(b"returned error, retrying after") >= 2


def test_a_restic_without_the_race_runs_once(county_repo):
    restic, _repo, site, vanished = county_repo
    vanished.unlink()
    r = restic.run("backup", "--json", "--host", "govhost", str(site))
    assert r.returncode == 0 and r.lock_races == 0
    assert backup.restic_summary(r.stdout)["files_new"] == 1


def test_an_exclusive_command_is_not_interrupted(county_repo):
    """Only `backup` is watched: a `forget` (exclusive) interrupted after writing its lock
    would be refused by that very lock when started again. Here it waits out restic's own
    retries (cut short by the timeout), untouched."""
    restic, _repo, _site, _ = county_repo
    with pytest.raises(subprocess.TimeoutExpired) as exc:
        restic.run("forget", "--keep-last", "1", timeout=3)
    assert exc.value.stderr.count(b"returned error, retrying after") >= 2


def test_the_race_is_restics_own_line_not_text_inside_a_line():
    assert backup.LOCK_RACE.search(
        b"scan\nLoad(<lock/ababababab>, 0, 0) returned error, retrying after 552ms: open x\n")
    assert not backup.LOCK_RACE.search(
        b"error: open /srv/x/Load(<lock/ababababab>, 0, 0) returned error, retrying after \n")


def test_an_incomplete_snapshot_is_tagged_partial_or_said_not_to_be(county_repo, monkeypatch,
                                                                     tmp_path):
    """`restic tag` needs the exclusive lock: while another restic holds a lock it is
    refused, and the error says the snapshot is NOT tagged (it said "tagged" before); once
    the lock is gone the tag is made."""
    restic, repo, site, vanished = county_repo
    vanished.unlink()
    r = restic.run("backup", "--json", "--host", "govhost", str(site))
    snap = backup.restic_summary(r.stdout)["snapshot_id"]
    monkeypatch.setattr(backup, "PARTIAL_TAG_WAIT", 0.1)
    monkeypatch.setattr(backup, "PARTIAL_TAG_TRIES", 2)
    # another node's snapshot under way: a restic holding its lock, reading a stdin that
    # never ends
    holder = subprocess.Popen(restic.cmd("backup", "--stdin", "--stdin-filename", "held"),
                              env=restic.env, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):                      # until its lock is there (bounded: 20 s)
            if os.listdir(repo / "locks"):
                break
            time.sleep(0.1)
        said = backup._tag_partial(restic, snap)
    finally:
        holder.kill()
        holder.wait()
    assert said.startswith("NOT tagged partial after 2 tries") and "unlock" in said, said
    for lock in os.listdir(repo / "locks"):                 # the killed holder's
        os.unlink(repo / "locks" / lock)
    assert backup._tag_partial(restic, snap) == "tagged partial"
    snaps = json.loads(restic.run("snapshots", "--json", "--no-lock").stdout)
    assert snaps[0]["tags"] == ["partial=yes"]


def test_an_interrupted_restics_lock_on_a_repository_on_this_disk_is_removed(tmp_path):
    """The nodes' Restic reaching a repository by path rather than over SFTP (as the unit
    tests of a night's run do: the suite met the race there for real, two snapshots of one
    run, and the clean-up then failed the snapshot on the URL). A killed restic's lock is
    removed, and the clean-up's own failure would not fail a snapshot."""
    repo = tmp_path / "repo"
    subprocess.run(["restic", "-r", str(repo), "init"], check=True, capture_output=True,
                   env={**os.environ, "RESTIC_PASSWORD": PASSWORD})
    restic = backup.Restic({"repository": {"url": str(repo), "path": str(repo), "local": False,
                                           "user": "govhost-backup", "address": "127.0.0.1",
                                           "port": 22}, "password": PASSWORD}, local=False)
    restic.env["RESTIC_CACHE_DIR"] = str(tmp_path / "cache")
    t0 = time.time()
    holder = subprocess.Popen(restic.cmd("backup", "--stdin", "--stdin-filename", "held"),
                              env=restic.env, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Until its lock is there and can be read (bounded: 20 s). In one loaded suite run the
    # clean-up below removed nothing; the cause was not found (restic writes a local file
    # whole), so the assertion now prints what the clean-up read.
    for _ in range(200):
        locks = os.listdir(repo / "locks")
        if locks and subprocess.run([*restic.cmd("cat", "lock", locks[0]), "--no-lock"],
                                    env=restic.env, capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    holder.kill()
    holder.wait()
    assert len(os.listdir(repo / "locks")) == 1
    assert restic.clear_own_locks([(holder.pid, t0 - 600, t0 - 300)]) == 0   # not its time
    removed = restic.clear_own_locks([(holder.pid, t0, time.time())])
    assert removed == 1, (holder.pid, t0, backup._lock_records(
        ["restic", "--no-cache", *restic.args], restic.env, lambda _: True, look_first=False))
    assert os.listdir(repo / "locks") == []
