"""govhost-node's release steps run for real in a directory of their own (`Layout.under`):
receive from a real tar stream, stage with the real `nginx -t`, activate with a real nginx
answering on loopback, roll back, prune; the firewall's dead-man switch with the real `nft`
in a network namespace of the test's own. The lab tests run the same steps on every node at
every apply."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from govhost_node import challenges, digests, exits, releases
from govhost_node.layout import Layout
from govhost_node.system import NodeExit

REPO = Path(__file__).resolve().parents[3]
NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
needs_nginx = pytest.mark.skipif(not NGINX or os.geteuid() != 0,
                                 reason="needs nginx (scripts/setup.sh installs it) and root")
ADDRESS = "127.0.78.1"


def node(base: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """govhost-node as the playbooks run it, with every node path under `base`."""
    driver = ("import sys; from govhost_node.layout import Layout; from govhost_node.node "
              "import main; main(sys.argv[2:], Layout.under(sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", driver, str(base), *args], input=stdin,
                          capture_output=True, cwd=REPO, timeout=120)


def nginx_conf(base: Path, release: str, extra: str = "") -> str:
    lay = Layout.under(str(base))
    return f"""pid {lay.pidfile('govhost-nginx')};
error_log {base}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{
        listen {ADDRESS}:80;
        server_name govhost-probe;
        include release-id.conf;
        location = /health {{ return 200 "ok\\n"; }}
        {extra}
    }}
}}
"""


def archive(files: dict[str, bytes], listed: dict[str, bytes] | None = None) -> bytes:
    """A release as apply ships it: files and their digest list, tar.gz."""
    listed = files if listed is None else listed
    files = {**files, digests.NAME: digests.format_list(
        {p: hashlib.sha256(d).hexdigest() for p, d in listed.items()}).encode()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def release_files(base: Path, release: str, extra: str = "", tenants: str = "jiaoyu\n"):
    return {"nginx.conf": nginx_conf(base, release, extra).encode(),
            "tenants.txt": tenants.encode(), "sites/jiaoyu.conf": b"# jiaoyu\n"}


def ship(base: Path, release: str, files: dict[str, bytes], since: str | None = None,
         sent: dict[str, bytes] | None = None):
    """receive (`sent`: only these files travel, the rest come from release `since`), then
    stage."""
    r = node(base, "receive", release, *([since] if since else []),
             stdin=archive(files if sent is None else sent, listed=files))
    if r.returncode != 0:
        return r
    return node(base, "stage", release)


@pytest.fixture
def base(tmp_path):
    (tmp_path / "etc/govhost/releases").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    yield tmp_path
    pid = tmp_path / "run/govhost-nginx.pid"
    if pid.exists() and pid.read_text().strip():
        try:
            os.kill(int(pid.read_text()), signal.SIGQUIT)
        except ProcessLookupError:
            pass


A, B, C = "a" * 16, "b" * 16, "c" * 16


@needs_nginx
def test_a_release_is_received_checked_staged_and_goes_live(base):
    r = ship(base, A, release_files(base, A))
    assert r.returncode == 0, r.stderr.decode()
    lay = Layout.under(str(base))
    assert (Path(lay.releases) / A / ".complete").exists()
    assert (base / "var/log/govhost/tenants/jiaoyu").is_dir()
    assert releases.intact(f"{lay.releases}/{A}")
    r = node(base, "activate", A)
    assert r.returncode == 0, r.stderr.decode()
    assert b"activated release " + A.encode() in r.stdout
    r = node(base, "probe", A, ADDRESS)
    assert r.returncode == 0, r.stderr.decode()
    with urllib.request.urlopen(urllib.request.Request(
            f"http://{ADDRESS}/release", headers={"Host": "govhost-probe"}), timeout=5) as got:
        assert got.read().decode().strip() == A
    # the next release only sends what changed; unchanged files are hard links of A's
    files = release_files(base, B)
    r = ship(base, B, files, since=A, sent={"nginx.conf": files["nginx.conf"]})
    assert r.returncode == 0, r.stderr.decode()
    assert os.stat(f"{lay.releases}/{A}/sites/jiaoyu.conf").st_ino == \
        os.stat(f"{lay.releases}/{B}/sites/jiaoyu.conf").st_ino
    assert node(base, "activate", B).returncode == 0
    assert node(base, "probe", B, ADDRESS).returncode == 0      # reloaded (HUP), not restarted
    status = json.loads(node(base, "status").stdout)
    assert status["release"] == B and status["intact"] and status["nginx_running"]
    assert set(status) == {"release", "intact", "nginx_running", "agent_running", "php_running",
                           "bootstrap", "boot_time", "firewall", "floating", "vrrp_running",
                           "vrrp_released", "vrrp_by_hand"}
    assert status["firewall"] == "off" and status["floating"] is None
    r = node(base, "rollback")
    assert r.returncode == 0 and f"rolled back to release {A}".encode() in r.stdout
    assert node(base, "probe", A, ADDRESS).returncode == 0
    # activating the live release again changes nothing, `previous` included
    before = Path(lay.previous).read_text()
    assert node(base, "activate", A).returncode == 0
    assert Path(lay.previous).read_text() == before and releases.current_id(lay) == A


@needs_nginx
def test_a_release_nginx_refuses_never_becomes_complete(base):
    r = ship(base, A, release_files(base, A, extra="no_such_directive on;"))
    assert r.returncode == exits.NGINX_REFUSED
    assert b"no_such_directive" in r.stderr and b"nginx -t refused release" in r.stderr
    lay = Layout.under(str(base))
    assert not os.path.exists(f"{lay.releases}/{A}")
    assert not os.path.exists(f"{lay.releases}/.{A}.recv")
    assert node(base, "activate", A).returncode == 1
    # a warning is a refusal too: nginx would run, but not as rendered
    r = ship(base, B, release_files(base, B, extra="location / { } location / { }"))
    assert r.returncode == exits.NGINX_REFUSED


def test_a_tenant_name_that_is_not_a_name_is_refused(base):
    files = {"nginx.conf": b"", "tenants.txt": b"ok\n../../etc\n"}
    r = ship(base, A, files)
    assert r.returncode == 1 and b"bad tenant name" in r.stderr
    assert not (base / "var/log/govhost/tenants/ok").exists()     # refused before anything


def test_a_file_that_does_not_match_its_digest_is_refused(base):
    files = {"nginx.conf": b"events {}\n", "tenants.txt": b""}
    r = node(base, "receive", A, stdin=archive({**files, "nginx.conf": b"changed on the way"},
                                               listed=files))
    assert r.returncode == 1 and b"does not match its digest list" in r.stderr
    assert not os.listdir(Layout.under(str(base)).releases)
    r = node(base, "receive", A, stdin=archive(files, listed={}))
    assert r.returncode == 1           # an empty list proves nothing


def test_a_delta_on_a_base_that_is_gone_or_changed_asks_for_the_whole(base):
    files = {"nginx.conf": b"events {}\n", "tenants.txt": b"", "a.conf": b"a\n"}
    lay = Layout.under(str(base))
    r = node(base, "receive", B, A, stdin=archive(files))
    assert r.returncode == exits.BASE_MISSING and b"is not here" in r.stderr
    # A received by hand and marked complete (what stage does after its checks)
    assert node(base, "receive", A, stdin=archive(files)).returncode == 0
    os.rename(f"{lay.releases}/.{A}.recv", f"{lay.releases}/{A}")
    Path(lay.releases, A, ".complete").touch()
    # a file of A edited on the node: the delta would carry it on, so it is refused
    Path(lay.releases, A, "a.conf").write_text("edited by hand\n")
    r = node(base, "receive", B, A, stdin=archive({"tenants.txt": b""}, listed=files))
    assert r.returncode == exits.BASE_MISSING and b"was modified on this node" in r.stderr
    assert not os.path.exists(f"{lay.releases}/.{B}.recv")
    assert Path(lay.releases, A, "a.conf").read_text() == "edited by hand\n"  # base untouched
    # A put right: a delta removes what the new release no longer has
    Path(lay.releases, A, "a.conf").write_text("a\n")
    smaller = {"nginx.conf": b"events {}\n", "tenants.txt": b""}
    r = node(base, "receive", B, A, stdin=archive({}, listed=smaller))
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(os.listdir(f"{lay.releases}/.{B}.recv")) == \
        sorted([digests.NAME, "nginx.conf", "tenants.txt"])
    assert Path(lay.releases, A, "a.conf").exists()


def test_prune_keeps_the_newest_and_never_the_live_or_previous(base):
    lay = Layout.under(str(base))
    ids = [f"{i:016x}" for i in range(8)]
    for n, i in enumerate(ids):
        Path(lay.releases, i).mkdir()
        os.utime(f"{lay.releases}/{i}", (1_000_000 + n, 1_000_000 + n))
    Path(lay.releases, ".x.recv").mkdir()
    os.symlink(f"releases/{ids[0]}", lay.current)
    Path(lay.previous).write_text(ids[1] + "\n")
    assert node(base, "prune", "3").returncode == 0
    assert sorted(os.listdir(lay.releases)) == sorted([ids[0], ids[1], *ids[-3:]])
    assert node(base, "prune", "x; rm -rf /").returncode == 1


def test_challenge_answers_are_written_checked_and_removed(tmp_path):
    lay = Layout.under(str(tmp_path))
    challenges.apply(lay, "put", ["tok_1 tok_1.thumb-print\n"])
    answer = Path(lay.challenges, "tok_1")
    assert answer.read_text() == "tok_1.thumb-print" and answer.stat().st_mode & 0o777 == 0o644
    for bad in ["../../etc/passwd x.y", "tok x.y\u2028z", "tok $(reboot)", "tok"]:
        with pytest.raises(Exception, match="bad"):
            challenges.apply(lay, "put", [bad])
    assert sorted(os.listdir(lay.challenges)) == ["tok_1"]
    old = Path(lay.challenges, "stale")
    old.write_text("x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    challenges.apply(lay, "remove", ["tok_1"])
    assert os.listdir(lay.challenges) == []


NFT = shutil.which("nft") or (os.path.exists("/usr/sbin/nft") and "/usr/sbin/nft")
UNSHARE = shutil.which("unshare")


@pytest.mark.skipif(not NFT or not UNSHARE or os.geteuid() != 0,
                    reason="needs nft and unshare (scripts/setup.sh) and root")
def test_the_firewall_goes_live_pending_and_is_confirmed_or_put_back(tmp_path):
    """In a network namespace of the test's own (the host's rules are never touched): a
    change goes live pending with its dead-man switch armed; `confirm` keeps it; an
    unconfirmed change is put back to the confirmed rules by `revert` with its digest only."""
    script = tmp_path / "fw.py"
    script.write_text(f"""
