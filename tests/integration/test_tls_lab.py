"""HTTPS on the real lab against real CAs: Pebble (Debian's package, default chaos on: 5 % of
good nonces refused, validation delayed 0-15 s) with pebble-challtestsrv as its DNS for
HTTP-01, and a second Pebble resolving through a real BIND that govhost updates by RFC 2136
for DNS-01. Every check of what is served is a real TLS handshake with a node's nginx."""
import json
import shlex
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from controlplane.core.county import County
from controlplane.lab import services as lab_services
from controlplane.monitoring.exporter import Prober
from controlplane.sites import probes
from controlplane.tls import certs as tls_certs
from tests.helpers import example_inventory, tamper_watcher_stopped

from .conftest import govhost, with_county_keys
from .test_apply_lab import NODES as _NODES
from .test_apply_lab import on_node

PEBBLE_A = "127.0.2.11"     # HTTP-01, DNS from challtestsrv
PEBBLE_B = "127.0.2.12"     # DNS-01, DNS from BIND
BIND_PORT = 1153
TSIG = "govhost-acme"
NODES = list(_NODES.items())


@pytest.fixture(scope="module")
def services(lab_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("tls-services")
    dirs = [base / "challtestsrv", base / "pebble-a", base / "bind", base / "pebble-b"]
    try:
        dns_a = lab_services.challtestsrv_up(dirs[0], default_ipv4="10.77.0.11")
        # Pebble reuses a valid authorization half of the time by default (as public CAs do
        # for 30 days); the failure test needs every order validated afresh. The rest of
        # its chaos stays on.
        root_a = lab_services.pebble_up(dirs[1], PEBBLE_A, 14100, dns_a,
                                        env={"PEBBLE_AUTHZREUSE": "0"})
        secret = lab_services.bind_up("qingshui.gov.cn", ["10.77.0.11", "10.77.0.12"], dirs[2],
                                      "127.0.0.1", BIND_PORT)
        root_b = lab_services.pebble_up(dirs[3], PEBBLE_B, 14200, f"127.0.0.1:{BIND_PORT}",
                                        env={"PEBBLE_AUTHZREUSE": "0"})
        yield {"root_a": root_a, "root_b": root_b, "dirs": dirs, "secret": secret}
    finally:
        for d in dirs:
            lab_services.stop_dir(d)


def _county(tmp: Path, keys: Path, tls: dict, tenants: dict[str, dict] | None = None) -> Path:
    dest = tmp / "inventory"
    with_county_keys(example_inventory(dest), keys)
    cluster = yaml.safe_load((dest / "cluster.yaml").read_text())
    cluster["tls"] = tls
    cluster.pop("backup", None)
    (dest / "cluster.yaml").write_text(yaml.safe_dump(cluster, allow_unicode=True))
    hosts = yaml.safe_load((dest / "hosts.yaml").read_text())
    for n in hosts["nodes"]:
        n["roles"] = [r for r in n["roles"] if r != "backup"]
    (dest / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    for name, extra in (tenants or {}).items():
        p = dest / "tenants" / f"{name}.yaml"
        doc = yaml.safe_load(p.read_text())
        doc.update(extra)
        p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return dest


def _json(proc):
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _hosts(inv: Path) -> list[str]:
    names = ["www.qingshui.gov.cn", "qingshui.gov.cn"]
    for p in sorted((inv / "tenants").glob("*.yaml")):
        names.append(f"{p.stem}.qingshui.gov.cn")
    return names


def fetch(host: str, address: str, root: Path, path: str = "/") -> tuple[int, dict, str]:
    """(status, headers, serial) of one HTTPS request to `address`, verified against `root`
    for `host`, as a browser would."""
    ctx = ssl.create_default_context(cafile=str(root))
    with socket.create_connection((address, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            cert = s.getpeercert()
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                      "User-Agent: govhost-test\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return int(head[0].split()[1]), headers, cert["serialNumber"].lower()


@pytest.fixture(scope="module")
def http01(services, tmp_path_factory, county_keys):
    """The example county with HTTP-01 SAN certificates of at most 10 names, one unit on the
    county CA and one with a bought (imported) certificate."""
    inv = _county(tmp_path_factory.mktemp("http01"), county_keys, {
        "issuer": "acme",
        "acme": {"directory": f"https://{PEBBLE_A}:14100/dir",
                 "contact": "webmaster@qingshui.gov.cn",
                 "ca_bundle": str(services["dirs"][1] / "tls-ca.pem"),
                 "challenge": "http-01", "names_per_certificate": 10,
                 # Pebble's root is nobody's public root: what its certificates verify to
                 "issued_root": str(services["root_a"])}},
        {"caizheng": {"tls": {"issuer": "internal"}}, "tongji": {"tls": {"issuer": "manual"}}})
    # Names resolve to different nodes: any node must answer the CA's check.
    for i, host in enumerate(_hosts(inv)):
        lab_services.point(host, [NODES[i % 3][1]], mgmt=f"{lab_services.CHALLTEST_ADDRESS}:8055")
    govhost(inv, "apply", "--yes", check=True)
    first = govhost(inv, "cert", "renew", "--json", timeout=900)
    return inv, _json(first), first


def test_every_unit_answers_https_on_every_node_with_a_chain_to_pebbles_root(http01, services):
    inv, res, proc = http01
    acme = [r for r in res["results"] if r["issuer"] == "acme"]
    assert acme and all(r["ok"] for r in acme), proc.stdout + proc.stderr
    assert res["apply"]["result"] == "changed"
    rows = {r["lineage"]: r for r in _json(govhost(inv, "cert", "status", "--json"))}
    # The ACME names (portal, console, 17 tenants and their aliases, a preview host per
    # unit) in groups of at most 10, each unit whole: one order per group, few groups.
    names = [n for k, r in rows.items() if k.startswith("acme-") for n in r["names"]]
    assert "jiaoyu.preview.qingshui.gov.cn" in names and "caizheng.preview.qingshui.gov.cn" in names
    assert len(acme) == res["orders_this_week"] == len([k for k in rows if k.startswith("acme-")])
    assert len(acme) <= -(-len(names) // 10) + 1
    assert rows["manual-tongji"]["state"] == "import needed"
    assert all(r["state"] == "ok" for k, r in rows.items() if k != "manual-tongji")
    assert all(len(r["names"]) <= 10 for r in rows.values())
    internal_root = Path(inv / ".govhost/tls/ca/root.pem")
    exported = govhost(inv, "cert", "ca", "export", check=True).stdout
    assert exported == internal_root.read_text()
    for host in _hosts(inv):
        if host.startswith("tongji."):
            continue
        root = internal_root if host.startswith("caizheng.") else services["root_a"]
        for node, address in NODES:
            status, headers, _ = fetch(host, address, root)
            assert status == 200, (host, node)
            assert headers["strict-transport-security"] == "max-age=31536000"
    for node, address in NODES:       # a preview host: its certificate, no page without a link
        assert fetch("jiaoyu.preview.qingshui.gov.cn", address, services["root_a"])[0] == 403
    # HTTP goes to HTTPS, except ACME checks; a name without a certificate is refused.
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                        "--resolve", "jiaoyu.qingshui.gov.cn:80:10.77.0.12",
                        "http://jiaoyu.qingshui.gov.cn/a?b=1"], capture_output=True, text=True)
    assert r.stdout == "301 https://jiaoyu.qingshui.gov.cn/a?b=1"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                        "jiaoyu.qingshui.gov.cn:80:10.77.0.12",
                        "http://jiaoyu.qingshui.gov.cn/.well-known/acme-challenge/none"],
                       capture_output=True, text=True)
    assert r.stdout == "404"
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
        fetch("unknown.example.cn", "10.77.0.11", services["root_a"])
    # Keys: root-only 0600 in the release, outside every tenant's tree.
    for _, address in NODES:
        out = on_node(address, "stat -c '%a %U %n' /etc/govhost/current/tls/*.key")
        lines = out.strip().splitlines()
        assert lines and all(line.startswith("600 root /etc/govhost/releases/") or
                             line.startswith("600 root /etc/govhost/current/") for line in lines)


def test_homepage_probes_go_over_https_and_see_a_node_that_only_redirects(http01):
    """The compliance veto's probes load the page a visitor loads: over HTTPS for a site
    that has a certificate. A node whose HTTPS server for a site is gone still answers
    port 80's redirect; only an HTTPS probe sees that the page no longer loads there."""
    inv = http01[0]
    # Rounds unspread (the exporter spreads a round over half its interval: 15 s a round)
    prober = Prober(County(inv), 30, record=False)
    rnd = prober.probe_once(spread=False)
    assert not rnd.error
    # The exporter renders what apply renders, certificates included: no false drift.
    assert rnd.live_release == rnd.desired_release
    for tenant, per_node in rnd.tenants.items():
        want = "http" if tenant == "tongji" else "https"   # tongji waits for its import
        assert {(r.scheme, r.status) for r in per_node.values()} == {(want, 200)}, tenant
    assert rnd.failed["jiaoyu"] == []
    # Take jiaoyu's HTTPS server away on n2 only (a new file: release files are hard links),
    # with n2's tamper watcher stopped (it would put the file back at once).
    watcher = tamper_watcher_stopped("10.77.0.12")
    watcher.__enter__()
    on_node("10.77.0.12", "cd /etc/govhost/current/vhosts && python3 -c \"import sys; "
            "a, b = open('jiaoyu.conf').read().split('include snippets/listen-tls.conf;'); "
            "open('.j', 'w').write(a + 'include snippets/listen-tls.conf;' + "
            "b.replace('server_name jiaoyu', 'server_name gone-jiaoyu'))\" && "
            "mv .j jiaoyu.conf && nginx -t -q -c /etc/govhost/current/nginx.conf && "
            "nginx -s reload -c /etc/govhost/current/nginx.conf")
    try:
        time.sleep(1)
        rnd = prober.probe_once(spread=False)
        failed = rnd.failed["jiaoyu"]
        assert [(f["node"], f["scheme"], f["status"]) for f in failed] == [("n2", "https", None)]
        redirect = probes.probe("jiaoyu.qingshui.gov.cn", "n2", "10.77.0.12")
        assert redirect.status == 301 and redirect.up      # what a port-80 probe would see
        assert all(not f for t, f in rnd.failed.items() if t != "jiaoyu")
    finally:
        govhost(inv, "apply", "--yes", check=True)        # ships the changed release again
        watcher.__exit__(None, None, None)
    rnd = prober.probe_once(spread=False)
    assert rnd.failed["jiaoyu"] == [] and rnd.live_release == rnd.desired_release


def test_a_node_serving_an_expired_certificate_fails_the_probe_through_it_alone(http01):
    """Probes verify the chain and the name as a browser does: caizheng's certificate (from
    the county CA) replaced on n2 by an expired one from the same CA fails n2's probe with
    that reason; n1 and n3 still pass."""
    inv = http01[0]
    ca = County(inv).certs.ca_dir
    key = tls_certs.new_key()
    expired = tls_certs.sign_leaf((ca / "root.pem").read_bytes(), (ca / "root.key").read_bytes(),
                                  key, ["caizheng.qingshui.gov.cn"], time.time() - 200 * 86400,
                                  90)
    prober = Prober(County(inv), 30, record=False)
    assert prober.probe_once(spread=False).failed["caizheng"] == []
    with tamper_watcher_stopped("10.77.0.12"):
        crt = on_node("10.77.0.12", "grep -o 'tls/[^ ;]*\\.crt' "
                                   "/etc/govhost/current/vhosts/caizheng.conf | head -1")
        on_node("10.77.0.12", "cd /etc/govhost/current && "
                             f"printf '%s' {shlex.quote(expired.decode())} > .c && "
                             f"printf '%s' {shlex.quote(key.decode())} > .k && chmod 600 .k && "
                             f"mv .c {crt} && mv .k {crt[:-4]}.key && "
                             "nginx -t -q -c /etc/govhost/current/nginx.conf && "
                             "nginx -s reload -c /etc/govhost/current/nginx.conf")
        try:
            time.sleep(1)
            rnd = prober.probe_once(spread=False)
            assert [(f["node"], f["scheme"], f["status"], f["error"])
                    for f in rnd.failed["caizheng"]] == [
                ("n2", "https", None, "certificate: certificate has expired")]
            assert all(not f for t, f in rnd.failed.items() if t not in ("caizheng", "tongji"))
        finally:
            govhost(inv, "apply", "--yes", check=True)        # ships the release again
    assert prober.probe_once(spread=False).failed["caizheng"] == []


def test_served_tls_offers_nothing_older_than_tls12(http01):
    out = Path(http01[0]).parent / "testssl.json"
    r = subprocess.run(["testssl", "--protocols", "--quiet", "--color", "0", "--ip", "10.77.0.12",
                        "--jsonfile", str(out), "https://jiaoyu.qingshui.gov.cn"],
                       capture_output=True, text=True, timeout=300)
    found = {f["id"]: f["finding"] for f in json.loads(out.read_text())}
    assert all(found[p] == "not offered" for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")), found
    assert found["TLS1_2"].startswith("offered") and found["TLS1_3"].startswith("offered"), \
        r.stdout


def test_import_refuses_wrong_key_and_missing_names_then_serves_a_good_one(http01, tmp_path):
    inv = http01[0]
    now = time.time()
    root, root_key = tls_certs.make_root("Test Commercial CA", now)
    key = tls_certs.new_key()
    names = ["tongji.qingshui.gov.cn"]
    (tmp_path / "root.pem").write_bytes(root)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "other.pem").write_bytes(tls_certs.new_key())
    (tmp_path / "cert.pem").write_bytes(tls_certs.sign_leaf(root, root_key, key, names, now, 90))
    (tmp_path / "wrong-names.pem").write_bytes(
        tls_certs.sign_leaf(root, root_key, key, ["tj.qingshui.gov.cn"], now, 90))
    base = ["cert", "import", "tongji", "--root", str(tmp_path / "root.pem")]
    bad_key = govhost(inv, *base, "--cert", str(tmp_path / "cert.pem"),
                      "--key", str(tmp_path / "other.pem"))
    assert bad_key.returncode == 1 and "private key does not belong" in bad_key.stderr
    bad_names = govhost(inv, *base, "--cert", str(tmp_path / "wrong-names.pem"),
                        "--key", str(tmp_path / "key.pem"))
    assert bad_names.returncode == 1 and "does not cover tongji.qingshui.gov.cn" in bad_names.stderr
    no_root = govhost(inv, "cert", "import", "tongji", "--cert", str(tmp_path / "cert.pem"),
                      "--key", str(tmp_path / "key.pem"))
    assert no_root.returncode == 1 and "chain does not verify" in no_root.stderr
    assert not (inv / ".govhost/tls/certs/manual-tongji.pem").exists()
    ok = govhost(inv, *base, "--cert", str(tmp_path / "cert.pem"), "--key",
                 str(tmp_path / "key.pem"), "--json", check=True)
    assert _json(ok)["apply"]["result"] == "changed"
    for _, address in NODES:
        assert fetch("tongji.qingshui.gov.cn", address, tmp_path / "root.pem")[0] == 200
    assert (inv / ".govhost/tls/certs/manual-tongji.pem").stat().st_mode & 0o777 == 0o600


def test_renewal_close_to_expiry_replaces_certificates_without_dropping_requests(http01, services):
    inv = http01[0]
    hosts = [h for h in _hosts(inv) if not h.startswith(("tongji.", "caizheng."))]
    before = {h: fetch(h, "10.77.0.11", services["root_a"])[2] for h in hosts}
    stop, failures, served = threading.Event(), [], []

    def load() -> None:
        i = 0
        deadline = time.time() + 900
        while not stop.is_set() and time.time() < deadline and i < 20000:
            h, (_, a) = hosts[i % len(hosts)], NODES[i % 3]
            try:
                served.append(fetch(h, a, services["root_a"])[0])
            except (OSError, ssl.SSLError) as exc:
                failures.append(f"{h}@{a}: {exc}")
            i += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        later = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 70 * 86400))
        proc = govhost(inv, "cert", "renew", "--at", later, "--json", timeout=900)
        time.sleep(2)
    finally:
        stop.set()
        worker.join()
    res = _json(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["reason"] for r in res["results"]} == {"due"}
    assert failures == [] and len(served) > 100 and set(served) == {200}
    after = {h: fetch(h, "10.77.0.11", services["root_a"])[2] for h in hosts}
    assert all(after[h] != before[h] for h in hosts)


