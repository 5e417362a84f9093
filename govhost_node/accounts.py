"""A node's unit accounts: the new ones written into the account files in one locked pass,
the rare correction of an existing one made with Debian's shadow tools (usermod, passwd).

Why not `useradd` per unit, as before stop 58: a 5,000-unit county on 3 nodes puts about
3,300 units on a node, and each new unit ran four commands (groupadd, useradd, passwd
--lock, gpasswd), each rewriting and syncing the account files; useradd also searched them
for a free id once per candidate. Measured in a scratch copy: 52 ms a unit in the first
hundred, 114 ms at 3,500 accounts, growing with the accounts already there (bench/
accounts_scale.py). The first apply of that county took 702 s, most of it here.

How the one pass stays as safe as the tools:
- it holds the lock every tool that writes these files takes first (glibc's `lckpwdf`, an
  fcntl lock on /etc/.pwd.lock: shadow's useradd, usermod, passwd, vipw, systemd-sysusers
  and PAM's password changes all wait for it), and reads the files again under it: an
  account another program made meanwhile is seen, and an id it took is not given again;
- each file is written whole beside itself, synced, the old one kept as `<file>-` (as the
  tools do), and renamed over it: a crash leaves the old file or the new, never half;
- lines are what useradd and groupadd write: `name:x:uid:gid::home:shell`, a locked
  password (`!`) with login.defs' ageing, `name:x:gid:members`, `name:!::members`.
The tests check the result with the tools' own checkers (pwck, grpck).

`root` is where the files are (a scratch copy for the tests and the bench; the tools get
`--root`); on a node it is "/".
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from govhost_node.layout import NODE

SITES = NODE.sites
# Tenant accounts get ids from a range of their own: the system range (100-999) runs out
# below a thousand tenants, and the regular range belongs to people.
FIRST_ID, LAST_ID = 200000, 999999
ID_RANGE = ["-K", f"UID_MIN={FIRST_ID}", "-K", f"UID_MAX={LAST_ID}",
            "-K", f"GID_MIN={FIRST_ID}", "-K", f"GID_MAX={LAST_ID}",
            "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]   # no subordinate ids
SHELL = "/usr/sbin/nologin"
UNIT_PREFIX = "gh-"                     # controlplane.core.accounts.user_name
LOCK_SECONDS = 15                       # as long as lckpwdf waits
# What a name written into the files may be (the control plane's gh-<unit>[.<section>],
# at most 32 characters; useradd's own rule, with Debian's dot): nothing that could end a
# field or a line.
NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
FILES = ("passwd", "shadow", "group", "gshadow")


class AccountError(Exception):
    """The account files could not be changed: what, and why."""


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def _split(text: str) -> list[str]:
    """An account file's lines: split at "\n" only. str.splitlines also splits at U+2028,
    U+0085, "\r" and more, which a full name set with usermod -c may hold: the write would
    have cut that account's line in two."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _fields(path: str, count: int) -> list[list[str]]:
    """The colon-separated entries of an account file (comments, NIS lines and short lines
    skipped)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = _split(f.read())
    except FileNotFoundError:
        return []
    return [p for p in (line.split(":") for line in lines
                        if line and not line.startswith(("#", "+", "-")))
            if len(p) >= count]


class Accounts:
    """The node's users and groups, read once; what is new is kept here and written by
    `finish`, what must change in an existing account is done by the tools then. Asking
    NSS per tenant was quadratic (1.5 s of a 2.1 s converge at 900 accounts)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._tool_root = [] if os.path.realpath(root) == "/" else ["--root", root]
        self._read()
        self._next_id = FIRST_ID
        self._new_groups: dict[str, int] = {}
        self._new_users: dict[str, User] = {}
        self._joins: dict[str, set[str]] = {}            # group -> users joining it
        self._fixes: dict[str, list[str]] = {}           # user -> usermod arguments
        self._to_lock: set[str] = set()
        self._primary: dict[str, str] = {}               # new user -> its primary group
        self._unshadowed: set[str] = set()               # existing users without shadow
        self._dangling: set[str] = set()
        self.done = {"users_made": 0, "groups_made": 0, "memberships_added": 0,
                     "users_corrected": 0}

    def _path(self, name: str) -> str:
        return os.path.join(self.root, "etc", name)

    def _read(self) -> None:
        self.users = {p[0]: User(p[0], int(p[2]), int(p[3]), p[5], p[6])
                      for p in _fields(self._path("passwd"), 7)
                      if p[2].isdigit() and p[3].isdigit()}
        groups = [g for g in _fields(self._path("group"), 4) if g[2].isdigit()]
        self.groups = {g[0]: int(g[2]) for g in groups}
        self.group_members = {g[0]: set(filter(None, g[3].split(","))) for g in groups}
        self.members: dict[str, set[str]] = {}            # user -> supplementary groups
        for name, mem in self.group_members.items():
            for user in mem:
                self.members.setdefault(user, set()).add(name)
        shadow = _fields(self._path("shadow"), 2)
        self.shadowed = {s[0] for s in shadow}
        self.locked = {s[0] for s in shadow if s[1].startswith(("!", "*"))}
        self._uids = {u.uid for u in self.users.values()}
        self._gids = set(self.groups.values())
        # gshadow's groups (None: the system has no gshadow, and none is written)
        self.gshadowed = {g[0] for g in _fields(self._path("gshadow"), 1)} \
            if os.path.exists(self._path("gshadow")) else None

    def _free_id(self) -> int:
        """The lowest id of the range free as a user id and as a group id, so that a
        unit's user and its group share one number (as useradd gives them)."""
        i = self._next_id
        while i in self._uids or i in self._gids:
            i += 1
        if i > LAST_ID:
            raise AccountError(f"no free account id left in {FIRST_ID}-{LAST_ID}")
        self._next_id = i
        return i

    # ------------------------------------------------------------ what is wanted

    @staticmethod
    def _name(name: str) -> str:
        if not NAME.fullmatch(name):
            raise AccountError(f"bad account name {name!r}: lower-case letters, digits, "
                               f"'_', '.' and '-', at most 32, not starting with a digit, "
                               f"'.' or '-'")
        return name

    def group(self, name: str) -> int:
        if name not in self.groups:
            self._name(name)
            gid = self._free_id()
            self._gids.add(gid)
            self._new_groups[name] = gid
            self.groups[name] = gid
            self.group_members[name] = set()
        return self.groups[name]

    def _set_groups(self, user: str, groups: list[str]) -> None:
        for name in self.members.get(user, set()):
            self.group_members.get(name, set()).discard(user)
        self.members[user] = set(groups)
        for name in groups:
            self.group_members.setdefault(name, set()).add(user)

    def user(self, user: str, home: str, primary: str, groups: list[str]) -> User:
        """The account as wanted: a new one is made by `finish`, an existing one that
        differs is corrected then (usermod), and locked if it is not (no password login,
        ever). The User returned is final once `finish` has run."""
        gid = self.group(primary)
        pw = self.users.get(self._name(user))
        if any(c in home for c in ":\n\r") or not home.startswith("/"):
            raise AccountError(f"bad home directory {home!r} for {user}")
        if pw is None:
            # the user's id is its group's where that is free (as useradd chooses)
            uid = gid if FIRST_ID <= gid <= LAST_ID and gid not in self._uids \
                else self._free_id()
            self._uids.add(uid)
            pw = self.users[user] = self._new_users[user] = User(user, uid, gid, home, SHELL)
            self._primary[user] = primary
            for g in groups:
                self._joins.setdefault(g, set()).add(user)
            self._set_groups(user, groups)
            return pw
        if (pw.home, pw.shell, pw.gid) != (home, SHELL, gid) \
                or self.members.get(user, set()) != set(groups):
            self._fixes[user] = ["--home", home, "--shell", SHELL, "--gid", primary,
                                 "--groups", ",".join(groups), user]
            pw.home, pw.shell, pw.gid = home, SHELL, gid
            self._set_groups(user, groups)
        if user not in self.shadowed:             # a crash before its shadow entry was written
            self._unshadowed.add(user)
        elif user not in self.locked:
            self._to_lock.add(user)
        return pw

    def add_member(self, group: str, user: str) -> None:
        self._name(user)
        if group not in self.groups:
            raise AccountError(f"no group {group!r} for {user} to join")
        if user not in self.group_members.get(group, set()):
            self._joins.setdefault(group, set()).add(user)
            self.group_members.setdefault(group, set()).add(user)
            self.members.setdefault(user, set()).add(group)

    # ------------------------------------------------------------ making it so

    def finish(self) -> dict[str, int]:
        """Write what is new in one locked pass, then correct and lock existing accounts
        with the tools. What was done (added up over the calls)."""
        self._dangling = self._dangling_members()
        if self._new_groups or self._new_users or self._joins or self._unshadowed \
                or self._dangling or self._gshadow_missing():
            with self._files_locked():
                self._write_new()
        for user, args in sorted(self._fixes.items()):
            self._must("usermod", *args)
            self.done["users_corrected"] += 1
        for user in sorted(self._to_lock):
            self._must("passwd", "--lock", user)
            self.locked.add(user)
        self._fixes.clear()
        self._to_lock.clear()
        return self.done

    def _dangling_members(self) -> set[str]:
        """Unit accounts (`gh-…`) named as a group's member that do not exist: a crash after
        the group file was written and before passwd was, then a converge without that unit.
        A member that is no account does nothing, but shadow's checkers call the files
        unsound, and they are taken out."""
        return {m for members in self.group_members.values() for m in members
                if m.startswith(UNIT_PREFIX) and m not in self.users}

    def _range_groups(self) -> list[str]:
        """The groups with ids in govhost's range: the units' and their sections'."""
        return [g for g, gid in self.groups.items() if FIRST_ID <= gid <= LAST_ID]

    def _gshadow_missing(self) -> bool:
        """A group of govhost's range that gshadow (where there is one) lacks."""
        return self.gshadowed is not None and \
            any(g not in self.gshadowed for g in self._range_groups())

    def _must(self, *cmd: str) -> None:
        r = subprocess.run([cmd[0], *self._tool_root, *cmd[1:]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise AccountError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")

    def _files_locked(self):
        return _PasswdLock(self._path(".pwd.lock"))

    def _write_new(self) -> None:
        """Under the lock: the files as they are now, the new accounts added, each file
        replaced whole, in the order group, gshadow, shadow, passwd: a crash between two
        leaves a group without its user or a shadow entry without its account, never an
        account without its group or its locked password, and the next converge completes
        it (a unit's shadow and gshadow entries are written by name, not appended twice)."""
        now = {name: self._lines(name) for name in FILES}
        users_now = {p[0]: p for p in (line.split(":") for line in now["passwd"]) if len(p) >= 7}
        groups_now = {g[0]: g for g in (line.split(":") for line in now["group"]) if len(g) >= 4}
        made_meanwhile = sorted((set(self._new_users) & set(users_now))
                                | (set(self._new_groups) & set(groups_now)))
        if made_meanwhile:
            raise AccountError(f"accounts made by another program while govhost made them: "
                               f"{', '.join(made_meanwhile)}; run the apply again")
        self._renumber({int(p[2]) for p in users_now.values() if p[2].isdigit()},
                       {int(g[2]) for g in groups_now.values() if g[2].isdigit()})
        days = int(time.time() // 86400)
        ageing = _ageing(self._path("login.defs"))
        shadow = {u.name: f"{u.name}:!:{days}:{ageing}:::" for u in self._new_users.values()}
        shadow |= {u: f"{u}:!:{days}:{ageing}:::" for u in self._unshadowed}
        out = {"passwd": _insert(now["passwd"], [
            f"{u.name}:x:{u.uid}:{u.gid}::{u.home}:{u.shell}" for u in self._new_users.values()]),
            "shadow": _upsert(now["shadow"], shadow)}
        joined = 0
        for name in ("group", "gshadow"):
            if now[name] is None:                 # no gshadow on this system: none written
                continue
            lines, seen = [], set()
            for line in now[name]:
                parts = line.split(":")
                if len(parts) >= 4 and (parts[0] in self._joins or self._dangling):
                    have = [m for m in parts[3].split(",") if m and m not in self._dangling]
                    add = sorted(self._joins.get(parts[0], set()) - set(have))
                    parts[3] = ",".join(have + add)
                    joined += len(add) if name == "group" else 0
                    line = ":".join(parts)
                if len(parts) >= 4:
                    seen.add(parts[0])
                lines.append(line)
            missing = set(self._joins) - seen - set(self._new_groups)
            if missing and name == "group":
                raise AccountError(f"groups to join that are not in {self._path('group')}: "
                                   f"{', '.join(sorted(missing))}")
            made = {g: ",".join(sorted(self._joins.get(g, ()))) for g in self._new_groups}
            if name == "group":
                joined += sum(len(self._joins.get(g, ())) for g in self._new_groups)
                out[name] = _insert(lines, [f"{g}:x:{self._new_groups[g]}:{m}"
                                            for g, m in made.items()])
            else:
                # a group of govhost's range that gshadow lacks (a crash before it was
                # written, then a converge with other units; or older files)
                made |= {g: ",".join(sorted(self.group_members.get(g, set()) - self._dangling))
                         for g in self._range_groups() if g not in seen and g not in made}
                out[name] = _upsert(lines, {g: f"{g}:!::{m}" for g, m in made.items()})
                self.gshadowed = seen | set(made)
        for name in ("group", "gshadow", "shadow", "passwd"):
            if name in out:
                _replace(self._path(name), out[name])
        if not self._tool_root and shutil.which("nscd"):     # as the tools do
            for db in ("passwd", "group"):
                subprocess.run(["nscd", "-i", db], capture_output=True, check=False)
        self.locked |= set(shadow)
        self.shadowed |= set(shadow)
        self.done["users_made"] += len(self._new_users)
        self.done["groups_made"] += len(self._new_groups)
        self.done["memberships_added"] += joined
        self._new_users.clear()
        self._new_groups.clear()
        self._primary.clear()
        self._joins.clear()
        self._unshadowed.clear()
        for members in self.group_members.values():
            members -= self._dangling
        self._dangling = set()

    def _lines(self, name: str) -> list[str] | None:
        try:
            with open(self._path(name), encoding="utf-8", errors="surrogateescape") as f:
                return _split(f.read())
        except FileNotFoundError:
            if name == "gshadow":
                return None
            raise AccountError(f"{self._path(name)} is missing") from None

    def _renumber(self, uids_now: set[int], gids_now: set[int]) -> None:
        """Ids another program took since the files were read are not given again: those
        new accounts get ids free now, a unit's user and its new group one id together."""
        self._uids |= uids_now
        self._gids |= gids_now
        for name, pw in sorted(self._new_users.items()):
            g = self._primary[name]
            if g in self._new_groups and (self._new_groups[g] in gids_now
                                          or pw.uid in uids_now):
                i = self._free_id()
                self._uids.add(i)
                self._gids.add(i)
                self._new_groups[g] = self.groups[g] = pw.uid = i
        for g, gid in sorted(self._new_groups.items()):
            if gid in gids_now:
                self._new_groups[g] = self.groups[g] = self._free_id()
                self._gids.add(self.groups[g])
        for name, pw in sorted(self._new_users.items()):
            pw.gid = self.groups[self._primary[name]]
            if pw.uid in uids_now:
                pw.uid = self._free_id()
                self._uids.add(pw.uid)


def _insert(lines: list[str], new: list[str]) -> list[str]:
    """`new` entries before the first NIS line ("+…", "-…", which must stay last for the
    compat lookup), else at the end, as useradd places them."""
    at = next((i for i, line in enumerate(lines) if line.startswith(("+", "-"))), len(lines))
    return [*lines[:at], *new, *lines[at:]]


def _upsert(lines: list[str], entries: dict[str, str]) -> list[str]:
    """Each entry in place of the line of the same name, or added (see _insert)."""
    out, done = [], set()
    for line in lines:
        name = line.split(":", 1)[0]
        if name in entries and ":" in line and name not in done:
            out.append(entries[name])
            done.add(name)
        elif name in entries and ":" in line:
            continue                                   # a second line of that name
        else:
            out.append(line)
    return _insert(out, [v for k, v in entries.items() if k not in done])


def _ageing(login_defs: str) -> str:
    """min:max:warn days of a new password, as useradd takes them from login.defs."""
    want = {"PASS_MIN_DAYS": "0", "PASS_MAX_DAYS": "99999", "PASS_WARN_AGE": "7"}
    try:
        with open(login_defs, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in want and parts[1].lstrip("-").isdigit():
                    want[parts[0]] = parts[1]
    except FileNotFoundError:
        pass
    return f"{want['PASS_MIN_DAYS']}:{want['PASS_MAX_DAYS']}:{want['PASS_WARN_AGE']}"


def _replace(path: str, lines: list[str]) -> None:
    """The file written whole beside itself with its mode and owner, synced, the old one
    kept as `<path>-`, then renamed over it."""
    st = os.stat(path) if os.path.exists(path) else None
    mode = st.st_mode & 0o7777 if st else 0o600
    data = ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape")
    if st:
        with open(path, "rb") as f:
            old = f.read()
        _write_file(f"{path}-", old, mode, st)
    _write_file(f"{path}+", data, mode, st)
    os.rename(f"{path}+", path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_file(path: str, data: bytes, mode: int, st: os.stat_result | None) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0)
    try:
        if st:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


class _PasswdLock:
    """glibc's lckpwdf: an fcntl write lock on /etc/.pwd.lock, waited for at most
    LOCK_SECONDS (what lckpwdf waits)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_PasswdLock":
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                          0o600)
        try:
            if threading.current_thread() is threading.main_thread():
                self._wait_blocking()
            else:
                self._wait_polling()
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def _gave_up(self) -> AccountError:
        return AccountError(f"the account files are locked ({self.path}) by another program "
                            f"for over {LOCK_SECONDS} s")

    def _wait_blocking(self) -> None:
        """Queued behind the tools' own blocking waits (F_SETLKW), as lckpwdf waits: a
        lock tried every 50 ms lost to a busy useradd loop (a reviewer's test), a queued
        one does not. A timer interrupts the wait; the caller's own timer, and a blocked
        SIGALRM, are as they were afterwards (the time the caller's timer spent here is
        taken off it; one due meanwhile fires at once)."""
        def expired(signum: int, frame: object) -> None:
            raise TimeoutError
        started = time.monotonic()
        before = signal.signal(signal.SIGALRM, expired)
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        callers = signal.setitimer(signal.ITIMER_REAL, LOCK_SECONDS)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except TimeoutError:
            raise self._gave_up() from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, before)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if callers[0] > 0:
                left = callers[0] - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), callers[1])

    def _wait_polling(self) -> None:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > deadline:
                    raise self._gave_up() from exc
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def converge_accounts(acc: Accounts, tenants: list[dict], sftp_group: str,
                      web_user: str) -> dict[str, User]:
    """Every account the node's units need (tenants.json's `tenants`), made or corrected.
    The unit's user is in every section's group (it may write everywhere); a section's user
    is in the unit's group only to traverse upload/ (r-x); the web server's user is in each
    unit's group (nginx reads releases/ and files/). The users, by name."""
    acc.group(sftp_group)
    users: dict[str, User] = {}
    for t in tenants:
        home = os.path.join(SITES, t["name"])
        for sec in t["sections"]:
            acc.group(sec["user"])
        users[t["user"]] = acc.user(t["user"], home, t["user"],
                                    [sftp_group, *(sec["user"] for sec in t["sections"])])
        acc.add_member(t["user"], web_user)
        for sec in t["sections"]:
            users[sec["user"]] = acc.user(sec["user"], home, sec["user"], [sftp_group, t["user"]])
    acc.finish()
    return users
