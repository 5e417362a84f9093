"""Proxy sites on the real lab: a unit's own application (here a small HTTP app on the host's
loopback, which every lab node can reach) published under its name through every node, with
its timeout and body size limits."""
import json
import re
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.lab import network
from tests.helpers import example_inventory

from .conftest import with_county_keys
from .test_apply_lab import NODES, apply_json


class App(BaseHTTPRequestHandler):
    """The unit's application: echoes what the platform forwarded; /slow takes 5 s."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/slow":
            time.sleep(5)
        body = json.dumps({"path": self.path, "host": self.headers.get("Host"),
                           "forwarded_for": self.headers.get("X-Forwarded-For"),
                           "proto": self.headers.get("X-Forwarded-Proto")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass                          # /slow: nginx gave up first, as it should

    def do_POST(self) -> None:  # noqa: N802
        size = int(self.headers.get("Content-Length", 0))
        self.rfile.read(size)
        body = json.dumps({"received": size}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def shenpi(lab_cluster, tmp_path_factory, county_keys):
    """The example county plus `shenpi`, the online approval system of the county, proxied."""
    server = ThreadingHTTPServer((network.HOST4, 0), App)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inv = tmp_path_factory.mktemp("proxy") / "inventory"
    with_county_keys(example_inventory(inv), county_keys)
    # The test's application listens on the control machine's address, which a unit may not proxy
    # to unless the county allows it in cluster.yaml (as here, in the operator's hand).
    with (inv / "cluster.yaml").open("a") as f:
        f.write("proxy:\n  allow_upstreams: ['10.77.8.1/32']\n")
    (inv / "tenants" / "shenpi.yaml").write_text(
        "name: shenpi\ntitle: 青水县网上审批系统\nkind: department\n"
        "contact: {name: 李强, email: it@shenpi.qingshui.gov.cn, phone: '0571-6512-3399'}\n"
        f"site: {{type: proxy, upstreams: ['http://10.77.8.1:{port}'], timeout_seconds: 2, "
        "max_body_mb: 1}\n")
    apply_json(inv)
    yield inv
    server.shutdown()
    (inv / "tenants" / "shenpi.yaml").unlink()
    apply_json(inv)                       # leave the lab serving the example county


def _curl(address: str, path: str = "/", *extra: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-H",
                          "Host: shenpi.qingshui.gov.cn", *extra, f"http://{address}{path}"],
                         capture_output=True, text=True, timeout=30).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def test_proxy_site_forwards_to_the_units_app_through_every_node(shenpi):
    for node, address in NODES.items():
        code, body = _curl(address, "/apply?id=7")
        assert code == 200, (node, body)
        got = json.loads(body)
        assert got["path"] == "/apply?id=7" and got["host"] == "shenpi.qingshui.gov.cn"
        assert got["forwarded_for"] and got["proto"] == "http"


def test_proxy_timeout_and_body_limit_are_the_tenants(shenpi):
    address = NODES["n1"]
    code, _ = _curl(address, "/slow")                     # app takes 5 s, timeout is 2 s
    assert code == 504
    small = _curl(address, "/upload", "--data", "x" * 1000)
    assert small == (200, json.dumps({"received": 1000}))
    big = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          "-H", "Host: shenpi.qingshui.gov.cn", "--data-binary", "@-",
                          f"http://{address}/upload"], input=b"x" * (2 * 1024 * 1024),
                         capture_output=True, timeout=30).stdout.decode()
    assert big == "413"                                   # max_body_mb: 1


def test_proxy_app_down_gives_502_not_a_hang(shenpi):
    # a port nothing listens on: what the platform answers when the unit's app is down
    with socket.socket() as s:
        s.bind((network.HOST4, 0))
        dead = s.getsockname()[1]
    inv = shenpi
    manifest = inv / "tenants" / "shenpi.yaml"
    kept = manifest.read_text()
    manifest.write_text(re.sub(r"http://10\.77\.8\.1:\d+", f"http://10.77.8.1:{dead}", kept))
    try:
        apply_json(inv)
        code, _ = _curl(NODES["n2"], "/")
        assert code == 502
    finally:
        manifest.write_text(kept)
        apply_json(inv)