import json, os, subprocess, sys
sys.path.insert(0, {str(REPO)!r})
from govhost_node import firewall
from govhost_node.layout import Layout
lay = Layout.under({str(tmp_path)!r})
rel = lay.releases + "/r1"
os.makedirs(rel)
os.makedirs(lay.logs)
os.symlink("releases/r1", lay.current)
def rules(port):
    # as sites/firewall.py renders it: the table replaced in one transaction
    return ("# confirm_seconds=600\\ntable inet govhost_fw\\ndelete table inet govhost_fw\\n"
            "table inet govhost_fw {{\\n chain input {{\\n"
            "  type filter hook input priority 0; policy accept;\\n"
            "  tcp dport " + str(port) + " drop\\n }}\\n}}\\n")
def live():
    out = subprocess.run(["nft", "list", "table", "inet", "govhost_fw"],
                         capture_output=True, text=True).stdout
    return [p for p in ("1111", "2222") if p in out]
seen = {{}}
open(rel + "/firewall.nft", "w").write(rules(1111))
firewall.sync(lay, "r1"); seen["first"] = (firewall.status(lay), live())
firewall.confirm(lay); seen["confirmed"] = (firewall.status(lay), live())
firewall.sync(lay, "r1"); seen["again"] = (firewall.status(lay), live())
open(rel + "/firewall.nft", "w").write(rules(2222))
firewall.sync(lay, "r1"); seen["second"] = (firewall.status(lay), live())
firewall.revert(lay, "0" * 64, "r1"); seen["other digest"] = (firewall.status(lay), live())
firewall.revert(lay, firewall.digest_of(lay.firewall + "/pending.nft"), "r1")
seen["reverted"] = (firewall.status(lay), live())
os.remove(rel + "/firewall.nft")
firewall.sync(lay, "r1"); seen["none"] = (firewall.status(lay), live())
firewall.disarm(lay)
print(json.dumps(seen))
""")
    r = subprocess.run([UNSHARE, "--net", sys.executable, str(script)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"first": ["pending", ["1111"]], "confirmed": ["ok", ["1111"]],
                    "again": ["ok", ["1111"]], "second": ["pending", ["2222"]],
                    "other digest": ["pending", ["2222"]], "reverted": ["reverted", ["1111"]],
                    "none": ["off", []]}


def test_the_probe_waits_for_the_reload_by_time_not_by_a_count_of_tries(monkeypatch):
    """The probe promised 60 s but gave up after 500 quick tries (about 10 s), seen on the
    lab's 5,000-unit apply. The nodes' HTTP stands in here: a clock that moves 0.02 s a
    try, the old release for the first 1,000 tries (20 s), then the new one."""
    clock = {"t": 0.0, "asked": 0}

    def get(address, path, timeout):
        if path == "/health":
            return 200, "ok"
        clock["asked"] += 1
        clock["t"] += 0.02
        return 200, ("b" * 16 if clock["asked"] > 1000 else "a" * 16)
    monkeypatch.setattr(releases, "_get", get)
    monkeypatch.setattr(releases.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(releases.time, "sleep", lambda s: None)
    releases.probe("b" * 16, "127.0.0.1")
    assert clock["asked"] == 1001
    clock.update(t=0.0, asked=-10**9)                   # never the new one: 60 s, then no
    with pytest.raises(NodeExit, match="serves release 'aaaaaaaaaaaaaaaa'"):
        releases.probe("b" * 16, "127.0.0.1")
    assert 59 <= clock["t"] <= 61
