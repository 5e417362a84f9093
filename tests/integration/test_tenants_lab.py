"""Tenants on the real lab: chrooted SFTP accounts, publish/rollback/review of content
releases, quota, symlinks, and removing a tenant. Real sshd, real nginx, real SFTP clients."""
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from controlplane.core import accounts
from controlplane.lab import machines as lab
from tests.helpers import example_inventory, lab_ssh

from .conftest import govhost, with_county_keys
from .test_apply_lab import NODES, _body, apply_json, on_node

SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def _key(dir: Path, name: str) -> tuple[Path, str]:
    path = dir / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                   check=True)
    return path, " ".join(path.with_suffix(".pub").read_text().split()[:3])


@pytest.fixture(scope="module")
def tenants(lab_cluster, tmp_path_factory, county_keys):
    """The example county with SFTP keys for jiaoyu, weijian (review required, small quota)
    and the village 河西村 of chahe; applied once for the module."""
    root = tmp_path_factory.mktemp("tenants")
    inv = root / "inventory"
    with_county_keys(example_inventory(inv), county_keys)
    keys = {n: _key(root, n) for n in ("jiaoyu", "weijian", "chahe", "hexi")}
    with (inv / "tenants" / "jiaoyu.yaml").open("a") as f:
        f.write(f"sftp: {{keys: ['{keys['jiaoyu'][1]}']}}\n")
    with (inv / "tenants" / "weijian.yaml").open("a") as f:
        f.write(f"sftp: {{keys: ['{keys['weijian'][1]}']}}\nreview: required\nquota_mb: 1\n")
    chahe = inv / "tenants" / "chahe.yaml"
    text = chahe.read_text().replace(
        "  - name: hexi\n", f"  - name: hexi\n    sftp: {{keys: ['{keys['hexi'][1]}']}}\n")
    assert "sftp" in text, "chahe.yaml changed shape; update this fixture"
    chahe.write_text(text + f"sftp: {{keys: ['{keys['chahe'][1]}']}}\n")
    touched = ("jiaoyu", "weijian", "chahe")
    for t in touched:
        reset_content(t)
    apply_json(inv)
    placement = json.loads(govhost(inv, "plan", "--json", check=True).stdout)["placement"]
    yield {"inv": inv, "keys": {n: k[0] for n, k in keys.items()}, "placement": placement,
           "root": root}
    for t in touched:
        reset_content(t)


def _primary(tn, tenant: str) -> str:
    return NODES[tn["placement"][tenant][0]]


def sftp_port(inv: Path) -> int:
    """Units' SFTP port of the county in `inv` (its own port when the county has one)."""
    ssh = yaml.safe_load((inv / "hosts.yaml").read_text())["ssh"]
    return int(ssh.get("sftp_port") or ssh.get("port", 22))


def sftp(tn, tenant: str, key: str, commands: str, section: str | None = None):
    user = accounts.user_name(tenant, section)
    return subprocess.run(["sftp", *SSH_OPTS, "-P", str(sftp_port(tn["inv"])),
                           "-i", str(tn["keys"][key]), "-b", "-",
                           f"{user}@{_primary(tn, tenant)}"], input=commands,
                          capture_output=True, text=True, timeout=60)


def upload(tn, tenant: str, files: dict[str, str], key: str | None = None) -> None:
    src = tn["root"] / f"src-{tenant}"
    shutil.rmtree(src, ignore_errors=True)
    cmds = []
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(body)
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            cmds.append(f"-mkdir {'/'.join(parts[:i])}")
        cmds.append(f"put {src / rel} {rel}")
    res = sftp(tn, tenant, key or tenant, "\n".join(cmds) + "\n")
    assert res.returncode == 0, res.stderr


def clean(tenant: str, address: str) -> None:
    """Empty a tenant's upload area on its node (state left by earlier runs on the lab)."""
    on_node(address, f"find /srv/govhost/sites/{tenant}/upload -mindepth 1 ! -type d "
                     "-delete 2>/dev/null; true")


def reset_content(tenant: str) -> None:
    """No published content and an empty upload area on every node: the placeholder shows
    again, as other tests of the lab expect."""
    for address in NODES.values():
        clean(tenant, address)
        on_node(address, f"rm -rf /srv/govhost/sites/{tenant}/current "
                         f"/srv/govhost/sites/{tenant}/releases/*; true")


