"""A unit's proxy may not reach the cluster's own machines: loopback, link-local,
unspecified, a node's or the console's address are refused with the file, the field and what
to do, unless cluster.yaml (the county's hand) allows the network."""
from __future__ import annotations

import pytest

from controlplane.core import inventory
from controlplane.core.errors import ManifestError
from tests.helpers import CLUSTER, hosts, tenant, write_inventory


def _load(tmp_path, upstream: str, allow: list[str] | None = None):
    cluster = {**CLUSTER, **({"proxy": {"allow_upstreams": allow}} if allow else {})}
    root = write_inventory(tmp_path / "inv", [
        tenant("app", site={"type": "proxy", "upstreams": ["http://10.20.0.5:8080",
                                                          upstream]})], cluster=cluster)
    return inventory.load(root)


NODE = hosts(3)["nodes"][1]["address"]


@pytest.mark.parametrize("upstream,why", [
    ("http://127.0.0.1:9100", "loopback"), ("http://127.8.9.10", "loopback"),
    ("http://[::1]:8080", "loopback"),
    ("http://169.254.169.254", "link-local"), ("http://[fe80::1]:80", "link-local"),
    ("http://0.0.0.0:80", "unspecified"), ("http://[::ffff:127.0.0.1]:80", "loopback"),
    ("http://127.1:80", "written short"), ("http://0x7f.1", "written short"),
    (f"http://{NODE}:9273", "loopback|an address"),
    # IPv6 forms that carry an IPv4 address: compatible, NAT64's prefix, mapped
    ("http://[::127.0.0.1]:80", "loopback"), ("http://[64:ff9b::7f00:1]:80", "loopback"),
    ("http://[64:ff9b::169.254.169.254]", "link-local"),
    (f"http://[::ffff:{NODE}]:9100", "loopback|an address"),
    ("http://255.255.255.255", "broadcast"),
])
def test_upstreams_on_the_cluster_itself_are_refused_by_field(tmp_path, upstream, why):
    with pytest.raises(ManifestError) as exc:
        _load(tmp_path, upstream)
    (problem,) = [p for p in exc.value.problems if p.field.startswith("site.upstreams")]
    assert problem.field == "site.upstreams[1]" and problem.file.endswith("app.yaml")
    assert any(w in problem.message for w in why.split("|")), problem.message
    assert "allow_upstreams" in problem.message or "write it in full" in problem.message


def test_the_county_can_allow_a_network_in_cluster_yaml(tmp_path):
    inv = _load(tmp_path, "http://127.0.0.1:9100", allow=["127.0.0.1/32"])
    assert inv.tenant("app").site.upstreams[1] == "http://127.0.0.1:9100"


def test_ordinary_addresses_and_names_pass(tmp_path):
    assert _load(tmp_path, "http://app.example.cn:8443").tenant("app") is not None
    with pytest.raises(ManifestError, match="fully qualified"):
        _load(tmp_path, "http://localhost:9100")            # refused by the manifest itself


def _load_real(tmp_path, upstream: str, allow: list[str] | None = None):
    """A cluster on ordinary (non-loopback) addresses, as in production."""
    host_doc = hosts(3)
    for i, node in enumerate(host_doc["nodes"], 1):
        node.update(address=f"10.0.5.{i}", address6=f"2001:db8:5::{i}",
                    source=f"10.0.6.{i}")
    cluster = {**CLUSTER, "console": {"address": "10.0.9.1"},
               **({"proxy": {"allow_upstreams": allow}} if allow else {})}
    root = write_inventory(tmp_path / "inv", [
        tenant("app", site={"type": "proxy", "upstreams": [upstream]})],
        cluster=cluster, host_doc=host_doc)
    return inventory.load(root)


@pytest.mark.parametrize("upstream", [
    "http://10.0.5.2:9100", "https://[2001:db8:5::3]:443", "http://10.0.6.1:22",
    "http://10.0.9.1:8090", "http://[::ffff:10.0.5.1]:80", "http://0.1.2.3:80",
])
def test_a_node_source_or_console_address_is_refused_naming_file_field_value(tmp_path,
                                                                            upstream):
    with pytest.raises(ManifestError) as exc:
        _load_real(tmp_path, upstream)
    (problem,) = exc.value.problems
    assert problem.file.endswith("tenants/app.yaml") and problem.field == "site.upstreams[0]"
    shown = upstream.replace("[::ffff:10.0.5.1]", "[::ffff:a00:501]")
    assert shown.rsplit(":", 1)[0] in problem.message                      # the value
    assert "allow_upstreams" in problem.message                      # and what to do


def test_the_cluster_addresses_pass_when_the_county_allows_them(tmp_path):
    assert _load_real(tmp_path, "http://10.0.5.2:9100", allow=["10.0.5.0/24"])
    assert _load_real(tmp_path, "http://10.0.7.2:9100")          # not the cluster's: fine


def test_a_unit_cannot_allow_its_own_upstream(tmp_path):
    """The knob is cluster.yaml's only: a tenant manifest carrying it is refused."""
    up = ["http://127.0.0.1:9100"]
    for doc, field in ((tenant("app", site={"type": "proxy", "upstreams": up},
                               proxy={"allow_upstreams": ["127.0.0.0/8"]}), "proxy"),
                       (tenant("app", site={"type": "proxy", "upstreams": up,
                                            "allow_upstreams": ["127.0.0.0/8"]}),
                        "site.allow_upstreams")):
        root = write_inventory(tmp_path / field, [doc])
        with pytest.raises(ManifestError) as exc:
            inventory.load(root)
        assert [p.field for p in exc.value.problems] == [field], exc.value.problems
        assert "unknown field" in exc.value.problems[0].message


def test_allow_upstreams_takes_only_networks(tmp_path):
    with pytest.raises(ManifestError, match="not an address or network"):
        _load(tmp_path, "http://127.0.0.1:9100", allow=["everything"])
