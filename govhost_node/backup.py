"""govhost-backup: restic backups of the tenants a node holds (run by govhost as root, and by
the timers this script installs). Reads /etc/govhost/current/backup.json (from the config
release); prints one JSON object per line.

  install                  the repository account on the backup node (and the off-site one
                           where this node stands in for it), the repository itself (backup
                           node), and the timers (systemd, else cron) of backup.json
  run [--schedule S] [--tenant T]... [--tag K=V]... [--run ID] [--jobs N] [--always]
                           back up this node's tenants (files: upload area, live release,
                           PHP files/; databases on the db node: mariadb-dump to a file first,
                           so a failed dump makes no snapshot), one snapshot each; a files
                           tree that has not changed since its last snapshot in this
                           repository makes none (its result says `unchanged`), unless
                           --always or --tag asks for one
  snapshots [--tenant T]   the repository's snapshots (restic's JSON)
  restore-files T SNAP [--upload] [--php-files]  restore a files snapshot under RESTORE; with
                           --php-files PHP files/ too; with --upload the
                           tenant's upload area becomes the snapshot's (the old one is kept
                           beside the restore)
  restore-many [--jobs N]  restore-files --upload/--php-files for many units, JSON lines on
                           stdin, one result line each (a replaced node)
  restore-db T SNAP [--into DB]  load a database snapshot into T's database (or DB)
  drill-files T SNAP       restore into scratch, check every file (release files against
                           their digest list, the rest against the source), time it
  drill-db T SNAP          load into a scratch database, compare row counts with those
                           recorded at backup time, drop it, time it
  forget [--prune]         apply the retention groups of backup.json (backup node)
  verify [--subset P]      restic check --read-data-subset=P% (backup node)
  copy                     copy new snapshots to the off-site repository (backup node)
  locks [--clear|--clear-dead]  the repository's locks, stale or not; --clear removes the stale
                           ones (backup node). forget, verify, copy and run first remove the
                           locks of this node's own restic processes that are gone
  rebuild                  after the backup node's disk was replaced: every snapshot back
                           from the off-site repository (backup node)
  status                   the last backup of each tenant on this node (status.json)

Failures are never success: restic exit code 3 (some files unreadable) and any code but 0
are failures, recorded as such in status.json, which govhost-agent exports.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import selectors
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

from govhost_node import digests as digest_list
from govhost_node import restic_key
from govhost_node.files import sweep, write_if_changed
from govhost_node.layout import NODE
from govhost_node.system import end_with_parent, pid_alive

SPEC = f"{NODE.current}/backup.json"
KEY = f"{NODE.current}/backup.key"
STATE = f"{NODE.state}/backup"
STATUS = f"{STATE}/status.json"
RESTORE = f"{NODE.srv}/restore"
SITES = NODE.sites
DB_SOCKET = "/run/mysqld/mysqld.sock"
TENANT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DBNAME = re.compile(r"^gh_[a-z0-9_]{1,61}$")
SNAP = re.compile(r"^[0-9a-f]{8,64}$")
TAG = re.compile(r"^[a-z]{1,20}=[A-Za-z0-9_.:-]{1,80}$")
RESTIC_MEANING = {1: "fatal error (nothing saved)", 3: "some source files could not be read",
                  11: "the repository is locked", 130: "interrupted"}


# A directory opened by root where an account could have put a link instead.
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def die(msg: str, code: int = 1) -> None:
    print(f"govhost-backup: {msg}", file=sys.stderr)
    sys.exit(code)


def emit(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False, sort_keys=True), flush=True)


def load_spec() -> dict:
    try:
        with open(SPEC, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        die("no backup.json in the current release: no node has the backup role, or the "
            "node was not applied yet")
    return {}


def tenant_arg(t: str) -> str:
    if not TENANT.match(t):
        die(f"bad tenant name {t!r}")
    return t


def snap_arg(s: str) -> str:
    if not SNAP.match(s):
        die(f"bad snapshot id {s!r}")
    return s


# ---------------------------------------------------------------- restic

class Restic:
    """One repository: over SFTP with the backup key, or, on the backup node, its local path
    (then as the repository's own account, so every file in it keeps one owner)."""

    def __init__(self, spec: dict, offsite: bool = False, local: bool | None = None) -> None:
        repo = spec["offsite"] if offsite else spec["repository"]
        self.local = bool(repo.get("local")) if local is None else local
        self.url = repo.get("url", "")
        self.env = dict(os.environ, RESTIC_PASSWORD=repo["password"] if offsite
                        else spec["password"], RESTIC_CACHE_DIR=f"{STATE}/cache")
        self.env.pop("RESTIC_REPOSITORY", None)
        self.user = repo["user"]
        if self.local:
            self.args = ["-r", repo["path"]]
            self.env["RESTIC_CACHE_DIR"] = f"{STATE}/cache-{self.user}"
        else:
            self.ssh = ["ssh", "-i", KEY, "-p", str(repo["port"]), "-o", "BatchMode=yes",
                        "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=10",
                        "-o", "ServerAliveCountMax=3", "-o", "StrictHostKeyChecking=accept-new",
                        "-o", f"UserKnownHostsFile={STATE}/known_hosts", "-o", "LogLevel=ERROR",
                        f"{repo['user']}@{repo['address']}"]
            self._point_at(None)

    def _point_at(self, sock_path: str | None) -> None:
        """restic's SFTP command: its own SSH connection, or a session on the shared one at
        `sock_path` (a connection that has gone makes ssh connect on its own again)."""
        shared = ["-o", f"ControlPath={sock_path}", "-o", "ControlMaster=no"] if sock_path else []
        ssh = " ".join([*self.ssh[:-1], *shared, self.ssh[-1], "-s", "sftp"])
        self.args = ["-r", self.url, "-o", f"sftp.command={ssh}"]

    @contextlib.contextmanager
    def one_connection(self) -> Iterator[None]:
        """Every restic of a run over one SSH connection to the repository: a night with
        two hundred changed units started two hundred restic processes, each paying for an
        SSH connection of its own (a key exchange and a login: about a quarter of each
        snapshot's time on the lab). The connection is this process's child, ended with
        the run, and by the kernel when this process ends any other way (killed, a timer's
        stop); where it cannot be made, each restic connects on its own as before. A
        restic whose session is on it fails with it (its snapshot is reported failed); sshd
        takes 10 sessions on one connection (MaxSessions), and an eleventh restic at once
        connects on its own."""
        if self.local:
            yield
            return
        sock_path = f"{STATE}/ssh-{os.getpid()}.sock"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        master = subprocess.Popen([*self.ssh[:-1], "-o", f"ControlPath={sock_path}", "-M", "-N",
                                   self.ssh[-1]], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, preexec_fn=end_with_parent)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(sock_path) and master.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            if os.path.exists(sock_path):
                self._point_at(sock_path)
            yield
        finally:
            self._point_at(None)
            master.terminate()
            try:
                master.wait(10)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)

    def cmd(self, *args: str) -> list[str]:
        base = ["restic", *self.args, *args]
        if self.local and os.geteuid() == 0:
            return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups",
                    "--", *base]
        return base

    def run(self, *args: str, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            timeout: float = 6 * 3600) -> subprocess.CompletedProcess:
        """restic never reads the terminal it was started from: the node program runs under
        the control machine's SSH session, whose stdin stays open, and a prompt there would
        wait for ever. A restic caught in 0.14's lock race (see `_watched`) is interrupted
        and started again, up to LOCK_RACE_RESTARTS times; the last try is left to restic's
        own retries. The result's `lock_races` counts the restarts."""
        env = self.env
        if self.local and os.geteuid() == 0:
            os.makedirs(env["RESTIC_CACHE_DIR"], exist_ok=True)
            shutil.chown(env["RESTIC_CACHE_DIR"], self.user, self.user)
        cmd = self.cmd(*args)
        if stdin is not subprocess.DEVNULL or stdout is not subprocess.PIPE \
                or not args or args[0] not in LOCK_RACE_WATCHED:
            return subprocess.run(cmd, env=env, stdin=stdin, stdout=stdout,
                                  stderr=subprocess.PIPE, timeout=timeout)
        deadline = time.monotonic() + timeout
        interrupted: list[tuple[int, float, float]] = []     # pid, its start and end
        while True:
            started = time.time()
            r, pid = _watched(cmd, env, deadline, timeout,
                              watch=len(interrupted) < LOCK_RACE_RESTARTS)
            if pid is None:
                break
            interrupted.append((pid, started, time.time()))
        if interrupted:
            try:
                self.clear_own_locks(interrupted)
            except Exception as exc:              # noqa: BLE001 - a clean-up never fails it
                # the snapshot stands; a lock left is a dead process's, which `backup
                # locks` shows and its next run's clean-up removes
                print(f"govhost-backup: the locks of interrupted restics were not cleared: "
                      f"{exc}", file=sys.stderr)
        r.lock_races = len(interrupted)       # type: ignore[attr-defined]
        return r

    def clear_own_locks(self, restics: list[tuple[int, float, float]]) -> int:
        """Remove the locks that restic processes of this node, interrupted by `run` and
        now gone, left behind: one interrupted after it wrote its lock (restic checks the
        others' locks again after writing its own) never removes it, and an exclusive
        `prune` or `check` would refuse to start while it is there. `restics` are their
        pids with the times they started and ended; only a lock naming this host and one of
        those pids, written while that process lived, whose process is gone, is removed
        (another node with the same host name would also need a restic with the same pid
        that locked in the same second). The backup node's own processes' locks are its
        run's `_clear_stale` work."""
        if self.local:
            return 0
        base = ["restic", "--no-cache", *self.args]
        ours = [lk["full_id"] for lk in _lock_records(base, self.env, self._listed_again,
                                                      list_timeout=60, look_first=False) or ()
                if lk["here"] and lk["process_alive"] is False
                and any(lk["pid"] == pid and start - 2 <= lk["time"] <= end + 2
                        for pid, start, end in restics)]
        if not ours:
            return 0
        if not self.url.startswith("sftp:"):      # a repository on this machine's disk
            _unlink_locks(self.url, ours)
        else:
            path = self.url.split(":", 2)[2]      # sftp:user@host:/path
            if any(c in path for c in '"\\\n\r'):
                return 0                          # not quotable in sftp's batch: left
            batch = "".join(f'-rm "{path}/locks/{lid}"\n' for lid in ours)
            sftp = ["sftp", "-b", "-", *("-P" if a == "-p" else a for a in self.ssh[1:])]
            subprocess.run(sftp, input=batch.encode(), capture_output=True, timeout=60)
        listed = self._listed()
        return 0 if listed is None else len(set(ours) - listed)

    def _listed(self) -> set[str] | None:
        """The repository's lock ids now (None when they cannot be listed)."""
        r = subprocess.run(["restic", "--no-cache", *self.args, "list", "locks", "--no-lock"],
                           env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60)
        return set(r.stdout.decode().split()) if r.returncode == 0 else None

    def _listed_again(self, lid: str) -> bool:
        listed = self._listed()
        return listed is None or lid in listed

    def _probe(self) -> subprocess.CompletedProcess:
        """`restic cat config`, tried twice: a repository that does not answer in 60 s is
        asked once more on a new connection before the whole run is given up, and what
        restic and ssh said meanwhile is kept for the error."""
        said = b""
        for _ in range(2):
            try:
                return self.run("cat", "config", timeout=60)
            except subprocess.TimeoutExpired as exc:
                said = exc.stderr or said
        raise BackupError("the repository did not answer in 60 s, twice (is the backup "
                          f"node up, and its sshd?): {_last_line(said.decode(errors='replace'))}")

    def ensure_init(self, chunker_from: "Restic | None" = None) -> str:
        """Create the repository on first use (two nodes racing agree on one); its id."""
        probe = self._probe()
        if probe.returncode == 0:
            return _repository_id(probe.stdout)
        err = probe.stderr.decode(errors="replace")
        if "does not exist" not in err and "no such file" not in err.lower() \
                and "Is there a repository" not in err:
            if "wrong password" in err:
                raise BackupError("the repository was made with another password (a "
                                  "different govhost state directory, or a changed cluster "
                                  "secret); restore the secret, or set backup.path to a new "
                                  "repository")
            raise BackupError(f"repository unreachable: {_last_line(err)}")
        extra: list[str] = []
        if chunker_from is not None:        # same chunking: copies keep deduplicating
            extra = ["--copy-chunker-params", "--from-repo", chunker_from.args[1]]
        init = subprocess.run(self.cmd("init", *extra), env=dict(
            self.env, RESTIC_FROM_PASSWORD=chunker_from.env["RESTIC_PASSWORD"])
            if chunker_from else self.env, capture_output=True, timeout=300)
        again = self._probe()
        if again.returncode != 0:
            raise BackupError("cannot create the repository: "
                              f"{_last_line(init.stderr.decode(errors='replace'))}")
        return _repository_id(again.stdout)

    def lighten_key(self) -> str | None:
        """On the repository's own node, replace the keys this repository's password opens
        with one whose stretching costs milliseconds (govhost_node/restic_key.py says why:
        that second was paid by every snapshot). Its id, or None when there was nothing to do.

        The old keys go only once restic has opened the repository with the light key alone
        (a copy of the repository's config beside that one key, in root's own directory): a
        hint would not prove it, as restic falls back to the other keys when the hinted one
        fails. One run at a time (a lock of root's), so a run never removes what another is
        proving. Every file is reached through the keys directory's descriptor with links
        refused, at most 20 files are tried (restic itself gives up after 20): the directory
        belongs to the repository's account, which every node's backup key reaches."""
        if not self.local:
            return None
        try:
            return self._lighten_key()
        except (ValueError, KeyError, subprocess.SubprocessError) as exc:
            raise BackupError(f"making the light key failed: {exc}") from None

    def _lighten_key(self) -> str | None:
        password = self.env["RESTIC_PASSWORD"]
        pw = pwd.getpwnam(self.user)
        os.makedirs(STATE, mode=0o700, exist_ok=True)
        with open(f"{STATE}/light-key.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            repo_fd = os.open(self.args[1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            dfd = os.open("keys", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=repo_fd)
            try:
                names = sorted(n for n in os.listdir(dfd) if restic_key.NAME.fullmatch(n))
                if len(names) > restic_key.MAX_KEYS:
                    raise BackupError(f"the repository has {len(names)} key files; restic "
                                      f"tries {restic_key.MAX_KEYS} at most: look at its "
                                      "keys directory")
                keys = {n: k for n, k in ((n, _read_key(dfd, n)) for n in names) if k}
                light = [n for n, k in keys.items()
                         if restic_key.is_light(k) and restic_key.opens(password, k)]
                heavy = [n for n, k in keys.items()
                         if not restic_key.is_light(k) and restic_key.opens(password, k)]
                if not heavy:
                    if not light:
                        raise BackupError("no key of the repository opens with its password")
                    return None
                config = _read_small(repo_fd, "config")
                # restic is pointed at a key that works before it would meet a bad light one
                hint = ("--key-hint", heavy[0])
                repo_id = _repository_id(self.run(*hint, "cat", "config", timeout=300).stdout)
                if not repo_id:
                    raise BackupError("restic did not open the repository with its own key")
                key = None
                for n in light:
                    if self._opens_alone(config, n, _read_small(dfd, n), repo_id):
                        key = n
                        break
                    # this password opens it, restic cannot use it: restic could pick it
                    # before a good one and fail
                    heavy.append(n)
                if key is None:
                    master = self.run(*hint, "cat", "masterkey", timeout=300)
                    if master.returncode != 0:
                        raise BackupError("reading the master key failed: "
                                          f"{_restic_error(master)}")
                    key, raw = restic_key.seal(password, json.loads(master.stdout))
                    if not self._opens_alone(config, key, raw, repo_id):
                        raise BackupError("restic did not open the repository with the light "
                                          "key alone; the old keys are kept")
                    tmp = f".{key}.tmp-{os.getpid()}"
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o400, dir_fd=dfd)
                    try:
                        os.write(fd, raw)
                        os.fchown(fd, pw.pw_uid, pw.pw_gid)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.rename(tmp, key, src_dir_fd=dfd, dst_dir_fd=dfd)
                    os.fsync(dfd)              # the new key is on disk before an old one goes
                for name in heavy:
                    os.unlink(name, dir_fd=dfd)
                os.fsync(dfd)
                return key
            finally:
                os.close(dfd)
                os.close(repo_fd)

    def _opens_alone(self, config: bytes, name: str, raw: bytes, repo_id: str) -> bool:
        """Whether restic opens a repository of this config with this one key: in a scratch
        directory of root's, with nothing else to fall back on."""
        with tempfile.TemporaryDirectory(dir=STATE, prefix="light-key-") as scratch:
            for d in ("keys", "data", "index", "snapshots", "locks"):
                os.mkdir(os.path.join(scratch, d))
            with open(os.path.join(scratch, "config"), "wb") as f:
                f.write(config)
            with open(os.path.join(scratch, "keys", name), "wb") as f:
                f.write(raw)
            r = subprocess.run(["restic", "--no-cache", "-r", scratch, "cat", "config"],
                               env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=300)
            return r.returncode == 0 and _repository_id(r.stdout) == repo_id

    def snapshots(self, *filters: str) -> list[dict]:
        r = self.run("snapshots", "--json", "--no-lock", *filters, timeout=600)
        if r.returncode != 0:
            raise BackupError(f"listing snapshots failed: {_restic_error(r)}")
        return json.loads(r.stdout or b"[]") or []


