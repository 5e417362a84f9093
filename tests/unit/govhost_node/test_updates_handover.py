"""The nightly update's hand-over: the node's floating addresses go to its peers while
packages restart nginx, and come back after, without ending a release someone else made.
(`govhost-node vrrp` itself is stood in for by a script that records its calls: it needs a
node's keepalived; the lab test of `govhost node upgrade` runs the real one.)"""
from __future__ import annotations

import json
import stat

from govhost_node import updates


def _tool(tmp_path):
    log = tmp_path / "calls"
    tool = tmp_path / "govhost-node"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return str(tool), log


def test_hand_over_and_take_back_pair_up(tmp_path, monkeypatch):
    monkeypatch.setattr(updates.time, "sleep", lambda s: None)
    tool, log = _tool(tmp_path)
    spec = tmp_path / "vrrp.json"
    spec.write_text(json.dumps({"node": "n1", "released": False, "addresses": [
        {"home": "n1", "address": "10.0.0.101"}, {"home": "n2", "address": "10.0.0.102"}]}))
    paths = {"by_hand": str(tmp_path / "by-hand"), "mine": str(tmp_path / "mine")}
    assert updates.hand_over(str(spec), tool=tool, **paths) == "released"
    assert log.read_text() == "vrrp release\n"
    assert updates.take_back(paths["mine"], tool) == "resumed"
    assert log.read_text() == "vrrp release\nvrrp resume\n"
    assert updates.take_back(paths["mine"], tool) == "nothing to take back"


def test_a_node_already_out_of_vrrp_is_left_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(updates.time, "sleep", lambda s: None)
    tool, log = _tool(tmp_path)
    spec = tmp_path / "vrrp.json"
    mine = str(tmp_path / "mine")
    # no floating addresses at all
    assert updates.hand_over(str(spec), str(tmp_path / "x"), mine, tool) == \
        "no floating addresses"
    # drained: the release says so
    spec.write_text(json.dumps({"released": True}))
    assert updates.hand_over(str(spec), str(tmp_path / "x"), mine, tool) == \
        "already out of VRRP"
    # released by an operator: take-back must not end it
    spec.write_text(json.dumps({"released": False}))
    (tmp_path / "by-hand").touch()
    assert updates.hand_over(str(spec), str(tmp_path / "by-hand"), mine, tool) == \
        "already out of VRRP"
    assert updates.take_back(mine, tool) == "nothing to take back"
    # the only web node: nobody would take its address, so it keeps it through the update
    (tmp_path / "by-hand").unlink()
    spec.write_text(json.dumps({"node": "n1", "released": False,
                                "addresses": [{"home": "n1", "address": "10.0.0.101"}]}))
    assert updates.hand_over(str(spec), str(tmp_path / "by-hand"), mine, tool) == \
        "no peer to take the addresses"
    assert not log.exists()


def test_a_release_that_fails_half_way_is_still_taken_back(tmp_path, monkeypatch):
    monkeypatch.setattr(updates.time, "sleep", lambda s: None)
    log = tmp_path / "calls"
    tool = tmp_path / "govhost-node"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n[ \"$2\" = resume ]\n")
    tool.chmod(0o755)
    spec = tmp_path / "vrrp.json"
    spec.write_text(json.dumps({"node": "n1", "released": False, "addresses": [
        {"home": "n1", "address": "10.0.0.101"}, {"home": "n2", "address": "10.0.0.102"}]}))
    mine = str(tmp_path / "mine")
    import subprocess
    try:
        updates.hand_over(str(spec), str(tmp_path / "x"), mine, str(tool))
    except subprocess.CalledProcessError:
        pass
    assert updates.take_back(mine, str(tool)) == "resumed"
    assert log.read_text() == "vrrp release\nvrrp resume\n"


def test_the_timer_s_service_hands_over_first_and_always_takes_back():
    text = updates.SERVICE_TEXT
    assert "ExecCondition=/usr/local/sbin/govhost-updates ok" in text
    assert "ExecStartPre=-/usr/local/sbin/govhost-updates hand-over" in text
    assert "ExecStopPost=/usr/local/sbin/govhost-updates take-back" in text
