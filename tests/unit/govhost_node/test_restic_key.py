"""The backup repository's key made cheap to open (issue 37), with the real restic on a local
repository: the key `restic init` made is replaced by one restic opens after milliseconds of
scrypt, the repository's snapshots read as before, an operator's own key is left alone, and a
planted link in the repository is not followed."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import pytest

from govhost_node import backup, restic_key

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")
PASSWORD = "abcdefghijklmnopqrstuvwxyz234567"


def _restic(repo, *args: str, password: str = PASSWORD, check: bool = True):
    return subprocess.run(["restic", "-r", str(repo), *args], capture_output=True, check=check,
                          env={**os.environ, "RESTIC_PASSWORD": password,
                               "RESTIC_CACHE_DIR": str(repo) + "-cache"})


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    _restic(repo, "init")
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.html").write_text("<h1>教育局</h1>")
    _restic(repo, "backup", str(data), "--tag", "tenant=jiaoyu")
    monkeypatch.setattr(backup, "STATE", str(tmp_path / "state"))
    return repo


def _node_restic(repo) -> backup.Restic:
    spec = {"password": PASSWORD, "repository": {"url": str(repo), "path": str(repo),
                                                 "user": "root", "local": True}}
    return backup.Restic(spec)


def _keys(repo) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in (repo / "keys").iterdir()}


def test_the_initial_key_is_replaced_by_a_light_one_that_restic_opens(repo):
    (old,) = _keys(repo)
    assert not restic_key.is_light(_keys(repo)[old])
    new = _node_restic(repo).lighten_key()
    keys = _keys(repo)
    assert list(keys) == [new] and new != old
    assert {k: keys[new][k] for k in ("kdf", "N", "r", "p")} == {"kdf": "scrypt", **restic_key.LIGHT}
    # A fresh restic, with no hint, opens it and reads what the old key wrote.
    snaps = json.loads(_restic(repo, "snapshots", "--json", "--no-lock").stdout)
    assert [s["tags"] for s in snaps] == [["tenant=jiaoyu"]]
    listed = json.loads(_restic(repo, "key", "list", "--json").stdout)
    assert [k["id"] for k in listed if k["current"]] == [new[:8]]
    assert _restic(repo, "check").returncode == 0
    # The name is the SHA-256 of the bytes, as restic names every file it stores.
    assert __import__("hashlib").sha256((repo / "keys" / new).read_bytes()).hexdigest() == new
    # The wrong password still opens nothing.
    assert _restic(repo, "cat", "config", password="x" * 32, check=False).returncode != 0
    # Again: nothing to do, nothing written.
    assert _node_restic(repo).lighten_key() is None
    assert list(_keys(repo)) == [new]


def test_an_operators_own_key_is_left_alone(repo, tmp_path):
    (tmp_path / "other").write_text("the operator's own passphrase\n")
    _restic(repo, "key", "add", "--new-password-file", str(tmp_path / "other"))
    before = _keys(repo)
    new = _node_restic(repo).lighten_key()
    after = _keys(repo)
    foreign = [n for n in before if not restic_key.opens(PASSWORD, before[n])]
    assert len(foreign) == 1 and set(after) == {new, foreign[0]}
    assert _restic(repo, "cat", "config",
                   password="the operator's own passphrase").returncode == 0


def test_a_light_key_left_by_a_cut_run_is_checked_before_the_old_one_goes(repo):
    (old,) = _keys(repo)
    master = json.loads(_restic(repo, "cat", "masterkey").stdout)
    name, raw = restic_key.seal(PASSWORD, master)
    (repo / "keys" / name).write_bytes(raw)        # written, then the run was cut
    assert _node_restic(repo).lighten_key() == name
    assert list(_keys(repo)) == [name]


def test_a_light_key_restic_cannot_use_is_never_trusted(repo):
    """A light key whose MAC checks but whose master key is not the repository's, named to
    share the old key's first 8 characters (what `restic key list` shows): restic refuses it
    alone, so it is not taken for proof; a good one is made, and the bad one goes too (restic
    could pick it first and fail)."""
    (old,) = _keys(repo)
    master = json.loads(_restic(repo, "cat", "masterkey").stdout)
    master["encrypt"] = base64.b64encode(bytes(32)).decode()
    _, raw = restic_key.seal(PASSWORD, master)
    bad = old[:8] + "0" * 56
    (repo / "keys" / bad).write_bytes(raw)
    new = _node_restic(repo).lighten_key()
    assert set(_keys(repo)) == {new} and new not in (old, bad)
    assert _restic(repo, "check").returncode == 0


def test_two_runs_at_once_leave_one_working_key(repo):
    import threading
    results, errors = [], []

    def one():
        try:
            results.append(_node_restic(repo).lighten_key())
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    runs = [threading.Thread(target=one) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert not errors and sorted(results, key=str) == sorted([None, list(_keys(repo))[0]],
                                                             key=str)
    assert len(_keys(repo)) == 1 and _restic(repo, "cat", "config").returncode == 0


def test_planted_files_of_any_shape_are_passed_over(repo):
    """Whatever a node plants in keys/ (numbers JSON cannot hold, nesting deep enough to break
    a parser, scrypt costs of hours or gigabytes, a FIFO, a directory) neither crashes the
    node program, nor hangs it, nor costs it more than a light key: it ends in a BackupError
    (restic itself stops at such files) and the working key stays."""
    (old,) = _keys(repo)
    keys = repo / "keys"
    (keys / ("a" * 64)).write_text('{"kdf": "scrypt", "N": 1e400, "r": 8, "p": 1}')
    (keys / ("b" * 64)).write_text("[" * 60000)
    for name, n, r, p in (("c", 1 << 15, 8, 192), ("d", 4, 1 << 19, 2)):
        (keys / (name * 64)).write_text(json.dumps({"kdf": "scrypt", "N": n, "r": r, "p": p,
                                                    "salt": "AAAAAAAAAAA=", "data": "A"}))
        assert not restic_key.opens(PASSWORD, json.loads((keys / (name * 64)).read_text()))
    os.mkfifo(keys / ("e" * 64))
    (keys / ("f" * 64)).mkdir()
    try:
        outcome = _node_restic(repo).lighten_key()
    except backup.BackupError as exc:
        outcome = exc
    for name in "abcde":
        (keys / (name * 64)).unlink()
    (keys / ("f" * 64)).rmdir()
    # either restic stopped at the junk and nothing was removed, or the light key replaced
    # the old one: never a repository without a working key
    assert list(_keys(repo)) == ([old] if isinstance(outcome, Exception) else [outcome])
    assert _restic(repo, "cat", "config").returncode == 0


def test_too_many_key_files_are_refused_before_any_is_tried(repo):
    for i in range(restic_key.MAX_KEYS):
        (repo / "keys" / f"{i:064x}").write_text("{}")
    with pytest.raises(backup.BackupError, match="key files"):
        _node_restic(repo).lighten_key()


def test_links_planted_in_the_repository_are_not_followed(repo, tmp_path):
    """The keys directory belongs to the repository's account, which every node reaches over
    SFTP: a link there instead of the directory, or of a key file, is refused or ignored."""
    outside = tmp_path / "outside"
    _restic(outside, "init", password="another repository's password")
    (foreign,) = (outside / "keys").iterdir()
    shutil.copy(foreign, outside / ("0" * 64))
    (repo / "keys" / ("1" * 64)).symlink_to(outside / ("0" * 64))
    new = _node_restic(repo).lighten_key()
    assert (outside / ("0" * 64)).exists() and (repo / "keys" / ("1" * 64)).is_symlink()
    assert new in _keys(repo)
    keys = repo / "keys"
    shutil.move(str(keys), str(tmp_path / "real-keys"))
    keys.symlink_to(tmp_path / "real-keys")
    with pytest.raises(OSError):
        _node_restic(repo).lighten_key()


def test_seal_and_opens_agree_and_a_changed_byte_is_refused():
    master = {"mac": {"k": base64.b64encode(os.urandom(16)).decode(),
                      "r": base64.b64encode(os.urandom(16)).decode()},
              "encrypt": base64.b64encode(os.urandom(32)).decode()}
    _, raw = restic_key.seal(PASSWORD, master)
    key = json.loads(raw)
    assert restic_key.opens(PASSWORD, key) and not restic_key.opens(PASSWORD[::-1], key)
    data = bytearray(base64.b64decode(key["data"]))
    data[20] ^= 1
    assert not restic_key.opens(PASSWORD, {**key, "data": base64.b64encode(data).decode()})
    for bad in ({**key, "N": 1 << 30}, {**key, "kdf": "argon2"}, {**key, "salt": "!"},
                {**key, "N": "x"}, {k: v for k, v in key.items() if k != "data"}):
        assert not restic_key.opens(PASSWORD, bad)
    with pytest.raises(ValueError, match="encryption key"):
        restic_key.seal(PASSWORD, {**master, "encrypt": base64.b64encode(b"short").decode()})

