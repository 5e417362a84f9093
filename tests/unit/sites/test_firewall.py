"""The nodes' firewall as rendered into their config releases (pure), checked by the real
`nft -c` where this machine allows it (root with nftables installed)."""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import inventory as inventory_mod
from controlplane.core.errors import ManifestError
from controlplane.core.manifest import Hosts
from controlplane.core.paths import REPO
from controlplane.sites import firewall
from controlplane.sites.render import render_cluster
from tests.helpers import example_inventory

NFT = shutil.which("nft") if os.geteuid() == 0 else None


def _hosts(**firewall_doc) -> Hosts:
    return Hosts.model_validate({
        "ssh": {"key": "/k", "sftp_port": 2222},
        "firewall": {"management": ["192.0.2.10/32", "198.51.100.0/24"], **firewall_doc},
        "nodes": [
            {"name": "n1", "address": "203.0.113.1", "roles": ["web", "backup"]},
            {"name": "n2", "address": "203.0.113.2", "roles": ["web", "db"],
             "address6": "2001:db8::2"},
            {"name": "node-3", "address": "203.0.113.3", "roles": ["monitoring"]},
        ]})


def _rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def nft_check(text: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    f = tmp_path / "fw.nft"
    f.write_bytes(text)
    return subprocess.run([NFT, "-c", "-f", str(f)], capture_output=True, text=True)


def test_no_firewall_section_renders_none():
    hosts = Hosts.model_validate({"ssh": {"key": "/k"},
                                  "nodes": [{"name": "n1", "address": "203.0.113.1"}]})
    assert firewall.render(hosts, hosts.nodes[0], []) is None


def test_each_node_judges_every_packet_in_a_table_of_its_own():
    """Whatever address a packet came to (the node's own, a floating one, or one the system
    gave itself such as a SLAAC address): only loopback is let through unjudged."""
    hosts = _hosts()
    texts = {n.name: firewall.render(hosts, n, []).decode() for n in hosts.nodes}
    for node in hosts.nodes:
        rules = _rules(texts[node.name])
        table = firewall.table_name(node.name)
        assert rules[2:5] == [f"table inet {table}", f"delete table inet {table}",
                              f"table inet {table} {{"]
        chain = rules[rules.index("type filter hook input priority filter; policy accept;") + 1:]
        assert chain[:3] == ["iif lo ip daddr 127.0.0.0/8 accept", "iif lo ip6 daddr ::1 accept",
                             "ct state established,related accept"]
        assert not any(("daddr" in r and "iif lo" not in r) or "nfproto" in r for r in chain)
        end = rules.index("chain output {")
        assert rules[end - 2] == "counter name dropped drop"  # everything else: counted, dropped
        # the peers' door of the message service: only root (the service) may knock on it,
        # not a unit's PHP sharing the node's address (found by the attack review)
        assert rules[end + 1:end + 3] == [
            "type filter hook output priority filter; policy accept;",
            "tcp dport 9276 meta skuid != 0 counter name dropped reject with tcp reset"]
    assert firewall.table_name("node-3") == "govhost_node_3"


def test_doors_per_role():
    hosts = _hosts()
    n1, n2, n3 = (firewall.render(hosts, n, ["203.0.113.1"]).decode() for n in hosts.nodes)
    public = "tcp dport { 80, 443 } accept"
    assert public in _rules(n1) and public in _rules(n2) and public not in _rules(n3)
    assert "tcp dport 2222 accept" in _rules(n1)
    for text in (n1, n2, n3):
        assert "tcp dport { 22, 9100, 9273 } ip saddr @management4 accept" in _rules(text)
        assert "elements = { 192.0.2.10/32, 198.51.100.0/24 }" in text
    # the backup repository (SFTP on 22) from the cluster's nodes, only on the backup node
    assert "tcp dport 22 ip saddr @cluster4 accept" in _rules(n1)
    assert "tcp dport 22 ip saddr @cluster4 accept" not in _rules(n2)
    # the database only on the db node, only from its clients
    assert "tcp dport 3306 ip saddr @db4 accept" in _rules(n2)
    assert "3306" not in n1 and "3306" not in n3
    assert re.search(r"set db4 \{ type ipv4_addr; flags interval; elements = \{ "
                     r"203\.0\.113\.1/32 \} \}", n2)


def test_sftp_is_metered_per_source_outside_the_cluster_and_management():
    text = firewall.render(_hosts(ssh_new_per_minute=6, ssh_burst=3),
                           _hosts().nodes[0], []).decode()
    assert ("tcp dport 2222 ct state new ip saddr != @management4 ip saddr != @cluster4 "
            "update @sftp_meter4 { ip saddr limit rate over 6/minute burst 3 packets } "
            "counter name metered drop") in _rules(text)
    rules = _rules(text)
    assert rules.index("tcp dport 2222 accept") > max(
        i for i, r in enumerate(rules) if "sftp_meter" in r and "update" in r)


def test_db_clients_are_the_php_replicas_sources():
    hosts = Hosts.model_validate({
        "ssh": {"key": "/k"},
        "nodes": [{"name": "n1", "address": "10.77.0.11", "source": "127.0.0.1"},
                  {"name": "n2", "address": "203.0.113.2"},
                  {"name": "n3", "address": "203.0.113.3", "address6": "2001:db8::3"}]})
    placement = {"php1": ("n1",), "php2": ("n3",), "static": ("n2",)}
    assert firewall.db_clients(hosts, placement, ["php1", "php2"]) == [
        "127.0.0.1", "2001:db8::3", "203.0.113.3"]


def test_hosts_refuse_a_firewall_without_a_port_for_units_and_bad_networks(tmp_path):
    inv = tmp_path / "inv"
    example_inventory(inv)
    text = (inv / "hosts.yaml").read_text()
    (inv / "hosts.yaml").write_text(text.replace("  sftp_port: 2222\n", ""))
    with pytest.raises(ManifestError) as e:
        inventory_mod.load(inv, tmp_path / "state")
    assert "hosts.yaml" in str(e.value) and "sftp_port" in str(e.value)
    (inv / "hosts.yaml").write_text(text.replace("10.77.8.0/28", "10.77.8.1/28"))
    with pytest.raises(ManifestError) as e:
        inventory_mod.load(inv, tmp_path / "state")
    assert "firewall.management[0]" in str(e.value) and "no host bits" in str(e.value)
    (inv / "hosts.yaml").write_text(text.replace("10.77.8.0/28", "10.77.8.0/28; flush ruleset"))
    with pytest.raises(ManifestError):
        inventory_mod.load(inv, tmp_path / "state")


def test_example_county_ships_a_firewall_to_every_node(tmp_path):
    inv = inventory_mod.load(REPO / "inventory", tmp_path / "state")
    placement = {t.name: ("n1", "n2") for t in inv.tenants}
    releases = render_cluster(inv, placement)
    for name, rel in releases.items():
        text = rel.files["firewall.nft"]
        assert f"table inet govhost_{name} {{".encode() in text
        if NFT:
            res = nft_check(text, tmp_path)
            assert res.returncode == 0, res.stderr


networks = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)).map(
    lambda t: f"{'.'.join(str((t[0] >> s) & 255) for s in (24, 16, 8, 0))}/{t[1]}"),
    min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(networks)
def test_any_management_list_renders_rules_nft_accepts(nets):
    mgmt = sorted({ipaddress.ip_network(n, strict=False).compressed for n in nets})
    hosts = _hosts(management=mgmt)
    text = firewall.render(hosts, hosts.nodes[1], []).decode()
    line = next(r for r in _rules(text) if r.startswith("set management4"))
    rendered = [ipaddress.ip_network(e) for e in
                re.search(r"elements = \{ ([^}]*) \}", line).group(1).split(", ")]
    for net in mgmt:   # every network is covered, overlaps collapsed
        assert any(ipaddress.ip_network(net).subnet_of(r) for r in rendered)
    if NFT:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            res = nft_check(text.encode(), Path(d))
        assert res.returncode == 0, (mgmt, res.stderr)