def test_dns01_through_bind_gives_the_county_one_wildcard(services, tmp_path, county_keys):
    inv = _county(tmp_path, county_keys, {
        "issuer": "acme",
        "acme": {"directory": f"https://{PEBBLE_B}:14200/dir",
                 "contact": "webmaster@qingshui.gov.cn",
                 "ca_bundle": str(services["dirs"][3] / "tls-ca.pem"), "challenge": "dns-01",
                 "dns": {"server": "127.0.0.1", "port": BIND_PORT, "zone": "qingshui.gov.cn",
                         "tsig_key_name": TSIG, "tsig_secret_file": str(services["secret"])}}})
    govhost(inv, "apply", "--yes", check=True)
    res = _json(govhost(inv, "cert", "renew", "--json", timeout=900))
    assert [(r["lineage"], r["ok"]) for r in res["results"]] == [("acme-wildcard", True)]
    assert res["orders_this_week"] == 1
    rows = _json(govhost(inv, "cert", "status", "--json"))
    assert rows[0]["names"] == ["qingshui.gov.cn", "*.qingshui.gov.cn",
                                "*.preview.qingshui.gov.cn"]
    # 19 units, the portal, the console and a preview host per unit with releases
    previews = [u for u in rows[0]["serving"] if u.startswith("_preview-")]
    assert len(rows[0]["serving"]) == 21 + len(previews) and len(previews) >= 15
    for host in _hosts(inv) + ["xn--zfvz1q.qingshui.gov.cn"]:
        assert fetch(host, "10.77.0.13", services["root_b"])[0] == 200, host
    # a unit's preview host, verified by the wildcard: no preview without a signed link
    assert fetch("jiaoyu.preview.qingshui.gov.cn", "10.77.0.13", services["root_b"])[0] == 403
    txt = subprocess.run(["dig", "+short", "-p", str(BIND_PORT), "@127.0.0.1", "TXT",
                          "_acme-challenge.qingshui.gov.cn"], capture_output=True, text=True)
    assert txt.returncode == 0 and txt.stdout.strip() == ""      # answers withdrawn

    # The challenge cannot be answered (the DNS server refuses govhost's updates): the old
    # certificate keeps serving, the failure is recorded with a backoff, no tight retry.
    before = fetch("jiaoyu.qingshui.gov.cn", "10.77.0.11", services["root_b"])[2]
    good = services["secret"].read_text()
    services["secret"].write_text("c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhISE=\n")
    try:
        failed = govhost(inv, "cert", "renew", "--force", "--json", timeout=900)
        assert failed.returncode == 1
        assert "DNS update to 127.0.0.1" in _json(failed)["results"][0]["error"]
        row = _json(govhost(inv, "cert", "status", "--json"))[0]
        assert row["state"] == "failing" and row["failures"] == 1
        assert "TSIG key" in row["last_error"] and row["next_attempt"] > time.time()
        for _, a in NODES:
            assert fetch("jiaoyu.qingshui.gov.cn", a, services["root_b"])[2] == before
        again = _json(govhost(inv, "cert", "renew", "--at", time.strftime(
            "%Y-%m-%dT%H:%M", time.localtime(time.time() + 70 * 86400)), "--json"))
        assert not again["results"] and "retry after" in again["skipped"][0]["why"]
    finally:
        services["secret"].write_text(good)
    healed = govhost(inv, "cert", "renew", "--force", "--json", timeout=900)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert fetch("jiaoyu.qingshui.gov.cn", "10.77.0.12", services["root_b"])[2] != before
    assert _json(govhost(inv, "cert", "status", "--json"))[0]["state"] == "ok"


