"""Tenant accounts made by the real shadow tools (useradd, groupadd, usermod, passwd) in a
scratch copy of this machine's account files (`--root`), never in its own."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govhost_node import accounts
from govhost_node.accounts import FIRST_ID, LAST_ID, Accounts, converge_accounts

pytestmark = pytest.mark.skipif(shutil.which("useradd") is None, reason="no shadow tools")
SFTP, WEB = "govhost-sftp", "www-data"


def scratch_root(path: Path) -> Path:
    (path / "etc").mkdir(parents=True)
    for name in ("passwd", "shadow", "group", "gshadow", "login.defs"):
        shutil.copy2(f"/etc/{name}", path / "etc" / name)
    return path


@pytest.fixture
def root(tmp_path):
    return scratch_root(tmp_path / "root")


class Counting(Accounts):
    """Accounts that counts the shadow tools it runs."""

    def __init__(self, root) -> None:
        self.commands: list[list[str]] = []
        super().__init__(str(root))

    def _must(self, *cmd):
        self.commands.append(list(cmd))
        return super()._must(*cmd)


def tools_agree(root: Path) -> None:
    """shadow's own checkers read the files as sound (read-only, errors only)."""
    for cmd in (["pwck", "-r", "-q", "-R", str(root)], ["grpck", "-r", "-R", str(root)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)


def unit(name: str, *sections: str) -> dict:
    return {"name": name, "user": f"gh-{name}",
            "sections": [{"name": s, "user": f"gh-{name}.{s}"} for s in sections]}


def files(root: Path) -> dict:
    """What the account files say: users, groups with members (group and gshadow), and the
    locked passwords."""
    def rows(name):
        return [line.split(":") for line in (root / "etc" / name).read_text().split("\n")
                if line and not line.startswith(("#", "+", "-"))]
    return {"users": {p[0]: (int(p[2]), int(p[3]), p[5], p[6]) for p in rows("passwd")},
            "groups": {g[0]: (int(g[2]), set(filter(None, g[3].split(",")))) for g in rows("group")},
            "gshadow": {g[0]: set(filter(None, g[3].split(","))) for g in rows("gshadow")},
            "locked": {s[0] for s in rows("shadow") if s[1].startswith(("!", "*"))}}


def check(root: Path, units: list[dict], former: frozenset[str] = frozenset()) -> None:
    """Every unit's accounts as tenants.py's layout says, in both group files. The users of
    `former` sections stay (without a key: converge never deletes an account) and may stay
    in their unit's group."""
    f = files(root)
    ids = set()
    for t in units:
        names = [t["user"], *(s["user"] for s in t["sections"])]
        for name in names:
            uid, gid, home, shell = f["users"][name]
            assert FIRST_ID <= uid <= LAST_ID and (home, shell) == (
                f"{accounts.SITES}/{t['name']}", accounts.SHELL)
            assert gid == f["groups"][name][0], name          # its own group is its primary
            assert name in f["locked"], name
            assert uid not in ids
            ids.add(uid)
            assert name in f["groups"][SFTP][1]
        want = {WEB, *(s["user"] for s in t["sections"])}
        for members in (f["groups"][t["user"]][1], f["gshadow"][t["user"]]):
            assert want <= members and members - want <= former, t
        for s in t["sections"]:
            assert f["groups"][s["user"]][1] == {t["user"]}


def test_units_get_their_accounts_in_one_write_and_a_second_run_changes_nothing(root):
    units = [unit(f"u{i}") for i in range(40)] + [unit("jiaoyu", "news", "notice")]
    acc = Counting(root)
    converge_accounts(acc, units, SFTP, WEB)
    check(root, units)
    tools_agree(root)
    assert acc.commands == []                        # no useradd, groupadd, passwd, gpasswd
    assert acc.done["users_made"] == 43 and acc.done["groups_made"] == 44
    f = files(root)
    assert all(f["users"][t["user"]][0] == f["users"][t["user"]][1] for t in units)
    # the old files kept beside the new, as the tools keep them
    assert (root / "etc" / "passwd-").read_text() == Path("/etc/passwd").read_text()
    assert oct((root / "etc" / "shadow").stat().st_mode & 0o777) == \
        oct(Path("/etc/shadow").stat().st_mode & 0o777)
    before = {n: (root / "etc" / n).stat().st_mtime_ns for n in accounts.FILES}
    again = Counting(root)
    converge_accounts(again, units, SFTP, WEB)
    assert again.commands == [] and again.done["users_made"] == 0
    assert {n: (root / "etc" / n).stat().st_mtime_ns for n in accounts.FILES} == before


def test_the_tools_work_on_what_was_written_and_an_account_changed_is_put_right(root):
    units = [unit("jiaoyu", "news"), unit("weijian")]
    converge_accounts(Accounts(str(root)), units, SFTP, WEB)
    passwd = root / "etc" / "passwd"
    passwd.write_text(passwd.read_text().replace(
        f"{accounts.SITES}/weijian:{accounts.SHELL}", f"{accounts.SITES}/weijian:/bin/bash"))
    shadow = root / "etc" / "shadow"
    shadow.write_text(shadow.read_text().replace("gh-jiaoyu:!", "gh-jiaoyu:$6$planted"))
    acc = Counting(root)
    converge_accounts(acc, units, SFTP, WEB)
    assert sorted(c[0] for c in acc.commands) == ["passwd", "usermod"]
    check(root, units)
    tools_agree(root)
    # and a new unit after that: the tools' changes and the write's live together
    more = [*units, unit("nongye", "notice")]
    converge_accounts(Accounts(str(root)), more, SFTP, WEB)
    check(root, more)
    tools_agree(root)


def test_ids_taken_meanwhile_by_another_program_are_not_given_again(root):
    """Another program (a package's postinst) makes an account between the read and the
    write: under the lock the files are read again, and the new accounts get other ids."""
    acc = Accounts(str(root))
    taken = acc._free_id()
    for t in (unit("jiaoyu"),):
        acc.group(SFTP)
        acc.user(t["user"], f"{accounts.SITES}/jiaoyu", t["user"], [SFTP])
    with open(root / "etc" / "group", "a") as f:
        f.write(f"someone:x:{taken}:\nother:x:{taken + 1}:\n")
    with open(root / "etc" / "passwd", "a") as f:
        f.write(f"someone:x:{taken + 1}:{taken}::/nonexistent:/usr/sbin/nologin\n")
    with open(root / "etc" / "shadow", "a") as f:
        f.write("someone:!:20000:0:99999:7:::\n")
    with open(root / "etc" / "gshadow", "a") as f:
        f.write("someone:!::\nother:!::\n")
    acc.finish()
    f = files(root)
    assert f["groups"]["someone"][0] == taken and f["users"]["someone"][0] == taken + 1
    assert taken not in (f["groups"][SFTP][0], f["groups"]["gh-jiaoyu"][0])
    assert f["users"]["gh-jiaoyu"][0] not in (taken, taken + 1)
    assert f["users"]["gh-jiaoyu"][1] == f["groups"]["gh-jiaoyu"][0]
    tools_agree(root)


def test_an_account_made_meanwhile_with_the_same_name_stops_the_write(root):
    acc = Accounts(str(root))
    acc.group(SFTP)
    acc.user("gh-jiaoyu", f"{accounts.SITES}/jiaoyu", "gh-jiaoyu", [SFTP])
    with open(root / "etc" / "passwd", "a") as f:
        f.write("gh-jiaoyu:x:4242:4242::/home/x:/bin/sh\n")
    before = {n: (root / "etc" / n).read_bytes() for n in accounts.FILES}
    with pytest.raises(accounts.AccountError, match="gh-jiaoyu"):
        acc.finish()
    assert {n: (root / "etc" / n).read_bytes() for n in accounts.FILES} == before


def test_the_write_waits_for_the_tools_lock_and_the_tools_wait_for_its(root, monkeypatch):
    """The same lock as glibc's lckpwdf: useradd (which takes it first) waits while the
    write holds it, and the write gives up, naming the lock, while another holds it."""
    with accounts._PasswdLock(str(root / "etc" / ".pwd.lock")):
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(["useradd", "--root", str(root), "--no-create-home", "blocked"],
                           capture_output=True, timeout=2)
    assert "blocked" not in files(root)["users"]
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
                               "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\n"
                               "time.sleep(60)", str(root / "etc" / ".pwd.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(accounts, "LOCK_SECONDS", 0.3)
        acc = Accounts(str(root))
        converge_accounts_args = ([unit("jiaoyu")], SFTP, WEB)
        with pytest.raises(accounts.AccountError, match="locked"):
            converge_accounts(acc, *converge_accounts_args)
    finally:
        holder.kill()
        holder.wait()
    assert "gh-jiaoyu" not in files(root)["users"]


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True),
                min_size=1, max_size=4))
