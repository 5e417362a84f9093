"""The message box as the control machine renders and reads it (issue 38): every node gets
its settings in a root-only release file with peers other than itself, the unit's site gets
its locations and nothing else does, `nginx -t` takes them, the firewall lets only the
cluster's nodes reach the peers' door, and what the nodes hold is merged into one list that
says where each message is kept and whether its copies agree."""
from __future__ import annotations

import json

import yaml

from controlplane.core import inventory, paths
from controlplane.messages import collect
from controlplane.sites import apply, firewall
from controlplane.sites.plan import make_plan
from tests.helpers import nginx_test


def test_every_node_gets_its_settings_and_peers_other_than_itself(inv_dir):
    inv = inventory.load(inv_dir)
    releases = make_plan(inv, frozenset(), {}, {}).releases
    docs = {n: json.loads(r.files["messages.json"]) for n, r in releases.items()}
    assert apply.private("messages.json")
    addresses = {n.name: n.address for n in inv.hosts.nodes}
    for node, doc in docs.items():
        assert doc["node"] == node and doc["units"] == {"jiaoyu": "JY"}
        assert doc["titles"] == {"jiaoyu": "青水县教育局"}
        assert f"{addresses[node]}:{paths.MESSAGES_PORT}" not in doc["peers"]
        assert sorted(doc["peers"]) == sorted(f"{a}:{paths.MESSAGES_PORT}"
                                              for n, a in addresses.items() if n != node)
    assert sorted(d["index"] for d in docs.values()) == [1, 2, 3]
    assert len({d["secret"] for d in docs.values()}) == 1      # one county secret
    # the first peers differ, so the copies are spread over the nodes
    assert len({d["peers"][0] for d in docs.values()}) == 3