def page(tenant: str, address: str, path: str = "/") -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-H",
                          f"Host: {tenant}.qingshui.gov.cn", f"http://{address}{path}"],
                         capture_output=True, text=True, timeout=10).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def publish(tn, tenant: str, expect_rc: int = 0) -> dict:
    proc = govhost(tn["inv"], "publish", tenant, "--json")
    assert proc.returncode == expect_rc, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_sftp_is_chrooted_keys_only_and_cannot_reach_other_tenants(tenants):
    tn = tenants
    upload(tn, "weijian", {"secret.html": "weijian-only"})
    # jiaoyu sees only its own tree: / is its chroot, weijian's upload is not reachable
    res = sftp(tn, "jiaoyu", "jiaoyu", "ls /\nls /..\n")
    assert res.returncode == 0, res.stderr
    assert "upload" in res.stdout and "weijian" not in res.stdout
    for path in ("/srv/govhost/sites/weijian/upload/secret.html", "../../weijian/upload/secret.html",
                 "/etc/passwd"):
        res = sftp(tn, "jiaoyu", "jiaoyu", f"get {path} {tn['root'] / 'stolen'}\n")
        assert res.returncode != 0 and not (tn["root"] / "stolen").exists()
    # no shell, no command, no port forwarding
    user = f"{accounts.user_name('jiaoyu')}@{_primary(tn, 'jiaoyu')}"
    port = str(sftp_port(tn["inv"]))
    shell = subprocess.run(["ssh", *SSH_OPTS, "-p", port, "-i", str(tn["keys"]["jiaoyu"]), user, "id"],
                           capture_output=True, text=True, timeout=30)
    assert "uid=" not in shell.stdout
    assert _forwarded_banner(tn, user) == b""
    # one tenant's key does not open another tenant's account
    res = sftp(tn, "weijian", "jiaoyu", "ls\n")
    assert res.returncode != 0
    # no password login is offered at all
    pw = subprocess.run(["ssh", "-p", port, "-o", "StrictHostKeyChecking=no", "-o",
                         "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o",
                         "PreferredAuthentications=password,keyboard-interactive",
                         user, "true"], capture_output=True, text=True, timeout=30)
    assert pw.returncode != 0 and "Permission denied" in pw.stderr
    # the operators' own SSH still works after the sshd change: a new connection (the
    # tests' shared one was opened before the change, and sshd keeps those)
    fresh = subprocess.run([*lab.ssh_argv(_primary(tn, "jiaoyu")), "echo ok"],
                           capture_output=True, text=True, timeout=30)
    assert (fresh.returncode, fresh.stdout.strip()) == (0, "ok"), fresh.stderr