def test_unreachable_http01_challenge_keeps_the_old_certificate_and_isolates_the_unit(
        services, tmp_path):
    """A unit whose name stops pointing at the nodes: its order fails, it keeps being served
    with the certificate it had, it gets a lineage of its own with the failure and a backoff,
    and the unit that shared its certificate is issued a new one at once without it."""
    from tests.helpers import CLUSTER, tenant, write_inventory
    inv = write_inventory(tmp_path / "inv", [tenant("aaa"), tenant("bbb")], cluster={
        **CLUSTER, "tls": {"issuer": "acme", "acme": {
            "directory": f"https://{PEBBLE_A}:14100/dir", "contact": "w@qingshui.gov.cn",
            "ca_bundle": str(services["dirs"][1] / "tls-ca.pem")}}})
    mgmt = f"{lab_services.CHALLTEST_ADDRESS}:8055"
    for host in ("aaa", "bbb", "www"):
        lab_services.point(f"{host}.qingshui.gov.cn", ["10.77.0.12"], mgmt=mgmt)
    govhost(inv, "apply", "--yes", check=True)
    govhost(inv, "cert", "renew", check=True, timeout=900)
    root = services["root_a"]
    before = {h: fetch(f"{h}.qingshui.gov.cn", "10.77.0.11", root)[2] for h in ("aaa", "bbb")}
    lab_services.point("aaa.qingshui.gov.cn", ["10.77.0.99"], mgmt=mgmt)    # nobody there
    try:
        failed = govhost(inv, "cert", "issue", "aaa", "--json", timeout=900)
        assert failed.returncode == 1, failed.stdout
        res = _json(failed)
        assert any(not r["ok"] and "aaa.qingshui.gov.cn" in r["error"] for r in res["results"])
        assert any(r["ok"] and r["reason"] == "names changed" for r in res["results"])
        rows = {r["lineage"]: r for r in _json(govhost(inv, "cert", "status", "--json"))}
        mine = rows["acme-u-aaa"]
        assert mine["state"] == "failing" and mine["failures"] == 1
        assert "10.77.0.99" in mine["last_error"] and mine["next_attempt"] > time.time()
        for _, a in NODES:
            assert fetch("aaa.qingshui.gov.cn", a, root)[2] == before["aaa"]     # old one
            assert fetch("bbb.qingshui.gov.cn", a, root)[2] != before["bbb"]     # re-issued
        again = _json(govhost(inv, "cert", "renew", "--json", timeout=600))
        assert not again["results"]
        assert any(s["lineage"] == "acme-u-aaa" and "retry after" in s["why"]
                   for s in again["skipped"])
    finally:
        lab_services.point("aaa.qingshui.gov.cn", ["10.77.0.12"], mgmt=mgmt)
    healed = govhost(inv, "cert", "issue", "aaa", "--json", timeout=900)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    for _, a in NODES:
        assert fetch("aaa.qingshui.gov.cn", a, root)[2] != before["aaa"]
    assert not list((inv / ".govhost/tls/certs").glob("*.was-*.pem"))     # old one pruned
