"""Floating addresses: hosts.yaml validation, keepalived.conf per node, DNS and the firewall."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import inventory
from controlplane.core.errors import ManifestError
from controlplane.dns import plan as dns_plan
from controlplane.sites import firewall, vrrp
from controlplane.sites.render import render_node
from tests.helpers import example_inventory

REPO = Path(__file__).resolve().parents[3]


def _county(tmp_path: Path, edit=None) -> Path:
    inv = tmp_path / "inv"
    example_inventory(inv)
    if edit is not None:
        hosts = yaml.safe_load((inv / "hosts.yaml").read_text())
        edit(hosts)
        (inv / "hosts.yaml").write_text(yaml.safe_dump(hosts, allow_unicode=True))
    return inv


def _refused(tmp_path: Path, edit) -> str:
    with pytest.raises(ManifestError) as e:
        inventory.load(_county(tmp_path, edit), tmp_path / "state")
    assert "hosts.yaml" in str(e.value)
    return str(e.value)


def test_each_address_has_its_own_order_of_backups(tmp_path):
    inv = inventory.load(_county(tmp_path), tmp_path / "state")
    insts = vrrp.instances(inv.hosts)
    assert [i["order"] for i in insts] == [["n1", "n2", "n3"], ["n2", "n3", "n1"],
                                          ["n3", "n1", "n2"]]
    assert [i["vrid"] for i in insts] == [50, 51, 52]      # each node's own, named
    # Home first, then the order: n1's address goes to n2 when n1 dies, n2's to n3.
    assert [vrrp.priority(insts[0], n) for n in ("n1", "n2", "n3")] == [200, 190, 180]
    # Every priority below 255 (VRRP's address owner) and distinct within an instance.
    for i in insts:
        ps = [vrrp.priority(i, n) for n in i["order"]]
        assert len(set(ps)) == len(ps) and max(ps) < 255


def test_keepalived_conf_per_node(tmp_path):
    inv = inventory.load(_county(tmp_path), tmp_path / "state")
    n2 = next(n for n in inv.hosts.nodes if n.name == "n2")
    conf = vrrp.render(inv.hosts, n2).decode()
    assert "vrrp_version 3" in conf and "advert_int 1" in conf
    assert "nopreempt" not in conf
    assert "10.77.0.102/24 dev eth0" in conf and "fd00:77::102/64 dev eth0" in conf
    assert "vrrp_garp_master_refresh 10" in conf
    assert "unicast_peer" not in conf
    # nginx dead: FAULT (weight 0); nginx stalled: 150 off the priority, so that a county
    # where every node stalls at once keeps every address where it is. The preempt delay
    # (30 s) is the checks' own streak; no init_fail, which a reload would apply to every
    # node at once.
    alive = conf.split("vrrp_script govhost_alive {", 1)[1].split("}", 1)[0]
    prompt = conf.split("vrrp_script govhost_prompt {", 1)[1].split("}", 1)[0]
    assert "vrrp check alive 10.77.0.12 30" in alive and "weight" not in alive
    assert "vrrp check prompt 10.77.0.12 30" in prompt and "weight -150" in prompt
    assert not any("init_fail" in x for x in (alive, prompt))
    assert "mcast_src_ip 10.77.0.12" in conf
    assert conf.count("govhost_alive\n") == 3 and conf.count("govhost_prompt\n") == 3
    assert "preempt_delay" not in conf   # it would also delay the take-over from a stall
    # a stalled home (200 - 150) ranks below every healthy node of any instance
    insts = vrrp.instances(inv.hosts)
    lowest = min(vrrp.priority(i, n) for i in insts for n in i["order"])
    assert vrrp.HOME_PRIORITY + vrrp.STALL_WEIGHT < lowest


def test_unicast_peers_name_every_other_web_node(tmp_path):
    inv = inventory.load(_county(tmp_path, lambda h: h["vrrp"].update(unicast=True)),
                         tmp_path / "state")
    n1 = inv.hosts.nodes[0]
    conf = vrrp.render(inv.hosts, n1).decode()
    assert "unicast_src_ip 10.77.0.11" in conf
    assert conf.count("check_unicast_src") == 3    # adverts only from the peers' addresses
    peers = conf.split("unicast_peer {", 1)[1].split("}", 1)[0].split()
    assert peers == ["10.77.0.12", "10.77.0.13"]


@pytest.mark.skipif(not shutil.which("keepalived"), reason="keepalived is not installed")
def test_keepalived_accepts_every_rendered_conf(tmp_path):
    inv = inventory.load(_county(tmp_path, lambda h: h["vrrp"].update(unicast=True)),
                         tmp_path / "state")
    for node in inv.hosts.web_nodes:
        path = tmp_path / f"{node.name}.conf"
        # keepalived -t also checks that the tracked script exists: on a node it does
        # (govhost-node); here a stand-in that does.
        path.write_bytes(vrrp.render(inv.hosts, node).replace(vrrp.CHECK.encode(), b"/bin/true"))
        r = subprocess.run(["keepalived", "-t", "-f", str(path)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr


def test_dns_publishes_only_floating_addresses(tmp_path):
    inv = inventory.load(_county(tmp_path), tmp_path / "state")
    records = dns_plan.records(inv)
    a = {r.value for r in records if r.type == "A"}
    aaaa = {r.value for r in records if r.type == "AAAA"}
    assert a == {"10.77.0.101", "10.77.0.102", "10.77.0.103"}
    assert aaaa == {"fd00:77::101", "fd00:77::102", "fd00:77::103"}
    # Without vrrp: the nodes' own addresses, as before.
    plain = inventory.load(_county(tmp_path / "b", _no_vrrp), tmp_path / "state2")
    assert {r.value for r in dns_plan.records(plain) if r.type == "A"} == {
        "10.77.0.11", "10.77.0.12", "10.77.0.13"}


def _no_vrrp(h):
    h.pop("vrrp")
    for n in h["nodes"]:
        for key in ("floating", "floating6", "vrid"):
            n.pop(key, None)


def test_nginx_listens_on_every_floating_address_and_the_firewall_guards_them(tmp_path):
    inv = inventory.load(_county(tmp_path), tmp_path / "state")
    rel = render_node(inv, {t.name: ("n1", "n2") for t in inv.tenants}, "n3")
    listen = rel.files["snippets/listen.conf"].decode()
    for a in ("10.77.0.13:80", "10.77.0.101:80", "[fd00:77::103]:80", "10.77.0.102:80"):
        assert f"listen {a};" in listen
    assert "keepalived.conf" in rel.files and "vrrp.json" in rel.files
    fw = rel.files["firewall.nft"].decode()
    # Every packet is judged, whatever address it came to (floating or not); VRRP only
    # from the other web nodes, on the nodes' network, to the group or this node.
    assert "daddr !=" not in fw and "iif lo ip daddr 127.0.0.0/8 accept" in fw
    assert ('iifname "eth0" ip protocol 112 ip ttl 255 ip daddr { 224.0.0.18, 10.77.0.13 } '
            "ip saddr @vrrp4 accept") in fw
    assert "set vrrp4 { type ipv4_addr; flags interval; elements = { 10.77.0.11/32, " \
        "10.77.0.12/32 } }" in fw
    # a connection a moved address sent here is reset, not left to hang
    assert fw.index("ct state invalid tcp dport { 80, 443 } counter name dropped reject with "
                    "tcp reset") < fw.index("ct state invalid counter name dropped drop")
    assert fw.index("ip protocol 112") < fw.index("counter name dropped drop\n    }")


def test_an_address_in_two_places_is_refused(tmp_path):
    def dup(h):
        h["nodes"][1]["floating"] = h["nodes"][0]["floating"]
    msg = _refused(tmp_path, dup)
    assert "10.77.0.101" in msg and "every address in one place" in msg

    def owns(h):
        h["nodes"][0]["floating"] = h["nodes"][1]["address"]
    assert "10.77.0.12" in _refused(tmp_path / "b", owns)


def test_vrids_are_named_per_node_checked_and_never_counted_from_the_list(tmp_path):
    def clash(h):
        h["nodes"][2]["vrid"] = 50
    msg = _refused(tmp_path, clash)
    assert "n1 and n3" in msg and "vrid 50" in msg

    def missing(h):
        h["nodes"][1].pop("vrid")
    msg = _refused(tmp_path / "b", missing)
    assert "n2" in msg and "vrid" in msg and "e.g. vrid: 51" in msg
    assert "255" in _refused(tmp_path / "c", lambda h: h["nodes"][0].update(vrid=256))

    def reorder(h):
        h["nodes"].reverse()
    inv = inventory.load(_county(tmp_path / "d", reorder), tmp_path / "state")
    assert {i["home"]: i["vrid"] for i in vrrp.instances(inv.hosts)} == {
        "n1": 50, "n2": 51, "n3": 52}


def test_the_subnet_s_own_addresses_and_long_interface_names_are_refused(tmp_path):
    for k, (what, addr) in enumerate((("network", "10.77.0.0"),
                                      ("broadcast", "10.77.0.255"))):
        msg = _refused(tmp_path / str(k), lambda h: h["nodes"][0].update(floating=addr))
        assert f"{what} address" in msg and "10.77.0.0/24" in msg
    msg = _refused(tmp_path / "v6", lambda h: h["nodes"][1].update(floating6="fd00:77::"))
    assert "anycast" in msg
    msg = _refused(tmp_path / "if", lambda h: h["vrrp"].update(interface="e" * 16))
    assert "interface" in msg and "15" in msg

    def v6_address(h):
        h["nodes"][0]["address"] = "fd00:77::1:11"
    assert "must be IPv4" in _refused(tmp_path / "a6", v6_address)


def test_an_address_outside_the_subnet_is_refused(tmp_path):
    def away(h):
        h["nodes"][2]["floating"] = "10.78.0.103"
    msg = _refused(tmp_path, away)
    assert "n3" in msg and "10.78.0.103" in msg and "10.77.0.0/24" in msg

    def away6(h):
        h["nodes"][0]["floating6"] = "fd00:99::1"
    assert "subnet6" in _refused(tmp_path / "b", away6)


def test_a_web_node_without_its_floating_address_is_refused(tmp_path):
    def missing(h):
        h["nodes"][1].pop("floating")
    assert "n2" in _refused(tmp_path, missing)

    def stray(h):
        h.pop("vrrp")
    assert "vrrp" in _refused(tmp_path / "b", stray)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=8))
def test_every_node_is_some_address_s_next_backup_exactly_once(count):
    """With N web nodes, the N addresses' first backups are N different nodes: the loss of
    one node puts its address on one survivor, and the next loss lands on another."""
    from controlplane.core.manifest import Hosts
    hosts = Hosts.model_validate({
        "ssh": {"user": "root", "key": "/k"},
        "vrrp": {"subnet": "10.0.0.0/24"},
        "nodes": [{"name": f"w{i}", "address": f"10.0.0.{i + 1}",
                   "floating": f"10.0.0.{i + 101}", "vrid": 60 + i} for i in range(count)]})
    insts = vrrp.instances(hosts)
    assert sorted(i["home"] for i in insts) == sorted(n.name for n in hosts.nodes)
    if count > 1:
        firsts = [i["order"][1] for i in insts]
        assert sorted(firsts) == sorted(n.name for n in hosts.nodes)
        assert all(i["order"][1] != i["home"] for i in insts)


def test_firewall_without_vrrp_is_as_before(tmp_path):
    inv = inventory.load(_county(tmp_path, _no_vrrp), tmp_path / "state")
    n1 = inv.hosts.nodes[0]
    fw = firewall.render(inv.hosts, n1, []).decode()
    assert "iif lo ip daddr 127.0.0.0/8 accept" in fw and "112" not in fw and "vrrp4" not in fw


def test_a_unit_may_not_proxy_to_a_floating_address(tmp_path):
    inv = _county(tmp_path)
    (inv / "tenants" / "app.yaml").write_text(
        "name: app\ntitle: 应用\nkind: department\n"
        "contact: {name: 李强, email: it@app.qingshui.gov.cn, phone: '0571-6512-3399'}\n"
        "site: {type: proxy, upstreams: ['http://10.77.0.102:8080']}\n")
    with pytest.raises(ManifestError) as e:
        inventory.load(inv, tmp_path / "state")
    assert "app.yaml" in str(e.value) and "10.77.0.102" in str(e.value)


def test_a_node_standing_in_for_the_offsite_copy_lets_the_cluster_s_restic_in(tmp_path):
    """The example county's off-site copy lives on n3: the backup node n1 must reach its
    SSH, as it reaches n1's; a node that holds no repository keeps SSH for operators only."""
    inv = inventory.load(_county(tmp_path), tmp_path / "state")
    placement = {t.name: ("n1", "n2") for t in inv.tenants}
    n2 = render_node(inv, placement, "n2").files["firewall.nft"].decode()
    n3 = render_node(inv, placement, "n3").files["firewall.nft"].decode()
    assert "tcp dport 22 ip saddr @cluster4 accept" in n3
    assert "tcp dport 22 ip saddr @cluster4 accept" not in n2
    repos = firewall.repository_nodes(inv.hosts, inv.cluster.backup.offsite.address)
    assert repos == {"n1", "n3"}
    n3_node = inv.hosts.nodes[2]
    assert firewall.allowed(inv.hosts, n3_node, [], "10.77.0.11", 22, repos)
    assert not firewall.allowed(inv.hosts, inv.hosts.nodes[1], [], "10.77.0.11", 22, repos)


def test_source_and_floating_on_a_non_web_node_are_refused(tmp_path):
    def source(h):
        h["nodes"][0]["source"] = "10.77.0.50"
    assert "source" in _refused(tmp_path, source)

    def not_web(h):
        h["nodes"][2]["roles"] = ["monitoring"]
    assert "no web role" in _refused(tmp_path / "b", not_web)