def _forwarded_banner(tn, user: str) -> bytes:
    """Open a local forward to the node's own sshd through the tenant account and read what
    comes back through it: an sshd banner if forwarding worked, nothing if it was refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = subprocess.Popen(["ssh", *SSH_OPTS, "-p", str(sftp_port(tn["inv"])),
                            "-i", str(tn["keys"]["jiaoyu"]), "-N",
                            "-L", f"127.0.0.1:{port}:{user.split('@', 1)[1]}:22", user],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("the local end of the forward never listened")
        with conn:
            try:
                return conn.recv(64)
            except (ConnectionResetError, socket.timeout):
                return b""
    finally:
        fwd.kill()
        fwd.wait()


def test_section_account_writes_only_in_its_section(tenants):
    tn = tenants
    src = tn["root"] / "village.html"
    src.write_text("河西村公告")
    ok = sftp(tn, "chahe", "hexi", f"put {src} hexi/notice.html\n", section="hexi")
    assert ok.returncode == 0, ok.stderr
    for dest in ("notice.html", "shangcun/notice.html", "../notice.html"):
        bad = sftp(tn, "chahe", "hexi", f"put {src} {dest}\n", section="hexi")
        assert bad.returncode != 0, dest
    res = publish(tn, "chahe")
    assert res["status"] == "live" and res["files"] >= 1
    for address in NODES.values():
        assert page("chahe", address, "/hexi/notice.html") == (200, "河西村公告")


def test_publish_rollback_and_symlinks(tenants):
    tn = tenants
    clean("jiaoyu", _primary(tn, "jiaoyu"))
    upload(tn, "jiaoyu", {"index.html": "教育局 v1", "news/a.html": "a"})
    first = publish(tn, "jiaoyu")
    assert first["status"] == "live" and first["files"] == 2
    for address in NODES.values():
        assert page("jiaoyu", address) == (200, "教育局 v1")
    # The unit's SFTP account cannot make links (internal-sftp -P symlink,hardlink) ...
    res = sftp(tn, "jiaoyu", "jiaoyu", "-rm pw.html\n-rm w.html\n"
               "symlink /etc/passwd pw.html\n")
    assert res.returncode != 0 and "denied" in res.stderr.lower(), res.stderr
    res = sftp(tn, "jiaoyu", "jiaoyu", "ln index.html hard.html\n")
    assert res.returncode != 0, res.stderr
    assert "hard.html" not in sftp(tn, "jiaoyu", "jiaoyu", "ls\n").stdout
    # ... and a link made some other way (planted here as root) to another tenant's file or
    # to /etc/passwd is never served
    primary = _primary(tn, "jiaoyu")
    lab_ssh(primary, "cd /srv/govhost/sites/jiaoyu/upload && ln -sfn /etc/passwd pw.html && "
            "ln -sfn /srv/govhost/sites/weijian/upload/secret.html w.html")
    upload(tn, "jiaoyu", {"index.html": "教育局 v2"})
    second = publish(tn, "jiaoyu")
    assert sorted(second["skipped"]) == ["pw.html", "w.html"]
    assert second["linked"] == 1            # news/a.html unchanged: a hard link
    for address in NODES.values():
        assert page("jiaoyu", address) == (200, "教育局 v2")
        assert page("jiaoyu", address, "/pw.html")[0] in (403, 404)
        assert page("jiaoyu", address, "/w.html")[0] in (403, 404)
    releases = json.loads(govhost(tn["inv"], "releases", "jiaoyu", "--json",
                                  check=True).stdout)
    assert [r["id"] for r in releases if r["live"]] == [second["release"]]
    back = json.loads(govhost(tn["inv"], "rollback", "jiaoyu", "--json", check=True).stdout)
    assert back["live"] == first["release"]
    for address in NODES.values():
        assert page("jiaoyu", address) == (200, "教育局 v1")
    govhost(tn["inv"], "rollback", "jiaoyu", second["release"], check=True)
    assert page("jiaoyu", _primary(tn, "jiaoyu")) == (200, "教育局 v2")


def test_review_required_changes_nothing_until_approved(tenants):
    tn = tenants
    clean("weijian", _primary(tn, "weijian"))
    before = {a: page("weijian", a) for a in NODES.values()}
    text = f"卫健局 新版 {time.time()}"          # new on every run of the lab
    upload(tn, "weijian", {"index.html": text})
    pending = publish(tn, "weijian")
    assert pending["status"] == "pending"
    assert {a: page("weijian", a) for a in NODES.values()} == before
    listed = json.loads(govhost(tn["inv"], "review", "list", "--json", check=True).stdout)
    assert [(r["tenant"], r["release_id"]) for r in listed] == [("weijian", pending["release"])]
    shown = json.loads(govhost(tn["inv"], "review", "show", "weijian", pending["release"],
                               "--json", check=True).stdout)
    changed = shown["changes"]["added"] + shown["changes"]["changed"]
    assert ["index.html", len(text.encode())] in changed
    # reject: the live site stays as it was
    govhost(tn["inv"], "review", "reject", "weijian", pending["release"], check=True)
    assert {a: page("weijian", a) for a in NODES.values()} == before
    again = publish(tn, "weijian")
    govhost(tn["inv"], "review", "approve", "weijian", again["release"], check=True)
    for address in NODES.values():
        assert page("weijian", address) == (200, text)
    audit = subprocess.run(["sqlite3", str(tn["inv"] / ".govhost" / "state.db"),
                            "SELECT action FROM audit WHERE target LIKE 'weijian/%'"],
                           capture_output=True, text=True).stdout.split()
    assert {"content.pending", "content.rejected", "content.approved"} <= set(audit)


def test_over_quota_publish_is_refused_and_the_live_site_stays(tenants):
    tn = tenants
    live = {a: page("weijian", a) for a in NODES.values()}
    try:
        upload(tn, "weijian", {"big.bin": "x" * (1024 * 1024 + 1)})   # quota_mb: 1
        proc = govhost(tn["inv"], "publish", "weijian")
        assert proc.returncode == 1
        assert "over the quota" in proc.stderr and "live site is unchanged" in proc.stderr
        assert {a: page("weijian", a) for a in NODES.values()} == live
    finally:
        clean("weijian", _primary(tn, "weijian"))


def test_removed_tenant_is_archived_and_nothing_else_is_touched(tenants):
    tn = tenants
    inv = tn["inv"]
    upload(tn, "jiaoyu", {"index.html": "still here"})
    publish(tn, "jiaoyu")
    manifest = inv / "tenants" / "tongji.yaml"
    kept = manifest.read_text()
    refused = govhost(inv, "unit", "remove", "tongji", "--yes")
    assert refused.returncode == 1 and "still in the inventory" in refused.stderr
    manifest.unlink()
    try:
        apply_json(inv)
        for address in NODES.values():
            assert "tongji" not in _body("tongji.qingshui.gov.cn", address)
        res = json.loads(govhost(inv, "unit", "remove", "tongji", "--yes", "--json",
                                 check=True).stdout)
        assert set(tn["placement"]["tongji"]) <= set(res["nodes"])   # (and any leftovers)
        for node, r in res["nodes"].items():
            assert r["archive"] and on_node(NODES[node], f"test -s {r['archive']} && echo ok") == "ok"
            assert on_node(NODES[node], "test -e /srv/govhost/sites/tongji || echo gone") == "gone"
            assert on_node(NODES[node], "id gh-tongji >/dev/null 2>&1 || echo gone") == "gone"
        for address in NODES.values():
            assert page("jiaoyu", address) == (200, "still here")
    finally:
        manifest.write_text(kept)
        apply_json(inv)
