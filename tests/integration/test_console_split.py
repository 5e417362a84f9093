"""Issue 31, item 9: the console's web process runs as its own account, holds no key and
reads no state, and asks the broker for a fixed set of typed requests, each checked again
there. Attacked from that account, as a bug in a web handler would let an attacker act:
the real `govhost console` (two processes), the real socket, the real files.

No lab nodes are needed: everything here is on the control machine.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controlplane.console import transport
from controlplane.console.broker import Refused
from controlplane.core import paths
from controlplane.core import secrets as secrets_mod
from controlplane.core.county import County
from controlplane.people.store import People
from controlplane.security import check
from controlplane.security import findings as rules
from tests.helpers import example_inventory, free_port

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = pwd.getpwnam(paths.CONSOLE_ACCOUNT)
PASSWORD = "jiaoyu-editor-pass-2026"


def as_account(fn, uid: int = ACCOUNT.pw_uid, gid: int = ACCOUNT.pw_gid):
    """Run `fn` in a forked child as `uid` (no groups), as the web process runs: its result,
    or the name and message of what it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                out = {"value": fn()}
            except Exception as exc:      # noqa: BLE001  (reported to the parent)
                out = {"error": type(exc).__name__, "kind": getattr(exc, "kind", ""),
                       "message": str(exc)}
            os.write(w, json.dumps(out, default=str).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in
                Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)