def test_sections_come_and_go_and_the_files_follow(tmp_path_factory, changes):
    """A unit's sections change from run to run: after each run the files are exactly what
    the layout says, and a run with nothing changed runs no command."""
    root = scratch_root(tmp_path_factory.mktemp("acc"))
    ever: set[str] = set()
    for sections in changes:
        units = [unit("jiaoyu", *sections), unit("weijian")]
        converge_accounts(Accounts(str(root)), units, SFTP, WEB)
        check(root, units, frozenset(ever))
        ever |= {f"gh-jiaoyu.{s}" for s in sections}
        again = Counting(root)
        converge_accounts(again, units, SFTP, WEB)
        assert again.commands == []


@pytest.mark.parametrize("bad", ["gh-x:0:0", "gh-x\nroot", "gh-x\u2028y", "Gh-x", "-gh",
                                 "gh-" + "x" * 40, "gh x", ""])
def test_a_name_that_could_break_a_line_or_a_field_is_refused_before_any_write(root, bad):
    before = {n: (root / "etc" / n).read_bytes() for n in accounts.FILES}
    with pytest.raises(accounts.AccountError, match="bad account name"):
        converge_accounts(Accounts(str(root)), [{"name": "x", "user": bad, "sections": []}],
                          SFTP, WEB)
    with pytest.raises(accounts.AccountError, match="bad account name"):
        converge_accounts(Accounts(str(root)), [unit("x")], SFTP, bad or "-")
    assert {n: (root / "etc" / n).read_bytes() for n in accounts.FILES} == before