class BackupError(Exception):
    pass


# restic 0.14 lists the repository's locks, then loads each; a lock removed in between (another
# node's snapshot ended) is retried for about 44 s before restic goes on (restic#1523), and it
# says so on stderr at the first retry. A restic that says it is interrupted at once and
# started again: with one snapshot in a hundred meeting the race on a three-node night, each
# met a 44 s wait on its node's lane.
# Only `backup` is watched: it takes a non-exclusive lock, so a lock of its own left by an
# interrupted try does not refuse the next try (an exclusive `tag`, `forget`, `prune` or
# `check` would be refused by it: a reviewer's test), and with --json a file name it prints
# is JSON-escaped, so no unit's file name can pass for restic's own line ("<" is \u003c).
LOCK_RACE = re.compile(rb"(?m)^Load\(<lock/[0-9a-f]{1,10}>, \d+, \d+\) returned error, "
                       rb"retrying after ")
LOCK_RACE_RESTARTS = 2
LOCK_RACE_WATCHED = ("backup",)


def _watched(cmd: list[str], env: dict, deadline: float, timeout: float,
             watch: bool) -> tuple[subprocess.CompletedProcess, int | None]:
    """Run restic as subprocess.run would (TimeoutExpired at `deadline`), reading its stderr
    as it comes; with `watch`, a restic that reports the lock race gets SIGINT (restic then
    removes the locks it registered and exits 130). The pid is returned when it was
    interrupted so, else None."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out: list[bytes] = []
    err = bytearray()
    raced = False
    with proc, selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                if raced:
                    break
                raise subprocess.TimeoutExpired(cmd, timeout, b"".join(out), bytes(err))
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    out.append(chunk)
                else:
                    err += chunk
                    since = max(0, len(err) - len(chunk) - 200)
                    if watch and not raced and LOCK_RACE.search(err, since):
                        raced = True
                        proc.send_signal(signal.SIGINT)
                        # restic's ssh child may keep the pipes open a moment longer
                        deadline = min(deadline, time.monotonic() + 30)
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    r = subprocess.CompletedProcess(cmd, proc.returncode, b"".join(out), bytes(err))
    return r, (proc.pid if raced else None)


def _lighten(restic: Restic) -> None:
    """The light key, where it can be made; where not, the repository still works, only slower
    to open, so what follows (the timers, the rebuild's count) goes on."""
    try:
        restic.lighten_key()
    except (BackupError, OSError) as exc:
        print(f"the repository keeps its slow key: {exc}", file=sys.stderr)


def _read_small(dfd: int, name: str, limit: int = 65536) -> bytes:
    """A regular file of the repository, read through its directory's descriptor, links and
    anything but a plain file refused, at most `limit` bytes."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BackupError(f"{name} in the repository is not a plain file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _read_key(dfd: int, name: str) -> dict | None:
    """One key file of the repository, or None for anything else found there (a planted
    file of any shape is passed over, never a reason to stop)."""
    try:
        key = json.loads(_read_small(dfd, name))
        return key if isinstance(key, dict) else None
    except Exception:  # noqa: BLE001 - whatever a planted file holds
        return None


def _repository_id(config: bytes) -> str:
    """The id in `restic cat config`: a repository made again (rebuilt, or a new path) has
    another, and holds none of the snapshots the status file names."""
    try:
        return str(json.loads(config)["id"])
    except (ValueError, KeyError, TypeError):
        return ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _restic_error(r: subprocess.CompletedProcess) -> str:
    meaning = RESTIC_MEANING.get(r.returncode, "unknown exit code")
    return f"restic exit {r.returncode} ({meaning}): {_last_line(r.stderr.decode(errors='replace'))}"


def restic_summary(stdout: bytes) -> dict:
    """The summary message of `restic backup --json` (empty if restic printed none): its
    progress lines and anything that is not JSON are skipped. The control machine's backup
    of its own state reads restic the same way."""
    summary: dict = {}
    for line in stdout.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("message_type") == "summary":
            summary = msg
    return summary


PARTIAL_TAG_TRIES, PARTIAL_TAG_WAIT = 4, 15


def _tag_partial(restic: Restic, snapshot: str) -> str:
    """Tag an incomplete snapshot `partial=yes`; what came of it, for the error. `restic
    tag` takes the repository's exclusive lock, which other nodes' snapshots refuse while
    they run (a reviewer's test: refused, and the error said "tagged" all the same): it is
    tried again a few times, and a snapshot still untagged is said to be so."""
    said = ""
    for attempt in range(PARTIAL_TAG_TRIES):
        if attempt:
            time.sleep(PARTIAL_TAG_WAIT)
        try:
            r = restic.run("tag", "--add", "partial=yes", snapshot, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            said = str(exc)
            continue
        if r.returncode == 0:
            return "tagged partial"
        said = _restic_error(r)
    return (f"NOT tagged partial after {PARTIAL_TAG_TRIES} tries ({said}): a restore could "
            f"take it for the latest; tag it with restic tag --add partial=yes {snapshot}")


def _backup(restic: Restic, paths: list[str], tags: list[str], excludes: list[str] = ()) -> dict:
    """restic backup with JSON progress; the summary, or BackupError for any exit but 0."""
    args = ["backup", "--json", "--host", "govhost", "--one-file-system"]
    for t in tags:
        args += ["--tag", t]
    for e in excludes:
        args += ["--exclude", e]
    r = restic.run(*args, *paths)
    summary = restic_summary(r.stdout)
    summary["lock_races"] = getattr(r, "lock_races", 0)
    if r.returncode != 0:
        err = _restic_error(r)
        if summary.get("snapshot_id"):
            # Exit 3 leaves a snapshot without the files restic could not read: mark it, so
            # that a restore never takes it for "the latest" without being asked to.
            err += f" (snapshot {summary['snapshot_id'][:8]} is incomplete, " + \
                _tag_partial(restic, summary["snapshot_id"]) + ")"
        raise BackupError(err)
    if not summary.get("snapshot_id"):
        raise BackupError("restic reported success without a snapshot")
    return summary


# ---------------------------------------------------------------- status file

def _merge_status(results: dict[tuple[str, str], dict]) -> None:
    """Merge results ((tenant, kind) -> result) into status.json under its lock: another run
    at once (one unit's, asked by hand) merges its own between ours."""
    os.makedirs(STATE, mode=0o700, exist_ok=True)
    with open(f"{STATE}/status.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        status = _read_status()
        for (tenant, kind), result in results.items():
            entry = status.setdefault(tenant, {}).setdefault(kind, {})
            if entry.get("last_attempt", 0) > result["finished_at"]:
                # Another run at once recorded a later attempt: it stands. A success of ours
                # it has not seen is still the latest success (its age is what alerts read).
                if result["ok"] and result["finished_at"] > entry.get("last_success", 0):
                    entry.update(last_success=result["finished_at"],
                                 snapshot=result["snapshot"], seconds=result["seconds"])
                continue
            entry["last_attempt"] = result["finished_at"]
            if result["ok"]:
                entry.update(last_success=result["finished_at"], snapshot=result["snapshot"],
                             last_error="", seconds=result["seconds"])
                # what the snapshot holds, as metadata, and where: the next run makes none
                # while both are the same (`unchanged`)
                entry.update(fingerprint=result.get("fingerprint", ""),
                             repository=result.get("repository", ""))
            else:
                entry.update(last_error=result["error"], fingerprint="")
        tmp = f"{STATUS}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(status, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())        # a power cut must not leave an empty status
        os.replace(tmp, STATUS)


def _read_status() -> dict:
    try:
        with open(STATUS, encoding="utf-8") as f:
            status = json.load(f)
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


class _StatusFile:
    """status.json as one run sees it: read once, and the run's results merged into it by a
    timer every FLUSH_SECONDS while some wait, and at the run's end. Before stop 64 every
    job read the whole file to find its last result, then read and wrote it whole again
    under its lock to record the new one: 154 s at 3,333 jobs, 12.8 s at 1,000 (it grew
    with the square of the jobs). A run killed between two merges loses the results of
    the last FLUSH_SECONDS at most: the next run then makes those snapshots again (nothing
    says they are unchanged), and a failure shows at the next night's."""

    FLUSH_SECONDS = 2.0

    def __init__(self) -> None:
        self.known = _read_status()
        self.pending: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._every, daemon=True)
        self._timer.start()

    def last(self, tenant: str, kind: str) -> dict:
        entry = self.known.get(tenant, {})
        entry = entry.get(kind, {}) if isinstance(entry, dict) else {}
        return dict(entry) if isinstance(entry, dict) else {}

    def record(self, tenant: str, kind: str, result: dict) -> None:
        with self.lock:
            self.pending[(tenant, kind)] = result

    def _every(self) -> None:
        while not self._stop.wait(self.FLUSH_SECONDS):
            try:
                self._write()
            except Exception as exc:        # kept for the next try (a full disk)
                print(f"govhost-backup: status.json not written yet: {exc}", file=sys.stderr)

    def flush(self) -> None:
        """The last merge (raises OSError where it cannot be written), after the timer's own
        merge under way, if any, has ended: the process must not exit in the middle of it."""
        self._stop.set()
        self._timer.join()
        self._write()

    def _write(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, {}
        if not pending:
            return
        try:
            _merge_status(pending)
        except BaseException:
            with self.lock:                 # what came meanwhile is newer
                self.pending = {**pending, **self.pending}
            raise


def _held_here(restic: Restic, spec: dict) -> set[str]:
    """The ids of the snapshots this node made that the repository still holds (one listing
    a run): a snapshot the status file names but retention or an operator removed is not
    taken to hold a tree."""
    try:
        return {str(x.get(k)) for x in restic.snapshots("--tag", f"node={spec['node']}")
                for k in ("id", "short_id")}
    except (BackupError, ValueError, subprocess.TimeoutExpired):
        return set()


# ---------------------------------------------------------------- backing up

def _files_excludes(spec: dict, home: str) -> list[str]:
    """What a unit's files snapshot leaves out: its var/ and every release but the live one
    (older ones are hard links to the same files, or out of date)."""
    if not os.path.isdir(os.path.join(home, "releases")):
        raise BackupError(f"{home} holds no content tree on {spec['node']}")
    try:
        live = os.path.basename(os.readlink(os.path.join(home, "current")))
    except OSError:
        live = None
    return [os.path.join(home, "var")] + [
        os.path.join(home, "releases", r) for r in os.listdir(os.path.join(home, "releases"))
        if r != live]


def files_fingerprint(home: str, excludes: list[str]) -> str:
    """Everything restic would read of a unit's tree, as metadata: each entry's path, type,
    mode, owner, size, inode, modification and change times, and a link's target. The
    change time is set by the kernel at every write, rename, chmod and chown, and no account
    can set it back (`touch -d` moves only the modification time), so a tree whose
    fingerprint is the same holds what its last snapshot holds. Costs a stat per entry,
    which restic's own scan pays as well."""
    skip = set(excludes)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(home):
        dirs[:] = sorted(d for d in dirs if os.path.join(root, d) not in skip)
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            if path in skip:
                continue
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            h.update(f"{os.path.relpath(path, home)}\0{st.st_mode}\0{st.st_uid}\0"
                     f"{st.st_gid}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0"
                     f"{st.st_ctime_ns}\0{link}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _files_job(spec: dict, restic: Restic, entry: dict, tags: list[str]) -> dict:
    home = entry["home"]
    return _backup(restic, [home], tags, _files_excludes(spec, home))


def _mariadb(*args: str, sql: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["mariadb", f"--socket={DB_SOCKET}", "--user=root", "--batch",
                           "--skip-column-names", *args], input=sql, capture_output=True,
                          text=True, timeout=3600)


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def row_counts(db: str) -> dict[str, int]:
    if not DBNAME.match(db) and not db.startswith("ghdrill_"):
        raise BackupError(f"bad database name {db!r}")
    r = _mariadb(sql="SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                 f"'{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;")
    if r.returncode != 0:
        raise BackupError(f"cannot list the tables of {db}: {_last_line(r.stderr)}")
    tables = [t for t in r.stdout.splitlines() if t]
    if not tables:
        return {}
    q = "\n".join(f"SELECT COUNT(*) FROM {_ident(db)}.{_ident(t)};" for t in tables)
    r = _mariadb(sql=q)
    if r.returncode != 0:
        raise BackupError(f"cannot count the rows of {db}: {_last_line(r.stderr)}")
    return dict(zip(tables, (int(n) for n in r.stdout.split())))


def _db_job(spec: dict, restic: Restic, entry: dict, tags: list[str]) -> dict:
    """Dump to a file first: restic 0.14 has no --stdin-from-command, and a dump that fails
    half-way must never become a snapshot."""
    db = entry["database"]
    if not DBNAME.match(db):
        raise BackupError(f"bad database name {db!r}")
    work = os.path.join(STATE, "work", entry["tenant"])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, mode=0o700)
    try:
        dump_path = os.path.join(work, f"{db}.sql")
        fd = os.open(dump_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            r = subprocess.run(["mariadb-dump", f"--socket={DB_SOCKET}", "--user=root",
                                "--single-transaction", "--routines", "--triggers",
                                "--hex-blob", "--skip-dump-date", db],
                               stdout=out, stderr=subprocess.PIPE, timeout=6 * 3600)
        if r.returncode != 0:
            raise BackupError(f"mariadb-dump of {db} failed (exit {r.returncode}), no snapshot "
                              f"made: {_last_line(r.stderr.decode(errors='replace'))}")
        with open(os.path.join(work, "rows.json"), "w", encoding="utf-8") as f:
            json.dump({"database": db, "rows": row_counts(db)}, f, sort_keys=True)
        return _backup(restic, [work], tags)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    spec = load_spec()
    restic = Restic(spec, local=False)        # sources are read as root, sent over SFTP
    jobs = []
    wanted = set(args.tenant or [])
    for kind, entries, fn in (("files", spec["files"], _files_job),
                              ("db", spec["databases"], _db_job)):
        for e in entries:
            if wanted and e["tenant"] not in wanted:
                continue
            if args.schedule and e["schedule"] != args.schedule:
                continue
            jobs.append((kind, e, fn))
    run_id = args.run or time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    extra = [t for t in (args.tag or []) if TAG.match(t)]
    if len(extra) != len(args.tag or []):
        die("bad --tag: use key=value with letters, digits and _.:-")
    # A snapshot asked for with a tag (a safety snapshot before a restore) is always made.
    may_skip = not (args.always or extra) and any(k == "files" for k, _, _ in jobs)
    emit({"event": "start", "node": spec["node"], "jobs": len(jobs), "run": run_id})
    if not jobs:
        return
    status = _StatusFile()
    try:
        repository = restic.ensure_init()
        _clear_stale(spec)
        held = _held_here(restic, spec) if may_skip else set()
    except (BackupError, OSError) as exc:   # OSError: restic missing or not executable
        try:
            for kind, e, _ in jobs:
                res = {"event": "result", "tenant": e["tenant"], "kind": kind, "ok": False,
                       "snapshot": None, "error": str(exc), "finished_at": time.time(),
                       "seconds": 0.0, "node": spec["node"], "run": run_id}
                status.record(e["tenant"], kind, res)
                emit(res)
        finally:
            status.flush()
        sys.exit(2)

    def one(job) -> dict:
        kind, e, fn = job
        tags = ["govhost", f"tenant={e['tenant']}", f"kind={kind}", f"node={spec['node']}",
                f"run={run_id}", *extra]
        t0 = time.time()
        res = {"event": "result", "tenant": e["tenant"], "kind": kind, "node": spec["node"],
               "run": run_id, "started_at": t0}
        try:
            if kind == "files":
                # taken before the snapshot: a change made while restic reads is seen
                # as a change by the next run, never lost
                res["fingerprint"] = files_fingerprint(e["home"],
                                                       _files_excludes(spec, e["home"]))
                res["repository"] = repository
                last = status.last(e["tenant"], kind)
                if may_skip and repository and last.get("snapshot") in held and \
                        last.get("fingerprint") == res["fingerprint"] and \
                        last.get("repository") == repository:
                    res.update(ok=True, unchanged=True, snapshot=last["snapshot"], files_new=0,
                               files_changed=0, files=0, bytes=0, bytes_added=0, error="")
                    res["finished_at"] = time.time()
                    res["seconds"] = round(res["finished_at"] - t0, 3)
                    status.record(e["tenant"], kind, res)
                    return res
            s = fn(spec, restic, e, tags)
            res.update(ok=True, snapshot=s["snapshot_id"], files_new=s.get("files_new", 0),
                       files_changed=s.get("files_changed", 0),
                       files=s.get("total_files_processed", 0),
                       bytes=s.get("total_bytes_processed", 0),
                       bytes_added=s.get("data_added", 0), lock_races=s["lock_races"],
                       error="")
        except (BackupError, OSError, subprocess.TimeoutExpired) as exc:
            res.update(ok=False, error=str(exc), snapshot=None)
        res["finished_at"] = time.time()
        res["seconds"] = round(res["finished_at"] - t0, 3)
        status.record(e["tenant"], kind, res)
        return res

    failed = 0
    try:
        with restic.one_connection(), ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for res in pool.map(one, jobs):
                failed += not res["ok"]
                emit(res)
    finally:
        status.flush()
    if failed:
        sys.exit(2)


# ---------------------------------------------------------------- listing and restoring

def snapshots(args: argparse.Namespace) -> None:
    spec = load_spec()
    restic = Restic(spec)
    filters = ["--tag", f"tenant={tenant_arg(args.tenant)}"] if args.tenant else []
    try:
        print(json.dumps(restic.snapshots(*filters)))
    except BackupError as exc:
        die(str(exc), 2)


# How long a restore waits for an exclusive lock (a `prune`, a `check`) to go: restic 0.14
# has no --retry-lock and refuses at once.
RESTORE_LOCK_WAIT = 1800
RESTORE_LOCK_PAUSE = 5.0        # the first pause between tries; doubled up to a minute
NO_SUCH_SNAPSHOT = b"no matching ID found"
# One wait for the whole process (a restore-many's units share it): each unit waiting its own
# 30 minutes behind a lock that stays would add up to hours, past the control machine's
# patience.
_lock_wait: dict[str, float] = {}
_lock_wait_guard = threading.Lock()


def _lock_deadline() -> float:
    with _lock_wait_guard:
        return _lock_wait.setdefault("until", time.monotonic() + RESTORE_LOCK_WAIT)


def _restore(restic: Restic, snap: str, target: str, *includes: str) -> float:
    """Restore `snap` into the empty directory `target`: first without restic's repository
    lock, then, if that failed, with it. Taking and dropping the lock is most of a small
    restore's time: over SFTP on the lab 0.28 s a restore against 0.06 s without (a replaced
    node restores a hundred upload areas). Reading without the lock is safe because nothing
    in a repository changes under a name: restic names each snapshot, index and pack file by
    the SHA-256 of its contents and encrypts it with authentication, so a read finds the
    very bytes it looks for or nothing, and restic 0.14 ends a restore that could not read
    something with an error (exit 1). A prune is no longer kept from starting while restores
    run, as their locks did: one that removes a pack a restore still reads fails that try
    (after restic's own retries of the missing file, about a minute), and the second try,
    under the lock, waits for the prune's exclusive lock to go (up to RESTORE_LOCK_WAIT,
    one wait for every restore of the process) and reads what it left."""
    t0 = time.time()
    args = ["restore", snap, "--target", target]
    for inc in includes:
        args += ["--include", inc]
    r = first = restic.run(*args, "--no-lock")
    if r.returncode != 0 and NO_SUCH_SNAPSHOT not in r.stderr:
        pause = RESTORE_LOCK_PAUSE
        while True:
            _empty(target)                      # what the try before wrote
            r = restic.run(*args)
            if r.returncode == 0 or b"already locked" not in r.stderr \
                    or time.monotonic() + pause > _lock_deadline():
                break
            time.sleep(pause)
            pause = min(pause * 2, 60.0)
    if r.returncode != 0:
        why = _restic_error(r)
        if r is not first:                      # the first try's reason may be the real one
            why = f"{_restic_error(first)}; under the lock: {why}"
        raise BackupError(f"restore of {snap[:8]} failed: {why}")
    return time.time() - t0


def _empty(target: str) -> None:
    try:
        shutil.rmtree(target)
        os.mkdir(target, 0o700)
    except OSError as exc:
        raise BackupError(f"could not empty {target} for another try: {exc}") from None


def _scratch(prefix: str) -> str:
    os.makedirs(RESTORE, mode=0o700, exist_ok=True)
    os.chmod(RESTORE, 0o700)
    sweep(RESTORE, 7 * 86400)   # restores older than a week (kept for what they replaced)
    return tempfile.mkdtemp(prefix=prefix, dir=RESTORE)


def _owner_like(path: str, ref_root: str, rel: str) -> tuple[int, int]:
    """Who should own a restored upload path on this node: the owner of the same top-level
    entry of the current upload area (a section's account), else the area's own owner.
    Account ids differ between nodes, so the snapshot's numbers are not trusted."""
    top = rel.split(os.sep, 1)[0]
    for cand in (os.path.join(ref_root, top), ref_root):
        try:
            st = os.lstat(cand)
            if stat.S_ISDIR(st.st_mode):
                return st.st_uid, st.st_gid
        except OSError:
            continue
    st = os.lstat(ref_root)
    return st.st_uid, st.st_gid


def restore_files(args: argparse.Namespace) -> None:
    t, snap = tenant_arg(args.tenant), snap_arg(args.snapshot)
    try:
        out = _restore_files(Restic(load_spec(), local=False), t, snap, upload=args.upload,
                             php_files=args.php_files, whole=True)
    except BackupError as exc:
        die(str(exc), 2)
    print(json.dumps(out))


def _restore_files(restic: Restic, t: str, snap: str, *, upload: bool, php_files: bool,
                   whole: bool) -> dict:
    """Restore `t`'s files snapshot into scratch and swap in its upload area and/or PHP
    files/. `whole` restores the snapshot entire (the live release too, for a restore
    that publishes it); otherwise only the trees swapped in: a replaced node has its
    releases from peers already, and restoring them again would double the work."""
    home = os.path.join(SITES, t)
    target = _scratch(f"{t}-{snap[:8]}-")
    includes = () if whole else tuple(
        os.path.join(home, d) for d, want in (("upload", upload), ("files", php_files)) if want)
    try:
        seconds = _restore(restic, snap, target, *includes)
    except BackupError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    root = target + home
    try:
        live = os.path.basename(os.readlink(os.path.join(root, "current")))
    except OSError:
        live = None
    out = {"dir": target, "release": live, "seconds": round(seconds, 3),
           "release_dir": os.path.join(root, "releases", live) if live else None}
    if upload:
        if not _swap_in(os.path.join(root, "upload"), os.path.join(home, "upload"),
                        os.path.join(target, "upload-before-restore")):
            raise BackupError(f"no upload area in snapshot {snap[:8]} or on this node")
        out["upload"] = "restored"
        out["upload_before"] = os.path.join(target, "upload-before-restore")
    if php_files:
        # What a PHP site wrote itself: only in the backup when no other replica has it.
        if _swap_in(os.path.join(root, "files"), os.path.join(home, "files"),
                    os.path.join(target, "files-before-restore")):
            out["php_files"] = "restored"
    return out


def restore_many(args: argparse.Namespace) -> None:
    """A replaced node's upload areas and PHP files/ from the backup, many units in one
    call: JSON lines on stdin ({"tenant", "snapshot", "upload", "php_files"}), one result
    line each on stdout. Before, govhost listed the repository and ran one `restore-files`
    over SSH per unit, one after another (a listing and a restore: two restics and two SSH
    logins per unit). Here `--jobs` restics at a time share one SSH connection to the
    repository; one unit's failure is its own result line, not the others'."""
    wants = []
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            w = json.loads(line)
            wants.append((tenant_arg(str(w["tenant"])), snap_arg(str(w["snapshot"])),
                          bool(w.get("upload")), bool(w.get("php_files"))))
        except (ValueError, KeyError, TypeError):
            die(f"line {n} of the restore list is not a restore: {line[:200]!r}")
    restic = Restic(load_spec(), local=False)

    def one(w: tuple[str, str, bool, bool]) -> dict:
        t, snap, upload, php_files = w
        res = {"tenant": t, "snapshot": snap}
        try:
            return res | {"ok": True, **_restore_files(restic, t, snap, upload=upload,
                                                       php_files=php_files, whole=False)}
        except (BackupError, OSError) as exc:
            return res | {"ok": False, "error": str(exc)}

    with restic.one_connection(), ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for res in pool.map(one, wants):
            emit(res)


def _swap_in(new: str, cur: str, before: str) -> bool:
    """Put the restored tree `new` where `cur` is, owned as `cur` is now; `cur` goes to
    `before`. False if either is missing."""
    if not os.path.isdir(new) or not os.path.isdir(cur):
        return False
    st = os.lstat(cur)
    os.lchown(new, st.st_uid, st.st_gid)
    os.chmod(new, stat.S_IMODE(st.st_mode))
    for dirpath, dirs, files in os.walk(new):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            os.lchown(p, *_owner_like(p, cur, os.path.relpath(p, new)))
    os.rename(cur, before)
    os.rename(new, cur)
    return True


def _dump_file(restic: Restic, snap: str, t: str) -> tuple[bytes, dict]:
    snaps = [s for s in restic.snapshots() if s["id"].startswith(snap)]
    if len(snaps) != 1:
        raise BackupError(f"no single snapshot {snap}")
    paths = snaps[0]["paths"]
    if len(paths) != 1:
        raise BackupError(f"snapshot {snap[:8]} is not a database snapshot")
    work = paths[0]
    ls = restic.run("ls", "--json", snap, work)
    names = []
    for line in ls.stdout.decode(errors="replace").splitlines():
        try:
            node = json.loads(line)
        except ValueError:
            continue
        if node.get("type") == "file":
            names.append(node["path"])
    sql = [n for n in names if n.endswith(".sql")]
    rows = [n for n in names if n.endswith("/rows.json")]
    if len(sql) != 1:
        raise BackupError(f"snapshot {snap[:8]} holds no database dump")
    dump = restic.run("dump", snap, sql[0])
    if dump.returncode != 0:
        raise BackupError(f"reading the dump failed: {_restic_error(dump)}")
    meta = {}
    if rows:
        r = restic.run("dump", snap, rows[0])
        if r.returncode == 0:
            meta = json.loads(r.stdout)
    return dump.stdout, meta


def _load(db: str, dump: bytes, fresh: bool) -> None:
    stmts = []
    if fresh:
        stmts.append(f"DROP DATABASE IF EXISTS {_ident(db)};")
        stmts.append(f"CREATE DATABASE {_ident(db)} CHARACTER SET utf8mb4 "
                     "COLLATE utf8mb4_unicode_ci;")
    else:
        # Tables made after the snapshot go too: the database becomes exactly the snapshot.
        r = _mariadb(sql="SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE "
                     f"TABLE_SCHEMA = '{db}';")
        for line in r.stdout.splitlines():
            name, _, kind = line.partition("\t")
            what = "VIEW" if kind == "VIEW" else "TABLE"
            stmts.append(f"DROP {what} IF EXISTS {_ident(db)}.{_ident(name)};")
    r = _mariadb(sql="SET FOREIGN_KEY_CHECKS=0;\n" + "\n".join(stmts))
    if r.returncode != 0:
        raise BackupError(f"preparing {db} failed: {_last_line(r.stderr)}")
    r = subprocess.run(["mariadb", f"--socket={DB_SOCKET}", "--user=root", db],
                       input=dump, capture_output=True, timeout=6 * 3600)
    if r.returncode != 0:
        raise BackupError(f"loading the dump into {db} failed: "
                          f"{_last_line(r.stderr.decode(errors='replace'))}")


def restore_db(args: argparse.Namespace) -> None:
    spec = load_spec()
    t, snap = tenant_arg(args.tenant), snap_arg(args.snapshot)
    entry = next((d for d in spec["databases"] if d["tenant"] == t), None)
    if entry is None:
        die(f"{t} has no database on {spec['node']}")
    db = args.into or entry["database"]
    if not DBNAME.match(db):
        die(f"bad database name {db!r}")
    t0 = time.time()
    try:
        dump, meta = _dump_file(Restic(spec, local=False), snap, t)
        if not dump.rstrip().endswith(b"-- Dump completed"):
            raise BackupError(f"the dump in {snap[:8]} is incomplete; not loaded")
        _load(db, dump, fresh=False)
    except BackupError as exc:
        die(str(exc), 2)
    print(json.dumps({"database": db, "rows": row_counts(db), "recorded": meta.get("rows"),
                      "seconds": round(time.time() - t0, 3)}))


# ---------------------------------------------------------------- drills

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def drill_files(args: argparse.Namespace) -> None:
    spec = load_spec()
    t, snap = tenant_arg(args.tenant), snap_arg(args.snapshot)
    home = os.path.join(SITES, t)
    restic = Restic(spec, local=False)
    target = _scratch(f"drill-{t}-")
    try:
        info = [s for s in restic.snapshots("--tag", f"tenant={t}") if s["id"].startswith(snap)]
        if len(info) != 1:
            raise BackupError(f"no single snapshot {snap} of {t}")
        taken = _snap_time(info[0]["time"])
        seconds = _restore(restic, snap, target)
        root = target + home
        checked = changed_since = 0
        bad: list[str] = []
        releases = os.path.join(root, "releases")
        digest_lists = {}
        if os.path.isdir(releases):
            for rid in os.listdir(releases):
                try:
                    digest_lists[rid] = digest_list.read(os.path.join(releases, rid))
                except OSError:
                    bad.append(f"releases/{rid}/{digest_list.NAME} missing")
                except ValueError as exc:
                    bad.append(f"releases/{rid}/{digest_list.NAME} damaged: {exc}")
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = os.path.join(dirpath, name)
                rel = os.path.relpath(p, root)
                parts = rel.split(os.sep)
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                checked += 1
                if parts[0] == "releases" and len(parts) > 2:
                    if parts[2] in (".digests", ".meta.json"):
                        continue
                    want = digest_lists.get(parts[1], {}).get(os.sep.join(parts[2:]))
                    if want != _sha256(p):
                        bad.append(rel)
                    continue
                src = os.path.join(home, rel)
                try:
                    st = os.lstat(src)
                except OSError:
                    bad.append(rel + " (gone from the source)")
                    continue
                if st.st_mtime > taken:
                    changed_since += 1          # changed after the snapshot: not comparable
                elif not stat.S_ISREG(st.st_mode) or _sha256(src) != _sha256(p):
                    bad.append(rel)             # (a tenant's symlink is never followed)
        result = {"tenant": t, "kind": "files", "snapshot": snap, "ok": not bad,
                  "files_checked": checked, "changed_since": changed_since,
                  "mismatches": bad[:50], "mismatch_count": len(bad),
                  "restore_seconds": round(seconds, 3)}
    except BackupError as exc:
        result = {"tenant": t, "kind": "files", "snapshot": snap, "ok": False,
                  "error": str(exc)}
    finally:
        shutil.rmtree(target, ignore_errors=True)
    print(json.dumps(result))


def drill_db(args: argparse.Namespace) -> None:
    spec = load_spec()
    t, snap = tenant_arg(args.tenant), snap_arg(args.snapshot)
    entry = next((d for d in spec["databases"] if d["tenant"] == t), None)
    if entry is None:
        die(f"{t} has no database on {spec['node']}")
    scratch = "ghdrill_" + hashlib.sha256(entry["database"].encode()).hexdigest()[:16]
    t0 = time.time()
    try:
        dump, meta = _dump_file(Restic(spec, local=False), snap, t)
        _load(scratch, dump, fresh=True)
        got = row_counts(scratch)
        want = meta.get("rows")
        result = {"tenant": t, "kind": "db", "snapshot": snap, "ok": want is not None and got == want,
                  "tables": len(got), "rows": sum(got.values()), "recorded_rows": want,
                  "restored_rows": got, "restore_seconds": round(time.time() - t0, 3)}
        if want is None:
            result["error"] = "the snapshot has no recorded row counts"
    except BackupError as exc:
        result = {"tenant": t, "kind": "db", "snapshot": snap, "ok": False, "error": str(exc)}
    finally:
        _mariadb(sql=f"DROP DATABASE IF EXISTS {_ident(scratch)};")
    print(json.dumps(result))


def _snap_time(value: str) -> float:
    from datetime import datetime
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------- repository upkeep

def _backup_node(spec: dict) -> None:
    if not spec["repository"].get("local"):
        die(f"{spec['node']} does not hold the repository; run this on the backup node")


def _clear_stale(spec: dict) -> int:
    """Before work that would trip on them, remove the locks of this node's own restic
    processes that are gone (a `check` or `prune` killed by a power cut leaves an exclusive
    lock that refuses every snapshot after it). Only those: whether a process on another
    node is alive cannot be seen from here, and restic's 30-minute rule trusts the other
    node's clock, so older foreign locks are left to `locks --clear` by an operator."""
    if not spec["repository"].get("local"):
        return 0
    found = _read_locks(spec)
    gone = [lk for lk in found or () if lk["here"] and lk["process_alive"] is False]
    if not gone:
        return 0
    _unlink_locks(spec["repository"]["path"], [lk["full_id"] for lk in gone])
    return len(gone)


def _unlink_locks(repository: str, ids: list[str]) -> None:
    """Remove these locks of a repository on this machine's disk. The repository belongs to
    its account: `locks` is opened without following a link, and each lock removed relative
    to that, so a swapped `locks` sends no unlink elsewhere."""
    repo = os.open(repository, _DIR)
    try:
        locks = os.open("locks", _DIR, dir_fd=repo)
    except OSError:
        os.close(repo)
        return
    try:
        for lid in ids:
            if SNAP.match(lid):
                try:
                    os.unlink(lid, dir_fd=locks)
                except FileNotFoundError:
                    pass
    finally:
        os.close(locks)
        os.close(repo)


LOCK_READ_SECONDS = 10


def _read_locks(spec: dict) -> list[dict] | None:
    """The local repository's locks, judged from here (root sees every process of this
    node); None when they cannot be listed."""
    locks_dir = os.path.join(spec["repository"]["path"], "locks")
    return _lock_records(["restic", "--no-cache", "-r", spec["repository"]["path"]],
                         dict(os.environ, RESTIC_PASSWORD=spec["password"]),
                         lambda lid: os.path.lexists(os.path.join(locks_dir, lid)))


LOCK_LOOK_SECONDS = 0.05


def _cat_lock(cat: list[str], env: dict, lid: str, still_there: Callable[[str], bool],
              look_first: bool) -> subprocess.CompletedProcess | None:
    """One lock as restic reads it; None when it was removed while restic read it (restic
    then retries for about 44 s, restic#1523). Where a look is cheap (`look_first`: this
    disk) the lock is looked for every LOCK_LOOK_SECONDS while restic reads: a repository
    node's run met another node's snapshot ending at every third or fourth run, and waited
    LOCK_READ_SECONDS each time (the lab's `backup run` of one unit: 2 s, or 12). Else
    restic has LOCK_READ_SECONDS before one look. A lock still there is read to the end
    (a loaded node, a slow key): a stale lock must not be missed."""
    if not look_first:
        try:
            return subprocess.run(cat, env=env, capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=LOCK_READ_SECONDS)
        except subprocess.TimeoutExpired:
            if not still_there(lid):
                return None
            return subprocess.run(cat, env=env, capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=120)
    p = subprocess.Popen(cat, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + LOCK_READ_SECONDS + 120
    try:
        while True:
            try:
                out, err = p.communicate(timeout=LOCK_LOOK_SECONDS)
                return subprocess.CompletedProcess(cat, p.returncode, out, err)
            except subprocess.TimeoutExpired:
                if not still_there(lid):
                    return None
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cat, LOCK_READ_SECONDS + 120) from None
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def _lock_records(base: list[str], env: dict, still_there: Callable[[str], bool],
                  list_timeout: float = 600, look_first: bool = True) -> list[dict] | None:
    """A repository's locks as `base` (restic and its repository arguments) reads them,
    judged from this node; None when they cannot be listed. `still_there(id)` says whether a
    lock is still in the repository: asked before each lock is read when that is cheap
    (`look_first`: a look on this disk), else only when a read timed out (over SFTP it is
    one more restic, as dear as the read)."""
    r = subprocess.run([*base, "list", "locks", "--no-lock"], env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=list_timeout)
    if r.returncode != 0:
        return None
    me, now, out = socket.gethostname(), time.time(), []
    for lid in r.stdout.decode().split():
        if not SNAP.match(lid):
            continue
        # A snapshot of another node ends meanwhile and takes its lock away: restic 0.14
        # then retries loading it for about 44 s (restic#1523), and this node's run waited
        # so. Gone from the repository: skipped; still there, it reads in under a second.
        if look_first and not still_there(lid):
            continue
        c = _cat_lock([*base, "cat", "lock", lid, "--no-lock"], env, lid, still_there,
                      look_first)
        if c is None or c.returncode != 0:        # removed meanwhile
            continue
        try:
            lock = json.loads(c.stdout)
            made = _snap_time(lock["time"])
            pid = int(lock.get("pid", 0))
        except (ValueError, KeyError, TypeError):
            continue
        here = lock.get("hostname") == me
        alive = pid_alive(pid) if here and pid > 0 else None
        age = now - made
        out.append({"id": lid[:8], "full_id": lid, "time": made,
                    "exclusive": bool(lock.get("exclusive")),
                    "host": lock.get("hostname"), "pid": pid, "age_seconds": round(age),
                    "here": here, "process_alive": alive,
                    "stale": (here and alive is False) or (not here and age > 1800)})
    return out


def locks(args: argparse.Namespace) -> None:
    """List the locks; --clear: this node's dead processes' locks, and locks of other nodes
    nobody refreshed for 30 minutes (restic unlock: an operator's decision, see above)."""
    spec = load_spec()
    _backup_node(spec)
    found = _read_locks(spec)
    if found is None:
        die("listing the repository's locks failed", 2)
    out = {"locks": found, "cleared": 0}
    if args.clear_dead:
        cleared = _clear_stale(spec)
        out.update(locks=_read_locks(spec) or [], cleared=cleared)
    elif args.clear and any(lk["stale"] for lk in found):
        _clear_stale(spec)
        subprocess.run(["restic", "--no-cache", "-r", spec["repository"]["path"], "unlock"],
                       env=dict(os.environ, RESTIC_PASSWORD=spec["password"]),
                       capture_output=True, timeout=600)
        after = _read_locks(spec) or []
        out.update(locks=after, cleared=len(found) - len(after))
    for lk in out["locks"]:
        lk.pop("full_id", None)
        lk.pop("time", None)
    print(json.dumps(out))


def rebuild(args: argparse.Namespace) -> None:
    """A new disk on the backup node: bring every snapshot back from the off-site copy. An
    empty repository (made by `install`) is made again with the off-site one's chunking, so
    the two keep deduplicating alike; snapshots already here are kept and not copied twice.
    A repository here that cannot be read, or holds data without snapshots, is left alone."""
    spec = load_spec()
    _backup_node(spec)
    if not spec.get("offsite"):
        die("no off-site repository in cluster.yaml (backup.offsite): nothing to rebuild from")
    repo = spec["repository"]["path"]
    user = spec["repository"]["user"]
    src = Restic(spec, offsite=True, local=False)
    env = dict(os.environ, RESTIC_PASSWORD=spec["password"],
               RESTIC_FROM_PASSWORD=src.env["RESTIC_PASSWORD"])
    base = ["restic", "--no-cache", "-r", repo]
    t0 = time.time()
    have = subprocess.run([*base, "snapshots", "--json", "--no-lock"], env=env,
                          capture_output=True, timeout=600)
    if have.returncode == 0:
        here = len(json.loads(have.stdout or b"[]") or [])
    else:
        err = have.stderr.decode(errors="replace")
        if not any(m in err for m in ("does not exist", "no such file", "Is there a repository")):
            die(f"the repository here cannot be read ({_restic_error(have)}); nothing changed", 2)
        here = 0
    packs = any(files for _, _, files in os.walk(os.path.join(repo, "data")))
    remade = False
    try:
        if here == 0:
            if packs:
                die(f"{repo} holds data but no snapshots; look at it (restic check) before "
                    "rebuilding; nothing changed", 2)
            if os.path.isdir(repo):
                os.rename(repo, f"{repo}.empty-{time.strftime('%Y%m%dT%H%M%S')}")
            r = subprocess.run([*base, "init", "--copy-chunker-params", "--from-repo",
                                src.args[1], "-o", src.args[3]], env=env, capture_output=True,
                               timeout=600)
            if r.returncode != 0:
                die(f"making the repository again failed: {_restic_error(r)}", 2)
            remade = True
        r = subprocess.run([*base, "copy", "--from-repo", src.args[1], "-o", src.args[3]],
                           env=env, capture_output=True, timeout=24 * 3600)
    finally:
        # root made and filled it: the repository's account must own every file of it again
        if os.path.isdir(repo):
            subprocess.run(["chown", "-R", f"{user}:{user}", repo], check=False)
    if r.returncode != 0:
        die(f"copy from off-site failed: {_restic_error(r)}", 2)
    if remade:
        _lighten(Restic(spec))
    after = subprocess.run([*base, "snapshots", "--json", "--no-lock"], env=env,
                           capture_output=True, timeout=600)
    total = len(json.loads(after.stdout or b"[]") or [])
    print(json.dumps({"ok": True, "remade": remade, "had": here, "snapshots": total,
                      "copied": total - here, "seconds": round(time.time() - t0, 3)}))


def forget(args: argparse.Namespace) -> None:
    spec = load_spec()
    _backup_node(spec)
    _clear_stale(spec)
    restic = Restic(spec)
    removed = kept = 0
    for group in spec["retention"]:
        fargs = ["forget", "--json", "--group-by", "paths", *group["keep"]]
        for tag in group["tags"]:
            fargs += ["--tag", tag]
        r = restic.run(*fargs)
        if r.returncode != 0:
            die(f"forget failed: {_restic_error(r)}", 2)
        for g in json.loads(r.stdout or b"[]") or []:
            removed += len(g.get("remove") or [])
            kept += len(g.get("keep") or [])
    out = {"removed": removed, "kept": kept, "pruned": False}
    if args.prune and removed:
        r = restic.run("prune")
        if r.returncode != 0:
            die(f"prune failed: {_restic_error(r)}", 2)
        out["pruned"] = True
    print(json.dumps(out))


def verify(args: argparse.Namespace) -> None:
    spec = load_spec()
    _backup_node(spec)
    subset = args.subset or spec.get("verify_subset_percent", 5)
    _clear_stale(spec)
    t0 = time.time()
    r = Restic(spec).run("check", f"--read-data-subset={subset}%")
    text = (r.stdout + r.stderr).decode(errors="replace")
    problems = [line for line in text.splitlines()
                if re.search(r"error|fatal|damaged|invalid|mismatch|not found|failed", line, re.I)]
    print(json.dumps({"ok": r.returncode == 0, "exit": r.returncode, "subset_percent": subset,
                      "seconds": round(time.time() - t0, 3), "problems": problems[:50]}))
    if r.returncode != 0:
        sys.exit(2)


def copy(args: argparse.Namespace) -> None:
    spec = load_spec()
    _backup_node(spec)
    if not spec.get("offsite"):
        die("no off-site repository in cluster.yaml (backup.offsite)")
    # Root reads the local repository (read only, plus a lock) and writes off-site over SFTP.
    src = Restic(spec, local=True)
    dst = Restic(spec, offsite=True, local=False)
    _clear_stale(spec)
    t0 = time.time()
    try:
        dst.ensure_init(chunker_from=src)
    except BackupError as exc:
        die(f"off-site: {exc}", 2)
    before = {s["id"] for s in dst.snapshots()}
    env = dict(dst.env, RESTIC_FROM_PASSWORD=spec["password"])
    r = subprocess.run(["restic", *dst.args, "copy", "--from-repo", spec["repository"]["path"]],
                       env=env, capture_output=True, timeout=24 * 3600)
    if r.returncode != 0:
        die(f"copy to off-site failed: {_restic_error(r)}", 2)
    after = {s["id"] for s in dst.snapshots()}
    print(json.dumps({"ok": True, "copied": len(after - before),
                      "seconds": round(time.time() - t0, 3), "snapshots": len(after)}))


def status(args: argparse.Namespace) -> None:
    try:
        with open(STATUS, encoding="utf-8") as f:
            print(f.read().strip() or "{}")
    except OSError:
        print("{}")


# ---------------------------------------------------------------- install

def _ensure_account(user: str, home: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", home, "--no-create-home",
                        "--shell", "/bin/sh", user], check=True, capture_output=True)
        return pwd.getpwnam(user)


class Planted(Exception):
    """A link where a directory of the backup layout belongs: somebody put it there."""


def _root_dirs(path: str) -> int:
    """An fd of `path`, every component of it a real directory owned by root: made (0755)
    where missing, taken back (0755) from whoever owned it (an older install let the account
    own its home). Walked by file descriptors, never by name twice, so nothing the account does
    meanwhile makes root follow a link. Raises Planted at a link or a non-directory."""
    fd = os.open("/", _DIR)
    try:
        for part in path.strip("/").split("/"):
            made = False
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, _DIR, dir_fd=fd)
                made = True
            except OSError as exc:      # ELOOP (a link) or ENOTDIR
                raise Planted(f"{path}: {part!r} is not a directory ({exc.strerror})") from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            if made or st.st_uid != 0:  # root's own directories (/srv, ...) stay as they are
                os.fchown(fd, 0, 0)
                os.fchmod(fd, 0o755)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _fresh_ssh_dir(home_fd: int, user: str) -> int:
    """An fd of the home's `.ssh`: root's, holding nothing but what install writes. One an
    older install left to the account (with whatever it put there: authorized_keys2, a
    keys file held open for writing, a FIFO, a hard link) is moved aside and deleted."""
    try:
        st = os.stat(".ssh", dir_fd=home_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        clean = False
        if stat.S_ISDIR(st.st_mode) and st.st_uid == 0:
            fd = os.open(".ssh", _DIR, dir_fd=home_fd)
            names = os.listdir(fd)
            keys = None
            if names == ["authorized_keys"]:
                keys = os.stat("authorized_keys", dir_fd=fd, follow_symlinks=False)
            clean = names == [] or (keys is not None and stat.S_ISREG(keys.st_mode)
                                    and keys.st_uid == 0 and keys.st_nlink == 1)
            if clean:
                return fd
            os.close(fd)
        aside = f".ssh.quarantine-{int(time.time())}-{os.getpid()}"
        os.rename(".ssh", aside, src_dir_fd=home_fd, dst_dir_fd=home_fd)
        print(f"govhost-backup: {user}: ~/.ssh was not root's alone; moved aside and removed",
              file=sys.stderr)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(aside, dir_fd=home_fd, ignore_errors=True)   # never follows links
        else:
            os.unlink(aside, dir_fd=home_fd)
        # what a shell the old keys file allowed may have left behind
        subprocess.run(["crontab", "-r", "-u", user], capture_output=True)
    os.mkdir(".ssh", 0o755, dir_fd=home_fd)
    fd = os.open(".ssh", _DIR, dir_fd=home_fd)
    os.fchown(fd, 0, 0)
    os.fchmod(fd, 0o755)
    return fd


def _write_keys(ssh_fd: int, text: str) -> None:
    """authorized_keys in a root-only directory: a new file (O_EXCL, never an inode somebody
    else holds open), renamed over the old one unless that holds the text already."""
    try:
        fd = os.open("authorized_keys", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                     dir_fd=ssh_fd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_uid == 0 and st.st_nlink == 1 \
                    and stat.S_IMODE(st.st_mode) == 0o644 and f.read() == text.encode():
                return
    except OSError:
        pass
    tmp = f".authorized_keys.{os.getpid()}.{time.monotonic_ns()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                 dir_fd=ssh_fd)
    try:
        os.write(fd, text.encode())
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, "authorized_keys", src_dir_fd=ssh_fd, dst_dir_fd=ssh_fd)


def _repository_dir(parent_fd: int, name: str, pw: pwd.struct_passwd) -> None:
    """The account's repository: the one directory it owns (0700). A link there is removed
    (its parent is root's by now, so nobody swaps it back meanwhile)."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=parent_fd)
        elif not stat.S_ISDIR(st.st_mode):
            raise Planted(f"{name!r} is not a directory")
    except FileNotFoundError:
        pass
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    fd = os.open(name, _DIR, dir_fd=parent_fd)
    try:
        os.fchown(fd, pw.pw_uid, pw.pw_gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _authorize(a: dict) -> None:
    """One repository account: home, ~/.ssh and the keys file root's, the repository its."""
    pw = _ensure_account(a["user"], os.path.dirname(a["dir"]))
    parent = os.path.dirname(a["dir"])
    # The account may write its repository and nothing else: its home, ~/.ssh and the keys
    # file are root's (sshd accepts that), so whoever holds its key over SFTP (every node
    # has the backup key) cannot add a key of its own, or plant a link for root to follow.
    home_fd = _root_dirs(pw.pw_dir)
    try:
        ssh_fd = _fresh_ssh_dir(home_fd, a["user"])
        try:
            # Only SFTP, nothing else: no shell, no forwarding, no pty.
            _write_keys(ssh_fd, f'restrict,command="/usr/lib/openssh/sftp-server" '
                                f'{a["public_key"]}\n')
        finally:
            os.close(ssh_fd)
    finally:
        os.close(home_fd)
    parent_fd = _root_dirs(parent)
    try:
        _repository_dir(parent_fd, os.path.basename(a["dir"]), pw)
    finally:
        os.close(parent_fd)


def install(args: argparse.Namespace) -> None:
    spec = load_spec()
    os.makedirs(STATE, mode=0o700, exist_ok=True)
    failed = []
    for a in spec["authorize"]:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", a["user"]) or not a["dir"].startswith("/") \
                or ".." in a["dir"].split("/") or a["dir"].rstrip("/") == "":
            die(f"bad repository account {a['user']!r} {a['dir']!r}")
        if not re.fullmatch(r"ssh-ed25519 [A-Za-z0-9+/=]+ [a-z-]+", a["public_key"]):
            die("bad backup public key")
        try:
            _authorize(a)
        except (Planted, OSError) as exc:     # the other accounts and the timers still go on
            failed.append(f"{a['user']}: {exc}")
    if spec["repository"].get("local"):
        # Made here, once, at activation: nodes that race to create it on their first run
        # would each write their own key and config.
        try:
            restic = Restic(spec)
            restic.ensure_init()
        except (BackupError, OSError) as exc:
            die(str(exc))
        _lighten(restic)
    _timers(spec["timers"])
    print(json.dumps({"authorized": [a["user"] for a in spec["authorize"]],
                      "timers": [t["name"] for t in spec["timers"]], "failed": failed}))
    if failed:
        die("not every repository account was set up: " + "; ".join(failed))


def _timers(timers: list[dict]) -> None:
    me = f"{NODE.sbin}/govhost-backup"
    names = {t["name"] for t in timers}
    for t in timers:
        if not re.fullmatch(r"govhost-backup-[a-z0-9-]+", t["name"]) or \
                not all(re.fullmatch(r"[A-Za-z0-9:=_.-]+", a) for a in t["args"]):
            die(f"bad timer {t['name']!r}")
    if os.path.isdir("/run/systemd/system"):
        unit_dir = "/etc/systemd/system"
        changed = False
        for t in timers:
            cmd = " ".join([me, *map(shlex.quote, t["args"])])
            changed |= write_if_changed(f"{unit_dir}/{t['name']}.service",
                              f"[Unit]\nDescription=govhost backup: {' '.join(t['args'])}\n"
                              f"[Service]\nType=oneshot\nExecStart={cmd}\nNice=10\n"
                              "IOSchedulingClass=idle\n", 0o644)
            changed |= write_if_changed(f"{unit_dir}/{t['name']}.timer",
                              f"[Unit]\nDescription=govhost backup: {' '.join(t['args'])}\n"
                              f"[Timer]\nOnCalendar={t['on_calendar']}\nPersistent=true\n"
                              f"RandomizedDelaySec={t['jitter_minutes']}m\n"
                              "[Install]\nWantedBy=timers.target\n", 0o644)
        for f in os.listdir(unit_dir):
            if f.startswith("govhost-backup-") and f.rsplit(".", 1)[0] not in names:
                if f.endswith(".timer"):
                    subprocess.run(["systemctl", "disable", "--now", f], capture_output=True)
                os.unlink(os.path.join(unit_dir, f))
                changed = True
        if changed:
            subprocess.run(["systemctl", "daemon-reload"], check=False)
        for t in timers:
            subprocess.run(["systemctl", "enable", "--now", f"{t['name']}.timer"],
                           capture_output=True)
    else:
        lines = ["# Written by govhost-backup install from /etc/govhost/current/backup.json",
                 "SHELL=/bin/sh", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        for t in timers:
            cmd = " ".join([me, *map(shlex.quote, t["args"])])
            lines.append(f"{t['cron']} root {cmd} >>/var/log/govhost/backup.log 2>&1")
        os.makedirs("/etc/cron.d", exist_ok=True)
        write_if_changed("/etc/cron.d/govhost-backup", "\n".join(lines) + "\n", 0o644)


def main() -> None:
    p = argparse.ArgumentParser(prog="govhost-backup", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install").set_defaults(fn=install)
    r = sub.add_parser("run")
    r.add_argument("--schedule")
    r.add_argument("--tenant", action="append")
    r.add_argument("--tag", action="append")
    r.add_argument("--run")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--always", action="store_true",
                   help="a snapshot of every files tree, changed or not")
    r.set_defaults(fn=run)
    s = sub.add_parser("snapshots")
    s.add_argument("--tenant")
    s.set_defaults(fn=snapshots)
    rf = sub.add_parser("restore-files")
    rf.add_argument("tenant")
    rf.add_argument("snapshot")
    rf.add_argument("--upload", action="store_true")
    rf.add_argument("--php-files", action="store_true")
    rf.set_defaults(fn=restore_files)
    rm = sub.add_parser("restore-many")
    rm.add_argument("--jobs", type=int, default=2)
    rm.set_defaults(fn=restore_many)
    rd = sub.add_parser("restore-db")
    rd.add_argument("tenant")
    rd.add_argument("snapshot")
    rd.add_argument("--into")
    rd.set_defaults(fn=restore_db)
    for name, fn in (("drill-files", drill_files), ("drill-db", drill_db)):
        d = sub.add_parser(name)
        d.add_argument("tenant")
        d.add_argument("snapshot")
        d.set_defaults(fn=fn)
    f = sub.add_parser("forget")
    f.add_argument("--prune", action="store_true")
    f.set_defaults(fn=forget)
    v = sub.add_parser("verify")
    v.add_argument("--subset", type=int)
    v.set_defaults(fn=verify)
    sub.add_parser("copy").set_defaults(fn=copy)
    lk = sub.add_parser("locks")
    lk.add_argument("--clear", action="store_true")
    lk.add_argument("--clear-dead", action="store_true")
    lk.set_defaults(fn=locks)
    sub.add_parser("rebuild").set_defaults(fn=rebuild)
    sub.add_parser("status").set_defaults(fn=status)
    args = p.parse_args()
    os.umask(0o077)
    args.fn(args)


if __name__ == "__main__":
    main()