@pytest.fixture(scope="module")
def split():
    # A place the web account can walk into (unlike pytest's own /tmp/pytest-of-root), so
    # that what keeps it out of the state is the state's own permissions.
    top = Path(tempfile.mkdtemp(prefix="govhost-split-"))
    top.chmod(0o755)
    inv = top / "inventory"
    example_inventory(inv)
    c = County(inv)
    p = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    units = frozenset(t.name for t in c.inv.tenants)
    issued = p.add("bianji", "编辑", "jiaoyu", ["editor"], units)
    p.change_password("bianji", issued.password, PASSWORD)
    p.st.close()
    port = free_port()
    proc = subprocess.Popen(["govhost", "--inventory", str(inv), "console", "--http",
                             "--direct", "--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2)
            break
        except (urllib.error.URLError, OSError):
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(proc.stderr.read().decode()[-3000:])
            time.sleep(0.3)
    web = [q for q in check.console_processes() if q["ppid"] == proc.pid]
    assert len(web) == 1, web
    yield {"inv": inv, "county": c, "proc": proc, "web": web[0]["pid"], "port": port,
           "sock": _socket_of(proc.pid)}
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    time.sleep(0.5)
    assert not Path(f"/proc/{web[0]['pid']}").exists()     # the web process ended with it
    shutil.rmtree(top, ignore_errors=True)


def _socket_of(broker_pid: int) -> Path:
    """The broker's socket: the one in /run/govhost-console-*/ that the broker listens on."""
    inodes = set()
    for fd in Path(f"/proc/{broker_pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[6] in inodes and "/govhost-console-" in parts[7]:
            return Path(parts[7])
    raise AssertionError("the broker listens on no socket")


def test_the_web_process_is_its_own_account_without_groups_or_a_way_back(split):
    st = _status(split["web"])
    assert st["Name"].strip() == paths.CONSOLE_WEB_NAME
    assert st["Uid"].split() == [str(ACCOUNT.pw_uid)] * 4
    assert st["Gid"].split() == [str(ACCOUNT.pw_gid)] * 4
    assert st["Groups"].strip() == "" and st["NoNewPrivs"].strip() == "1"
    assert _status(split["proc"].pid)["Uid"].split()[0] == "0"       # the broker keeps root
    # It listens; the broker does not face the network at all.
    assert urllib.request.urlopen(f"http://127.0.0.1:{split['port']}/login").status == 200
    # `security check` sees the split and has nothing to say about it; about a console of
    # before the split (one process, root) it says critical (tests/unit/security/).
    mine = [q for q in check.console_processes()
            if q["pid"] in (split["proc"].pid, split["web"])]
    assert {q["part"] for q in mine} == {"broker", "web"} and rules.console(mine) == []


def test_from_the_web_account_no_secret_no_state_no_key_no_broker_memory(split):
    c = split["county"]
    secret = c.state_dir / secrets_mod.SECRET_FILE
    db = c.state_dir / "state.db"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    broker = split["proc"].pid
    for path in (secret, db, c.state_dir / "backup_ed25519", f"/proc/{broker}/environ",
                 f"/proc/{broker}/mem"):
        got = as_account(lambda path=path: Path(path).read_bytes()[:1].hex())
        assert got.get("error") == "PermissionError", (path, got)
    got = as_account(lambda: sorted(os.listdir(c.state_dir)))
    assert got.get("error") == "PermissionError", got
    # The inventory's manifests themselves are readable (no secret in them): the test is
    # not passing because the account can reach nothing at all.
    assert "value" in as_account(lambda: (c.root / "cluster.yaml").read_text()[:10])
    # Signals to the broker: refused.
    got = as_account(lambda: os.kill(broker, signal.SIGKILL))
    assert got.get("error") == "PermissionError", got


def test_the_broker_grants_the_web_account_only_what_its_logged_in_person_may(split):
    sock = str(split["sock"])

    def ask(op, sid=None, files=(), **args):
        client = transport.Client(Path(sock), timeout=30)
        if sid is not None:
            args["sid"] = sid
        return client.call(op, list(files), **args)

    def attempts():
        out = {"facts": sorted(ask("facts"))}
        try:
            ask("people_list", unit="jiaoyu")
        except Refused as exc:
            out["no session"] = exc.kind
        try:
            ask("unit", sid="A" * 43, unit="jiaoyu")
        except Refused as exc:
            out["forged session"] = exc.kind
        out["wrong password"] = ask("login", name="bianji", password="nope" * 4, code="",
                                    source="10.0.0.9", device="")["ok"]
        sid = ask("login", name="bianji", password=PASSWORD, code="",
                  source="10.0.0.9", device="")["sid"]
        out["own unit"] = ask("unit", sid=sid, unit="jiaoyu")["can"]["upload"]
        for name, op, args in (
                ("another unit's page", "unit", {"unit": "chahe"}),
                ("another unit's upload", "upload_zip", {"unit": "chahe", "filename": "x.zip"}),
                ("people of its own unit", "people_list", {"unit": "jiaoyu"}),
                ("add a person", "person_add", {"unit": "jiaoyu", "name": "mole",
                                                "display": "x", "email": "m@example.cn",
                                                "role": "reviewer"}),
                ("the county's overview", "overview", {"page": 1}),
                ("the site requests", "request_list", {}),
                ("approve a request", "request_approve", {"rid": 1, "shown": "0" * 64}),
                ("decide a review", "review_decide", {"unit": "jiaoyu",
                                                      "release": "20261201T000000-aaaaaa",
                                                      "approve": True, "comment": ""})):
            try:
                ask(op, sid=sid, files=[b"PK"] if op == "upload_zip" else (), **args)
                out[name] = "done"
            except Refused as exc:
                out[name] = exc.kind
        for name, op, args in (("a request nobody defined", "shell", {"cmd": "id"}),
                               ("a unit that is a list", "unit", {"unit": ["jiaoyu"]}),
                               ("an argument too many", "unit", {"unit": "jiaoyu",
                                                                 "as": "operator"}),
                               ("files where none are taken", "submit", {"unit": "jiaoyu"})):
            try:
                ask(op, sid=sid, files=[b"x"] if op == "submit" else (), **args)
                out[name] = "done"
            except Refused as exc:
                out[name] = exc.kind
        ask("logout", sid=sid)
        try:
            ask("unit", sid=sid, unit="jiaoyu")
        except Refused as exc:
            out["after logout"] = exc.kind
        return out

    got = as_account(attempts)
    assert "value" in got, got
    out = got["value"]
    assert "keys" in out["facts"] and "units" in out["facts"]
    assert out["no session"] == "login" and out["forged session"] == "login"
    assert out["wrong password"] is False and out["own unit"] is True
    for name in ("another unit's page", "another unit's upload", "people of its own unit",
                 "add a person", "the county's overview", "the site requests",
                 "approve a request", "decide a review"):
        assert out[name] == "forbidden", (name, out[name])
    for name in ("a request nobody defined", "a unit that is a list", "an argument too many",
                 "files where none are taken"):
        assert out[name] == "bad", (name, out[name])
    assert out["after logout"] == "login"
    # The person's sessions are the broker's: the web account's cookie secret forges none.
    with split["county"].state() as st:
        rows = st.db.execute("SELECT id FROM console_sessions").fetchall()
    assert all(len(r[0]) == 64 for r in rows)          # hashes, never the ids themselves


def test_another_account_cannot_even_reach_the_broker(split):
    nobody = pwd.getpwnam("nobody")
    got = as_account(lambda: transport.Client(split["sock"], timeout=5).call("facts"),
                     nobody.pw_uid, nobody.pw_gid)
    assert got.get("error") == "BrokerDown" and "Permission denied" in got["message"], got
    parent = split["sock"].parent.stat()
    assert oct(parent.st_mode & 0o777) == "0o750" and parent.st_gid == ACCOUNT.pw_gid


def test_malformed_or_oversized_frames_from_the_web_account_end_only_their_connection(split):
    """A frame declaring 4 GiB of JSON, a thousand files, files past the upload limit, or
    JSON that is not a request: each connection is closed, and the broker answers the next
    request as before."""
    import socket
    import struct
    sock = str(split["sock"])

    def attempts():
        out = []
        for frame in (struct.pack(">I", 0xFFFFFFFF),
                      struct.pack(">I", 2) + b"[]",
                      (lambda b: struct.pack(">I", len(b)) + b)(
                          json.dumps({"op": "facts", "args": {}, "files": 1000}).encode()),
                      (lambda b: struct.pack(">I", len(b)) + b + struct.pack(">Q", 1 << 40))(
                          json.dumps({"op": "facts", "args": {}, "files": 1}).encode())):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(sock)
                s.sendall(frame)
                out.append(s.recv(16).hex())     # "": closed without an answer
        out.append(sorted(transport.Client(Path(sock), timeout=10).call("facts")))
        return out

    got = as_account(attempts)
    assert "value" in got, got
    assert got["value"][:4] == ["", "", "", ""] and "keys" in got["value"][4], got
