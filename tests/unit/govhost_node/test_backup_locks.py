"""Stale restic locks on the backup node, with the real restic on a local repository: a
restic killed while it held the exclusive lock leaves a lock that refuses every backup; the
node removes it by itself because its process is gone, and keeps the lock of one that runs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from govhost_node import backup

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")
PASSWORD = "pw-for-locks"


def _env():
    return {**os.environ, "RESTIC_PASSWORD": PASSWORD}


def _holder(repo, fifo) -> tuple[subprocess.Popen, int]:
    """restic holding the exclusive lock while it waits for a new password from a pipe.

    It opens the pipe only after its lock is written whole (restic creates the lock file
    before it writes it, and skips a lock it cannot read: a holder killed in between leaves
    an empty file that locks nothing). The pipe's write end, returned, stays open and empty,
    so that restic waits on its read until it is killed."""
    os.mkfifo(fifo)
    proc = subprocess.Popen(["restic", "--no-cache", "-r", str(repo), "key", "passwd",
                             "--new-password-file", str(fifo)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):                      # until it reads the pipe (bounded: 20 s)
        try:
            return proc, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:                       # ENXIO: nobody reads it yet
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("restic never came to read its new password")


def _backup(repo, src) -> subprocess.CompletedProcess:
    return subprocess.run(["restic", "--no-cache", "-r", str(repo), "backup", str(src)],
                          env=_env(), capture_output=True, timeout=120)


@pytest.fixture
def repo(tmp_path):
    """A new local repository, as the backup node has it, and its backup.json part."""
    path = tmp_path / "repo"
    subprocess.run(["restic", "-r", str(path), "init"], env=_env(), check=True,
                   capture_output=True)
    return path, {"repository": {"local": True, "path": str(path)}, "password": PASSWORD}


def _killed_holder(repo, fifo) -> None:
    holder, pipe = _holder(repo, fifo)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    os.close(pipe)


def test_a_killed_holders_lock_is_removed_and_a_live_ones_is_kept(tmp_path, repo):
    repo, spec = repo
    src = tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("<p>首页</p>")
    _killed_holder(repo, tmp_path / "dead.fifo")
    assert b"already locked" in _backup(repo, src).stderr      # the harm it does
    locks = backup._read_locks(spec)
    assert [(lk["exclusive"], lk["here"], lk["process_alive"], lk["stale"]) for lk in locks] \
        == [(True, True, False, True)]
    assert backup._clear_stale(spec) == 1
    assert backup._read_locks(spec) == []
    assert _backup(repo, src).returncode == 0

    live, pipe = _holder(repo, tmp_path / "live.fifo")
    try:
        locks = backup._read_locks(spec)
        assert [(lk["process_alive"], lk["stale"]) for lk in locks] == [(True, False)]
        assert backup._clear_stale(spec) == 0                  # a running process keeps it
        assert len(backup._read_locks(spec)) == 1
    finally:
        live.kill()
        live.wait()
        os.close(pipe)


def test_a_lock_from_another_host_is_never_removed_by_itself(tmp_path, repo, monkeypatch):
    """Whether a process on another node still runs cannot be seen from here: the same dead
    lock, read on a node with another name, is left alone."""
    repo, spec = repo
    _killed_holder(repo, tmp_path / "other.fifo")
    lock = next((repo / "locks").iterdir())
    monkeypatch.setattr(backup.socket, "gethostname", lambda: "some-other-node")
    found = backup._read_locks(spec)
    assert [(lk["here"], lk["process_alive"], lk["stale"]) for lk in found] == [
        (False, None, False)]                 # and young: not stale by restic's 30 minutes
    assert backup._clear_stale(spec) == 0
    assert lock.exists()


def test_a_lock_slow_to_read_is_read_whole_not_taken_for_gone(repo, tmp_path, monkeypatch):
    """A lock that restic does not read within LOCK_READ_SECONDS is skipped only when it is
    gone from the directory (restic 0.14 retries a vanished lock for 44 s); one that is
    still there is read again without the short limit, so a stale lock is never missed."""
    path, spec = repo
    holder, pipe = _holder(path, tmp_path / "fifo")
    try:
        monkeypatch.setattr(backup, "LOCK_READ_SECONDS", 0.001)
        found = backup._read_locks(spec)
        assert found is not None and [lk["pid"] for lk in found] == [holder.pid]
        assert found[0]["exclusive"] and found[0]["process_alive"] is True
    finally:
        holder.kill()
        holder.wait()
        os.close(pipe)


def test_a_lock_removed_while_restic_reads_it_is_given_up_at_once(repo, tmp_path):
    """Another node's snapshot ends while this node reads its lock: restic 0.14 retries the
    vanished file for about 44 s. The reader looks for the lock while restic reads and
    stops restic when it is gone (None), where it waited LOCK_READ_SECONDS before (a
    repository node's `backup run` took 12 s instead of 2 at every third or fourth run on
    the lab). A live lock beside it is still read."""
    path, spec = repo
    _killed_holder(path, tmp_path / "gone.fifo")
    [gone] = list((path / "locks").iterdir())
    looks = []

    def removed_as_restic_starts(lid: str) -> bool:
        looks.append(lid)
        if len(looks) == 1:
            return True                 # there when listed: restic is asked for it
        gone.unlink(missing_ok=True)    # ... and removed while restic reads it
        return False
    cat = ["restic", "--no-cache", "-r", str(path), "cat", "lock", gone.name, "--no-lock"]
    assert removed_as_restic_starts(gone.name)
    assert backup._cat_lock(cat, _env(), gone.name, removed_as_restic_starts, True) is None
    assert not gone.exists() and len(looks) == 2
    live, pipe = _holder(path, tmp_path / "live.fifo")
    try:
        [lock] = list((path / "locks").iterdir())
        got = backup._cat_lock(["restic", "--no-cache", "-r", str(path), "cat", "lock",
                                lock.name, "--no-lock"], _env(), lock.name,
                               lambda lid: (path / "locks" / lid).exists(), True)
        assert got is not None and got.returncode == 0 and b'"exclusive": true' in got.stdout
    finally:
        live.kill()
        live.wait()
        os.close(pipe)


def test_a_run_without_a_reachable_repository_connects_each_restic_on_its_own():
    """The shared SSH connection of a run is a shortcut: where it cannot be made (here no
    sshd answers on the port), restic's SFTP command stays the one of its own connection,
    and nothing is left behind."""
    spec = {"password": "x", "repository": {"url": "sftp:govhost-backup@127.0.0.1:/repo",
                                            "user": "govhost-backup", "address": "127.0.0.1",
                                            "port": 9, "path": "/repo"}}
    restic = backup.Restic(spec, local=False)
    alone = list(restic.args)
    with restic.one_connection():
        assert restic.args == alone
        assert "ControlPath" not in " ".join(restic.args)
    assert restic.args == alone
    assert not os.path.exists(f"{backup.STATE}/ssh-{os.getpid()}.sock")
