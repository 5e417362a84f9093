"""Probes verify a site's certificate as a browser does: against real TLS servers on loopback
(Python's ssl, port 443 of a 127.0.7.x address, as the nodes' nginx listens) serving a good,
an expired, a wrong-name and an untrusted certificate. And which roots each issuer's
certificates must verify to."""
from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from controlplane.sites import probes
from controlplane.tls import certs as tls_certs
from controlplane.tls import trust

HOST = "jiaoyu.qingshui.gov.cn"
NOW = time.time()


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<h1>ok</h1>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    root, root_key = tls_certs.make_root("青水县 CA", NOW)
    other, other_key = tls_certs.make_root("someone else", NOW)
    (d / "root.pem").write_bytes(root)
    key = tls_certs.new_key()
    leaves = {"good": tls_certs.sign_leaf(root, root_key, key, [HOST], NOW, 90),
              "expired": tls_certs.sign_leaf(root, root_key, key, [HOST], NOW - 200 * 86400, 90),
              "wrong-name": tls_certs.sign_leaf(root, root_key, key, ["chahe.qingshui.gov.cn"],
                                                NOW, 90),
              "untrusted": tls_certs.sign_leaf(other, other_key, key, [HOST], NOW, 90)}
    servers = {}
    for i, (name, leaf) in enumerate(leaves.items()):
        (d / f"{name}.pem").write_bytes(leaf + key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / f"{name}.pem")
        address = f"127.0.7.{i + 1}"
        srv = HTTPServer((address, 443), _Ok)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[name] = (address, srv)
    yield d, {k: a for k, (a, _) in servers.items()}
    for _, srv in servers.values():
        srv.shutdown()


@pytest.mark.parametrize("served,why", [
    ("good", None), ("expired", "certificate: certificate has expired"),
    ("wrong-name", "certificate: Hostname mismatch"),
    ("untrusted", "certificate: unable to get local issuer certificate")])
def test_a_probe_fails_on_a_certificate_a_browser_would_refuse(pki, served, why):
    d, addresses = pki
    r = probes.probe(HOST, "n1", addresses[served], scheme="https",
                     verify=trust.context(str(d / "root.pem")))
    if why is None:
        assert r.up and r.status == 200
    else:
        assert not r.up and r.status is None and r.error.startswith(why), r.error
    # without verification every one of them "answers": what probes saw before
    assert probes.probe(HOST, "n1", addresses[served], scheme="https").status == 200


def test_each_issuer_verifies_to_its_own_roots(tmp_path):
    ca = tmp_path / "root.pem"
    root, _ = tls_certs.make_root("青水县 CA", NOW)
    ca.write_bytes(root)
    assert trust.roots_for("internal", None, ca) == str(ca)
    assert trust.roots_for("acme", "/lab/pebble-root.pem", ca) == "/lab/pebble-root.pem"
    assert trust.roots_for("acme", None, ca) == tls_certs.SYSTEM_ROOTS
    assert trust.roots_for("manual", "/lab/pebble-root.pem", ca) == tls_certs.SYSTEM_ROOTS
    got = trust.site_contexts(
        {"jiaoyu": "jiaoyu.x", "caizheng": "caizheng.x", "tongji": "tongji.x", "wenlv": "wenlv.x"},
        {"jiaoyu": "wild-0", "caizheng": "internal-caizheng", "tongji": "manual-tongji"},
        {"wild-0": {"issuer": "acme"}}, None, ca)
    assert set(got) == {"jiaoyu.x", "caizheng.x", "tongji.x"}      # wenlv: no certificate
    assert got["jiaoyu.x"] is got["tongji.x"]                    # both on the public roots
    assert got["caizheng.x"] is not got["jiaoyu.x"]
    assert trust.site_contexts({"a": "a.x"}, {"a": "internal-a"}, {}, None,
                               Path(tmp_path / "none.pem")) == {}