@pytest.mark.parametrize("written", [1, 2, 3])
def test_a_crash_between_the_files_is_completed_by_the_next_converge(root, monkeypatch, written):
    """The files are replaced one after another (group, gshadow, shadow, passwd); a crash
    after any of them leaves them out of step, and the next converge completes them: every
    account with its group, its locked password and its gshadow entry, the tools' checkers
    content, and a converge after that changes nothing."""
    units = [unit("jiaoyu", "news"), unit("weijian")]
    real, done = accounts._replace, []

    def crashing(path, lines):
        if len(done) == written:
            raise KeyboardInterrupt("power cut")
        done.append(path)
        real(path, lines)

    monkeypatch.setattr(accounts, "_replace", crashing)
    with pytest.raises(KeyboardInterrupt):
        converge_accounts(Accounts(str(root)), units, SFTP, WEB)
    monkeypatch.setattr(accounts, "_replace", real)
    acc = Counting(root)
    converge_accounts(acc, units, SFTP, WEB)
    assert acc.commands == []                         # no passwd --lock writing "!x" in passwd
    check(root, units)
    tools_agree(root)
    assert "!x" not in (root / "etc" / "passwd").read_text()
    again = Counting(root)
    converge_accounts(again, units, SFTP, WEB)
    assert again.commands == [] and again.done["users_made"] == 0
    assert files(root)["users"]["gh-weijian"][0] == files(root)["groups"]["gh-weijian"][0]


