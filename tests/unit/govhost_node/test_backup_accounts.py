"""The backup accounts' homes, keys and repositories set up by root on the backup node, with
the account (nobody here) having prepared the ground as an older install let it: its own
~/.ssh with a second keys file, a keys file held open for writing, a FIFO, a hard link to a
file of root's, and links where the repository or its parent belongs. Run for real as root
on a scratch tree; only the account lookup is replaced."""
from __future__ import annotations

import os
import pwd
import stat
import threading

import pytest

from govhost_node import backup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0dGVzdA== govhost-backup"
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def old_layout(tmp_path, monkeypatch):
    """/srv/govhost/backup as the previous release left it: the home the account's."""
    home = tmp_path / "srv" / "govhost" / "backup"
    (home / ".ssh").mkdir(parents=True)
    for p in (home, home / ".ssh"):
        os.chown(p, NOBODY.pw_uid, NOBODY.pw_gid)
    victim = tmp_path / "etc"
    victim.mkdir()
    (victim / "shadow").write_text("root:$y$secret:19000:0:99999:7:::\n")
    os.chmod(victim, 0o755)
    fake = pwd.struct_passwd(("govhost-backup", "x", NOBODY.pw_uid, NOBODY.pw_gid, "",
                              str(home), "/bin/sh"))
    monkeypatch.setattr(backup, "_ensure_account", lambda user, h: fake)
    monkeypatch.setattr(backup.subprocess, "run", lambda *a, **k: None)   # crontab -r
    return {"home": home, "victim": victim,
            "entry": {"user": "govhost-backup", "dir": str(home / "repo"), "public_key": KEY}}


def _keys(home) -> list[str]:
    return sorted(os.listdir(home / ".ssh"))


def test_an_old_ssh_dir_with_a_second_keys_file_is_replaced_by_roots(old_layout):
    home = old_layout["home"]
    (home / ".ssh" / "authorized_keys2").write_text("ssh-ed25519 AAAA attacker\n")
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA attacker\n")
    backup._authorize(old_layout["entry"])
    assert _keys(home) == ["authorized_keys"]
    st = os.stat(home / ".ssh" / "authorized_keys")
    assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_nlink) == (0, 0o644, 1)
    assert (home / ".ssh" / "authorized_keys").read_text() == \
        f'restrict,command="/usr/lib/openssh/sftp-server" {KEY}\n'
    for p in (home, home / ".ssh"):
        assert (os.stat(p).st_uid, stat.S_IMODE(os.stat(p).st_mode)) == (0, 0o755)
    repo = os.stat(home / "repo")
    assert (repo.st_uid, stat.S_IMODE(repo.st_mode)) == (NOBODY.pw_uid, 0o700)
    # a second run changes nothing and keeps the same file
    before = os.stat(home / ".ssh" / "authorized_keys").st_ino
    backup._authorize(old_layout["entry"])
    assert os.stat(home / ".ssh" / "authorized_keys").st_ino == before


def test_a_keys_file_held_open_for_writing_writes_nowhere_after(old_layout):
    home = old_layout["home"]
    held = open(home / ".ssh" / "authorized_keys.tmp", "w")          # noqa: SIM115
    same = open(home / ".ssh" / "authorized_keys", "a")              # noqa: SIM115
    backup._authorize(old_layout["entry"])
    for f in (held, same):
        f.write("ssh-ed25519 AAAA attacker\n")
        f.close()
    assert "attacker" not in (home / ".ssh" / "authorized_keys").read_text()
    assert _keys(home) == ["authorized_keys"]


def test_a_hard_link_and_a_fifo_are_neither_written_through_nor_waited_for(old_layout):
    home, victim = old_layout["home"], old_layout["victim"]
    os.link(victim / "shadow", home / ".ssh" / "authorized_keys.tmp")
    os.mkfifo(home / ".ssh" / "authorized_keys")
    done = threading.Event()
    t = threading.Thread(target=lambda: (backup._authorize(old_layout["entry"]), done.set()),
                         daemon=True)
    t.start()
    t.join(20)
    assert done.is_set(), "install hung on a FIFO"
    assert (victim / "shadow").read_text().startswith("root:$y$secret")
    st = os.stat(victim / "shadow")
    assert st.st_uid == 0 and st.st_nlink == 1
    assert _keys(home) == ["authorized_keys"]


def test_a_link_planted_as_the_repository_is_removed_not_followed(old_layout):
    home, victim = old_layout["home"], old_layout["victim"]
    os.symlink(victim, home / "repo")
    backup._authorize(old_layout["entry"])
    assert not (home / "repo").is_symlink() and (home / "repo").is_dir()
    st = os.stat(victim)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)


def test_a_link_planted_as_a_parent_is_refused_and_nothing_follows_it(old_layout):
    home, victim = old_layout["home"], old_layout["victim"]
    os.symlink(victim, home / "repo-control")
    entry = {**old_layout["entry"], "user": "govhost-control",
             "dir": str(home / "repo-control" / "repo")}
    with pytest.raises(backup.Planted, match="repo-control"):
        backup._root_dirs(os.path.dirname(entry["dir"]))
    assert sorted(os.listdir(victim)) == ["shadow"]
    st = os.stat(victim)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)


def test_an_account_owned_parent_is_taken_back_by_root(old_layout):
    home = old_layout["home"]
    parent = home / "repo-control"
    parent.mkdir()
    os.chown(parent, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(parent, 0o700)
    fd = backup._root_dirs(str(parent))
    os.close(fd)
    assert (os.stat(parent).st_uid, stat.S_IMODE(os.stat(parent).st_mode)) == (0, 0o755)