def test_only_the_units_site_gets_the_box_and_nginx_takes_it(inv_dir, tmp_path):
    doc = yaml.safe_load((inv_dir / "tenants" / "wenlv.yaml").read_text())
    doc["messages"] = {"code": "WL", "path": "/liuyan/"}
    (inv_dir / "tenants" / "wenlv.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    inv = inventory.load(inv_dir)
    releases = make_plan(inv, frozenset(), {}, {}).releases
    for node, rel in releases.items():
        files = dict(rel.files)
        jiaoyu, wenlv, other = (files[f"vhosts/{t}.conf"].decode()
                                for t in ("jiaoyu", "wenlv", "caizheng"))
        for path in ("/hudong/", "/hudong/challenge", "/hudong/message", "/hudong/form.js"):
            assert f"location = {path} {{" in jiaoyu
        assert "location = /liuyan/message {" in wenlv and "/hudong/" not in wenlv
        assert paths.MESSAGES_SOCKET not in other
        assert "proxy_set_header X-Govhost-Unit $govhost_unit;" in \
            files["snippets/messages-proxy.conf"].decode()
        assert "zone=govhost_messages" in files["nginx.conf"].decode()
        out = nginx_test(files, tmp_path / node)
        assert out.returncode == 0 and "[warn]" not in out.stderr, out.stderr


def test_the_peers_door_is_the_clusters_only(inv_dir):
    inv = inventory.load(inv_dir)
    hosts = inv.hosts
    n1, n2 = hosts.nodes[0], hosts.nodes[1]
    assert paths.MESSAGES_PORT in firewall.checked_ports(hosts)
    assert hosts.firewall is not None             # the example county has one
    assert firewall.allowed(hosts, n1, [], n2.address, paths.MESSAGES_PORT)
    assert not firewall.allowed(hosts, n1, [], "198.18.0.9", paths.MESSAGES_PORT)
    text = firewall.render(hosts, n1, []).decode()
    assert f"tcp dport {{ {paths.SEARCH_PORT}, {paths.MESSAGES_PORT} }} ip saddr " \
           "@cluster4 accept" in text


def _line(number: str, node: str, held_as: str, **change: str) -> str:
    record = {"number": number, "unit": "jiaoyu", "node": node, "received":
              "2026-12-05T02:00:00Z", "subject": "路灯", "text": "路灯坏了", "name": "",
              "contact": "13800138000", "token_hash": "0" * 64, "source": "a" * 64,
              "held_as": held_as, **change}
    return json.dumps(record, ensure_ascii=False)


def test_merge_lists_each_message_once_with_where_it_is_kept():
    dumps = {
        "n1": "\n".join([_line("JY-20261205-1-000001", "n1", "own"),
                         _line("JY-20261205-2-000001", "n2", "copies")]),
        "n2": "\n".join([_line("JY-20261205-2-000001", "n2", "own")]),
        "n3": "\n".join([_line("JY-20261205-1-000001", "n1", "copies", text="改过的")]),
    }
    got = collect.merge(dumps)
    assert [(m.number, m.stored_on, m.taken_by, m.differs) for m in got] == [
        ("JY-20261205-1-000001", ("n1", "n3"), "n1", True),
        ("JY-20261205-2-000001", ("n1", "n2"), "n2", False)]
    assert "contact" not in got[0].public() and got[0].public()["copies"] == 2
    assert got[0].received_local() == "2026-12-05 10:00"


def test_a_citizens_subject_is_text_in_the_operators_terminal(monkeypatch, tmp_path):
    """Found by the attack review: "[/] 路灯" stopped `messages list` for every unit (Rich
    markup), "[link=…]" hid a hyperlink behind Chinese text."""
    from typer.testing import CliRunner

    import commands.messages as cm
    subjects = ["[/] 路灯", "[link=https://evil.example/login]请点此核实您的账号[/link]",
                ":warning: 紧急"]
    dumps = "\n".join(_line(f"JY-20261205-1-00000{i}", "n1", "own", subject=s)
                      for i, s in enumerate(subjects))
    found = collect.merge({"n1": dumps})
    # a node's error text (ssh's, Python's "[Errno 111]") is printed as text too
    monkeypatch.setattr(collect, "collect", lambda county, **which: (found, {"n2": "[/] [Errno 111]"}))
    from controlplane.core.county import County
    from tests.helpers import example_inventory
    c = County(example_inventory(tmp_path / "inventory"))
    monkeypatch.setattr(cm, "county", lambda: c)
    r = CliRunner().invoke(cm.app, ["messages", "list"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for s in subjects:
        assert s in r.output, r.output
    assert "evil.example" in r.output and "\x1b]8;" not in r.output
    assert "[/] [Errno 111]" in r.output


def test_a_copy_whose_contact_is_forgotten_first_does_not_differ():
    """One node forgot the contact (the county's retention), the other was down and will at
    the next run: the same message, not a conflict. Any other difference still is."""
    n = "JY-20250105-1-000001"
    old = {"received": "2025-01-05T02:00:00Z"}
    same = collect.merge({"n1": _line(n, "n1", "own", name="", contact="", **old),
                          "n2": _line(n, "n1", "copies", **old)})
    assert not same[0].differs and same[0].stored_on == ("n1", "n2")
    other = collect.merge({"n1": _line(n, "n1", "own", name="", contact="", **old),
                           "n2": _line(n, "n1", "copies", text="路灯坏了两周", **old)})
    assert other[0].differs


def test_a_forgotten_copy_hides_no_other_difference():
    """Found by the second review: with one copy forgotten, two whole copies that differ in
    the contact (or a copy with only the contact emptied) still count as differing, and a
    whole copy is the one shown; a recent message cannot have been forgotten yet."""
    n = "JY-20250105-1-000001"
    forgot = _line(n, "n1", "copies", name="", contact="", received="2025-01-05T02:00:00Z")
    real = _line(n, "n1", "own", received="2025-01-05T02:00:00Z")
    swapped = _line(n, "n1", "copies", contact="13900000000", received="2025-01-05T02:00:00Z")
    [m] = collect.merge({"n0": forgot, "n1": real, "n2": swapped})
    assert m.differs
    [m] = collect.merge({"n0": forgot, "n1": real})
    assert not m.differs and m.contact == "13800138000"
    half = _line(n, "n1", "copies", contact="", name="李四", received="2025-01-05T02:00:00Z")
    assert collect.merge({"n0": half, "n1": real})[0].differs
    token = _line(n, "n1", "copies", token_hash="f" * 64, received="2025-01-05T02:00:00Z")
    assert collect.merge({"n0": token, "n1": real})[0].differs
    recent = "JY-20261205-1-000001"
    assert collect.merge({"n0": _line(recent, "n1", "copies", name="", contact=""),
                          "n1": _line(recent, "n1", "own")})[0].differs