def test_other_accounts_lines_are_kept_byte_for_byte(root):
    """A full name with a Unicode line break (usermod -c takes U+2028 and U+0085), a line
    without a final newline, comments and NIS lines: all kept as they were, and the new
    entries go before the NIS lines (compat lookups read nothing after "+")."""
    r = subprocess.run(["useradd", "--root", str(root), "--no-create-home", "-c",
                        "Bob\u2028Jones\u0085x", "bob"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name, nis in (("passwd", "+::::::"), ("group", "+:::")):
        path = root / "etc" / name
        path.write_text(path.read_text() + "# a comment\n" + nis)      # no final newline
    before = {n: (root / "etc" / n).read_bytes() for n in ("passwd", "group")}
    converge_accounts(Accounts(str(root)), [unit("jiaoyu")], SFTP, WEB)
    passwd = (root / "etc" / "passwd").read_bytes()
    assert "bob:x:".encode() in passwd and "Bob\u2028Jones\u0085x".encode() in passwd
    kept = [line for line in before["passwd"].split(b"\n") if line]
    assert [line for line in passwd.split(b"\n") if line and not line.startswith(b"gh-")] == kept
    assert passwd.rstrip(b"\n").split(b"\n")[-1] == b"+::::::"
    assert (root / "etc" / "group").read_bytes().rstrip(b"\n").split(b"\n")[-1] == b"+:::"
    assert "gh-jiaoyu" in files(root)["users"]


def test_a_crash_then_a_converge_with_other_units_still_completes_gshadow(root, monkeypatch):
    """Killed right after group was replaced, then run with only some of the units: the
    groups of the others are in group but not in gshadow; they get their gshadow entries
    all the same (every group of govhost's id range)."""
    units = [unit(f"u{i}") for i in range(4)]
    real = accounts._replace

    def crashing(path, lines):
        real(path, lines)
        raise KeyboardInterrupt("power cut after group")

    monkeypatch.setattr(accounts, "_replace", crashing)
    with pytest.raises(KeyboardInterrupt):
        converge_accounts(Accounts(str(root)), units, SFTP, WEB)
    monkeypatch.setattr(accounts, "_replace", real)
    converge_accounts(Accounts(str(root)), units[:2], SFTP, WEB)
    check(root, units[:2])
    tools_agree(root)
    assert {"gh-u2", "gh-u3"} <= set(files(root)["gshadow"])


def test_a_unit_and_its_group_keep_one_id_when_ids_were_taken_meanwhile(root):
    acc = Accounts(str(root))
    converge_first = [unit(f"u{i}") for i in range(3)]
    acc.group(SFTP)
    for t in converge_first:
        acc.user(t["user"], f"{accounts.SITES}/{t['name']}", t["user"], [SFTP])
        acc.add_member(t["user"], WEB)
    taken_g, taken_u = acc.groups["gh-u0"], acc.users["gh-u1"].uid
    r1 = subprocess.run(["groupadd", "--root", str(root), "-g", str(taken_g), "other"],
                        capture_output=True, text=True)
    r2 = subprocess.run(["useradd", "--root", str(root), "-u", str(taken_u), "-N",
                         "--no-create-home", "someone"], capture_output=True, text=True)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    acc.finish()
    check(root, converge_first)
    tools_agree(root)
    f = files(root)
    for t in converge_first:
        assert f["users"][t["user"]][0] == f["users"][t["user"]][1] == f["groups"][t["user"]][0]


def test_the_lock_wait_leaves_the_callers_timer_running(root):
    import signal
    fired = []
    before = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with accounts._PasswdLock(str(root / "etc" / ".pwd.lock")):
            pass
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.5
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
