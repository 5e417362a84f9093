"""Credentials of the nodes' metrics: the county's metrics CA, per-node certificates, the
password and its hashes; what a release and prometheus.yml carry of them."""
from __future__ import annotations

import base64
import ipaddress
import json
import stat
import time

import bcrypt
import yaml
from cryptography import x509

from controlplane.core.manifest import Hosts
from controlplane.monitoring import prometheus
from controlplane.tls import metrics
from govhost_node.agent import authorized

SECRET = b"0123456789abcdef0123456789abcdef"


def _hosts(address3: str = "10.77.0.13") -> Hosts:
    return Hosts.model_validate({"ssh": {"key": "/k"}, "nodes": [
        {"name": "n1", "address": "10.77.0.11"},
        {"name": "n2", "address": "10.77.0.12", "address6": "fd00::2"},
        {"name": "n3", "address": address3}]})


def _ips(pem: bytes) -> set[str]:
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(ipaddress.ip_address(a)) for a in san.get_values_for_type(x509.IPAddress)}


def test_ca_and_node_certificates_are_made_once_and_cover_the_addresses(tmp_path):
    a = metrics.ensure(tmp_path, SECRET, _hosts(), "青水县")
    b = metrics.ensure(tmp_path, SECRET, _hosts(), "青水县")
    assert a.node_certs == b.node_certs and a.ca_pem == b.ca_pem   # stable: same release
    assert _ips(a.node_certs["n2"][0]) == {"10.77.0.12", "fd00::2"}
    ca = x509.load_pem_x509_certificate(a.ca_pem)
    for cert_pem, _ in a.node_certs.values():
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    for name in ("ca.key", "n1.key", "n2.key", "n3.key"):
        assert stat.S_IMODE((tmp_path / "metrics" / name).stat().st_mode) == 0o600
    # a node that moved gets a new certificate; the others keep theirs
    c = metrics.ensure(tmp_path, SECRET, _hosts("127.0.1.9"), "青水县")
    assert _ips(c.node_certs["n3"][0]) == {"127.0.1.9"}
    assert c.node_certs["n1"] == a.node_certs["n1"]
    # one that nears its end is issued again
    later = time.time() + (metrics.DAYS - metrics.RENEW_DAYS + 1) * 86400
    d = metrics.ensure(tmp_path, SECRET, _hosts("127.0.1.9"), "青水县", now=later)
    assert d.node_certs["n1"] != c.node_certs["n1"]


def test_password_hashes_check_and_are_stable(tmp_path):
    a = metrics.ensure(tmp_path, SECRET, _hosts(), "x")
    assert len(a.password) >= 24 and a.password.isalnum()
    assert bcrypt.checkpw(a.password.encode(), a.password_hash.encode())
    assert not bcrypt.checkpw(b"wrong", a.password_hash.encode())
    assert metrics.ensure(tmp_path, SECRET, _hosts(), "x").password_hash == a.password_hash
    other = metrics.ensure(tmp_path / "o", b"another secret, another password!", _hosts(), "x")
    assert other.password != a.password
    token = base64.b64encode(f"prometheus:{a.password}".encode()).decode()
    assert authorized(f"Basic {token}", a.agent_sha256)
    assert not authorized("Basic " + base64.b64encode(b"prometheus:x").decode(),
                          a.agent_sha256)
    assert not authorized("", a.agent_sha256)


def test_prometheus_scrapes_nodes_over_tls_with_basic_auth(tmp_path):
    access = metrics.ensure(tmp_path / "state", SECRET, _hosts(), "x")
    out = tmp_path / "out"
    prometheus.write(out, _hosts(), "127.0.0.1:9270", 15, access)
    conf = yaml.safe_load((out / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    for job in ("govhost-agent", "node"):
        assert jobs[job]["scheme"] == "https"
        assert jobs[job]["tls_config"] == {"ca_file": "metrics-ca.pem"}
        assert jobs[job]["basic_auth"] == {"username": "prometheus",
                                           "password_file": "metrics-password"}
    assert "scheme" not in jobs["govhost"]          # the control machine's own exporter
    assert (out / "metrics-password").read_text().strip() == access.password
    assert stat.S_IMODE((out / "metrics-password").stat().st_mode) == 0o640
    assert (out / "metrics-ca.pem").read_bytes() == access.ca_pem


def test_release_carries_the_node_exporter_web_config_and_the_agent_settings(tmp_path):
    import dataclasses

    from controlplane.core import inventory as inventory_mod
    from controlplane.core.paths import REPO
    from controlplane.sites.apply import private
    from controlplane.sites.render import render_node
    inv = inventory_mod.load(REPO / "inventory", tmp_path / "state")
    access = metrics.ensure(tmp_path / "state", inv.secret, inv.hosts, inv.cluster.name)
    inv = dataclasses.replace(inv, metrics=access)
    rel = render_node(inv, {t.name: ("n1", "n2") for t in inv.tenants}, "n2")
    web = yaml.safe_load(rel.files["metrics/web.yml"])
    assert web["basic_auth_users"] == {"prometheus": access.password_hash}
    assert web["tls_server_config"]["cert_file"] == "/etc/govhost/metrics/node.crt"
    assert rel.files["metrics/node.crt"] == access.node_certs["n2"][0]
    agent = json.loads(rel.files["metrics/agent.json"])
    assert agent["authorization_sha256"] == access.agent_sha256
    assert access.password.encode() not in b"".join(rel.files.values())
    for name in ("metrics/node.key", "metrics/web.yml", "metrics/agent.json"):
        assert private(name)
    assert not private("metrics/node.crt")
