"""The front door, tried from the internet: a node lost costs citizens nothing.

From the lab's outside namespace (`govhost lab outside`, an address none of the county's),
curl and Python requests (15 s timeout, the inspection's limit) ask every floating address
for a unit's page every 200 ms while one node loses power, has its nginx killed, hangs, or
stops hearing a peer's VRRP, and while it comes back. Each passes when no request reached
the timeout, no address was silent for 5 s, no wrong page was served and nothing failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controlplane.core.county import County
from controlplane.lab import frontdoor, network
from controlplane.lab import machines as lab
from controlplane.monitoring.exporter import Prober
from tests.helpers import (
    FLOATING_HOME,
    floating_county,
    floating_held,
    wait_floating_home,
    wait_held,
)

from .conftest import REPO, govhost, with_county_keys
from .test_apply_lab import NODES, apply_json, node_metrics, on_node

HOST, EXPECT = "jiaoyu.qingshui.gov.cn", "教育"
FLOATING = FLOATING_HOME
ADDRESSES = [a for pair in FLOATING.values() for a in pair]
SILENT_AT_MOST = 5.0


@pytest.fixture(scope="module")
def county(lab_cluster, tmp_path_factory, county_keys):
    """The example county with a short preempt delay (5 s), so a node that is back takes its
    address back within the test; every address at home before each test."""
    inv = with_county_keys(floating_county(tmp_path_factory.mktemp("frontdoor") / "inventory"),
                           county_keys)
    # Two replicas at most, so that any one node can be drained.
    gongan = inv / "tenants" / "gongan.yaml"
    gongan.write_text(gongan.read_text().replace("replicas: 3", "replicas: 2"))
    apply_json(inv)
    wait_floating_home()
    return inv


class Citizens:
    """The outside's clients, asking for `seconds` in the background."""

    def __init__(self, seconds: float, addresses: list[str] = ADDRESSES) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            network.outside_argv(frontdoor.argv(addresses, HOST, EXPECT, seconds)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        frontdoor.wait_ready(self.proc)
        time.sleep(1)                 # a second of the normal state first

    def result(self) -> dict:
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err[-2000:]
        return json.loads(out)


def assert_unharmed(result: dict, may_fail: list[tuple[float, float]] = ()) -> None:
    """The issue's line: no request reached the 15 s timeout, no address was silent for 5 s,
    no wrong page was served. Beyond it, failed requests are counted: inside a `may_fail`
    window (a request in flight when a machine dies or hangs dies with it; a node whose
    nginx died refuses connections until its probe has failed twice) any number, elsewhere
    at most one per client and address (a connection open while an address moves is
    reset; measured: about one run in three has one). A request sent inside a `may_fail`
    window may also hang until its machine is back, or until the timeout when the machine
    stays away longer (a request the node took just before its power was cut gets no answer
    and no reset: nothing on the way knows that connection is gone; seen once in CI). Its
    loop waits on it, as a citizen's browser would, so that wait is not the address's
    silence; the silence around it still counts, and every other request must not time out."""
    t0 = result["started_at"]

    def excused(at: float) -> bool:
        return any(a <= t0 + at <= b for a, b in may_fail)

    def timeouts(r: dict) -> int:
        """Timeouts of requests sent outside every `may_fail` window."""
        return sum(1 for at in r["timed_out_at"] if not excused(at))

    def silent(r: dict) -> float:
        # times come rounded to 0.01 s and durations to 0.001 s: compared within that
        # (a silence that began with the excused request, at 0.6, read as from 0.602)
        since = r["silent_until"] - r["silent_s"]
        held = [secs for at, secs in r["slow"]
                if excused(at) and since <= at + 0.01 and at + secs <= r["silent_until"] + 0.05]
        return r["silent_s"] - max(held, default=0.0)

    bad = [r for r in result["loops"] if timeouts(r) or r["wrong"]
           or silent(r) >= SILENT_AT_MOST
           or len(r["failed_at"]) < r["failed"]
           or sum(1 for at, _ in r["failed_at"] if not excused(at)) > 1]
    assert not bad, json.dumps(bad, indent=1) + vrrp_logs(t0)
    assert result["requests"] > len(ADDRESSES) * 2 * 20


def vrrp_logs(t0: float) -> str:
    """What keepalived said on every node (for a failure's message), with the run's start."""
    out = [f"\nrun started at {time.strftime('%H:%M:%S', time.localtime(t0))}"
           f"{t0 % 1:.2f}".replace("0.", ".")]
    for name, address in NODES.items():
        try:
            out.append(f"--- {name}\n" + on_node(address, "tail -n 40 "
                                                 "/var/log/govhost/keepalived.log"))
        except Exception as exc:        # a node that is down says so
            out.append(f"--- {name}: {exc}")
    return "\n".join(out)


IN_FLIGHT = 0.5      # seconds before a power cut in which a request may still be on its way


def test_lab_outside_is_none_of_the_county_s_addresses(county):
    """The outside reaches the floating addresses through the router, from its own address;
    the operators' SSH on a node is dropped for it, as for any stranger."""
    r = subprocess.run(network.outside_argv(["ip", "-j", "addr", "show", "dev", "eth0"]),
                       capture_output=True, text=True, check=True)
    mine = {a["local"] for link in json.loads(r.stdout) for a in link["addr_info"]}
    assert network.OUTSIDE4 in mine and not mine & set(NODES.values())
    r = subprocess.run(["govhost", "lab", "outside", "--", "curl", "-s", "-o", "/dev/null",
                        "-w", "%{http_code}", "-H", f"Host: {HOST}", "http://10.77.0.101/"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "200"
    r = subprocess.run(network.outside_argv(["curl", "-s", "-m", "3", f"http://{NODES['n1']}:22/"]),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 28          # dropped, not refused


def test_a_node_loses_power_and_comes_back(county):
    citizens = Citizens(70)
    events = {"stop": time.time()}
    lab.stop("n2")
    events["stopped"] = time.time()
    try:
        time.sleep(8)
        # n2's address went to the next in its order, n3; nobody else moved.
        assert floating_held()["10.77.0.102"] == ["n3"] and floating_held()["fd00:77::102"] == ["n3"]
        st = json.loads(govhost(county, "status", "--json", "--no-probe").stdout)
        rows = {r["address"]: r for r in st["floating"]}
        assert rows["10.77.0.102"]["held_by"] == ["n3"]
        assert any("n2" in p["where"] and "unreachable" in p["what"] for p in st["problems"])
        # The compliance probes take the inspector's view: every unit through every address
        # DNS names, all loaded; the node's own probes still see n2 down.
        rnd = Prober(County(county), 10, record=False).probe_once(spread=False)
        placement = json.loads(govhost(county, "plan", "--json").stdout)["placement"]
        # (a unit whose every replica was on n2 is down whatever the front door does)
        assert rnd.failed and not [u for u, f in rnd.failed.items()
                                   if f and set(placement[u]) != {"n2"}], rnd.failed
        assert set(next(iter(rnd.public.values()))) == {a for a, _ in FLOATING.values()}
        assert not any(by["n2"].up for by in rnd.tenants.values())
    finally:
        events["start"] = time.time()
        lab.start("n2")
        apply_json(county)          # its services come back (an overlay node has no init)
    events["applied"] = time.time()
    result = citizens.result()
    wait_floating_home(30)                   # preempt: back home after its delay
    events["home"] = time.time()
    print({k: round(v - result["started_at"], 2) for k, v in events.items()})
    assert_unharmed(result, [(events["stop"] - IN_FLIGHT, events["stopped"])])


def test_a_node_s_nginx_dies(county):
    citizens = Citizens(25)
    killed = time.time()
    on_node(NODES["n2"], "kill -TERM $(cat /run/govhost-nginx.pid)")
    time.sleep(6)
    # keepalived's probe failed twice: n2 gave its addresses away, though the machine is up.
    assert floating_held()["10.77.0.102"] == ["n3"]
    apply_json(county)              # nginx is started again
    result = citizens.result()
    wait_floating_home(30)
    assert_unharmed(result, [(killed - IN_FLIGHT, killed + 4)])


def _nginx_signal(name: str, sig: str) -> None:
    """Stop or continue one node's nginx, master and workers (its own pid file: never a
    search by name, which on an overlay node would find every node's nginx)."""
    on_node(NODES[name], f"m=$(cat /run/govhost-nginx.pid) && kill -{sig} $m $(pgrep -P $m)")


def test_a_stalled_nginx_loses_its_address_but_a_county_stalled_everywhere_keeps_them(county):
    """A node whose nginx stops answering (accepts, never replies: what an overload looks
    like from its own probe) drops below its peers and its address moves; when every node
    stalls at once, all drop together and every address stays where it is, where moving
    them would help nobody."""
    _nginx_signal("n2", "STOP")
    try:
        # three slow probes (2 s each), then VRRP's master-down wait on the peer
        wait_held("10.77.0.102", ["n3"], 40)
    finally:
        _nginx_signal("n2", "CONT")
    wait_floating_home(40)
    home = {a: [n] for n, pair in FLOATING.items() for a in pair}
    with ThreadPoolExecutor(3) as pool:          # all at once, as an overload comes
        list(pool.map(lambda n: _nginx_signal(n, "STOP"), NODES))
    try:
        seen = []
        deadline = time.time() + 20              # long past the stall's take-over above
        while time.time() < deadline:
            seen.append(floating_held())
            time.sleep(0.5)
        assert [h for h in seen if h != home] == []
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda n: _nginx_signal(n, "CONT"), NODES))
    wait_floating_home(40)


def test_an_upgrade_that_cannot_hand_over_leaves_no_node_out_by_hand(county):
    """Nobody can take n1's addresses (n2 and n3 keep out of VRRP by hand): the upgrade
    stops before touching a package, and n1 takes part in VRRP again all the same."""
    for name in ("n2", "n3"):
        on_node(NODES[name], "/usr/local/sbin/govhost-node vrrp release")
    try:
        st = json.loads(govhost(county, "status", "--json", "--no-probe").stdout)
        by_hand = {p["where"] for p in st["problems"] if "by hand" in p["what"]}
        assert by_hand == {"n2", "n3"}, st["problems"]
        assert {n["node"]: n.get("vrrp") for n in st["nodes"]} == {
            "n1": "running", "n2": "released by hand", "n3": "released by hand"}
        r = govhost(county, "node", "upgrade", "n1")
        assert r.returncode != 0 and "no peer" in r.stdout + r.stderr, r.stdout + r.stderr
        status = json.loads(on_node(NODES["n1"], "/usr/local/sbin/govhost-node status"))
        assert status["vrrp_by_hand"] is False and status["vrrp_running"] is True
        metrics = node_metrics(county, NODES["n2"])
        assert "govhost_floating_released_by_hand 1" in metrics
        assert "govhost_vrrp_running 0" in metrics
    finally:
        for name in ("n2", "n3"):
            on_node(NODES[name], "/usr/local/sbin/govhost-node vrrp resume")
    wait_floating_home(60)
    assert "govhost_vrrp_running 1" in node_metrics(county, NODES["n2"])


def test_a_node_hangs_and_wakes_up(county):
    citizens = Citizens(30)
    frozen = time.time()
    network.freeze("n2", True)
    try:
        time.sleep(8)
        assert "n3" in floating_held()["10.77.0.102"]
    finally:
        thawed = time.time()
        network.freeze("n2", False)
    wait_floating_home(30)
    home = time.time()
    result = citizens.result()
    # Lost with the machine: what was in flight as it hung. And when it takes its address
    # back, a connection the stand-in had open is reset (the firewall answers the stray
    # packets with a reset, so the client knows at once instead of waiting 15 s).
    assert_unharmed(result, [(frozen - IN_FLIGHT, frozen + 0.1), (thawed, home + 0.5)])
    assert all(r["failed"] <= 2 for r in result["loops"]), result["loops"]


def test_two_nodes_that_cannot_hear_each_other_are_reported_and_still_serve(county, tmp_path):
    citizens = Citizens(25)
    network.partition("n1", "n2")
    try:
        deadline = time.time() + 15
        while time.time() < deadline and len(floating_held()["10.77.0.101"]) < 2:
            time.sleep(0.5)
        # Each thinks the other is gone: both hold the other's address (split brain).
        assert sorted(floating_held()["10.77.0.101"]) == ["n1", "n2"]
        st = json.loads(govhost(county, "status", "--json", "--no-probe").stdout)
        assert any(p["where"] == "10.77.0.101" and "split brain" in p["what"]
                   for p in st["problems"]), st["problems"]
        metrics = node_metrics(county, NODES["n2"])
        assert 'govhost_floating_held{address="10.77.0.101",home="n1"} 1' in metrics
        assert 'govhost_floating_away{address="10.77.0.101",home="n1"} 1' in metrics
    finally:
        network.partition("n1", "n2", apart=False)
    result = citizens.result()
    wait_floating_home(30)
    # Both served the right pages meanwhile: every node serves every unit.
    assert_unharmed(result)


def test_a_drained_node_hands_its_addresses_over_and_takes_them_back(county):
    citizens = Citizens(30)
    events = {"drain": time.time()}
    assert govhost(county, "node", "drain", "n3").returncode == 0
    try:
        apply_json(county)
        events["applied"] = time.time()
        holders = floating_held()
        assert "n3" not in holders["10.77.0.103"] and holders["10.77.0.103"] == ["n1"]
        st = json.loads(govhost(county, "status", "--json", "--no-probe").stdout)
        # Away from home on purpose: no warning for it.
        assert not [p for p in st["problems"] if p["where"] == "10.77.0.103"], st["problems"]
        n3 = next(n for n in st["nodes"] if n["node"] == "n3")
        assert n3["drained"]
    finally:
        govhost(county, "node", "undrain", "n3")
    events["undrain"] = time.time()
    apply_json(county)
    events["applied again"] = time.time()
    result = citizens.result()
    wait_floating_home(30)
    events["home"] = time.time()
    print({k: round(v - result["started_at"], 2) for k, v in events.items()})
    # The handover is planned but VRRP carries no connections: a request in flight at the
    # instant keepalived leaves n3 is reset (a few milliseconds; seen once in three runs).
    assert_unharmed(result, [(events["drain"], events["applied"])])
    assert all(r["failed"] <= 1 for r in result["loops"]), result["loops"]


def test_dns_names_only_floating_addresses(county):
    plan = json.loads(govhost(county, "dns", "plan", "--json").stdout)
    values = {r["value"] for r in plan if r["name"] == HOST}
    assert values == set(ADDRESSES)


def test_keepalived_runs_on_every_web_node_from_the_release(county):
    for name, address in NODES.items():
        conf = on_node(address, "cat /etc/keepalived/keepalived.conf")
        assert f"router_id {name}" in conf and "vrrp_version 3" in conf
        status = json.loads(on_node(address, "/usr/local/sbin/govhost-node status"))
        assert status["vrrp_running"] is True and status["vrrp_released"] is False
        assert set(status["floating"]) == set(FLOATING[name])
    assert Path("/run/netns/" + network.OUTSIDE).exists()
