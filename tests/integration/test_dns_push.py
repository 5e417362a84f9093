"""`govhost dns push` against a real BIND (Debian's bind9) on loopback: RFC 2136 updates
signed with TSIG, the county's zone moved from round-robin node addresses to the floating
addresses, idempotent, and refused for a key the server allows only TXT."""
from __future__ import annotations

import json
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from controlplane.lab import services as lab_services
from tests.helpers import example_inventory

from .conftest import govhost

PORT = 1253
ZONE = "qingshui.gov.cn"
NODES4 = ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
FLOATING4 = {"10.77.0.101", "10.77.0.102", "10.77.0.103"}
FLOATING6 = {"fd00:77::101", "fd00:77::102", "fd00:77::103"}

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/named").exists(),
                                reason="bind9 is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def bind(tmp_path):
    """BIND answering every name of the zone with the nodes' own addresses (what a county
    had before floating addresses), on a port of its own."""
    d = tmp_path / "bind"
    lab_services.bind_up(ZONE, NODES4, d, "127.0.0.1", PORT)
    yield d
    lab_services.stop_dir(d)


def _county(tmp_path: Path, key: str, bind_dir: Path) -> Path:
    inv = tmp_path / "inventory"
    example_inventory(inv)
    cluster = yaml.safe_load((inv / "cluster.yaml").read_text())
    cluster["dns"] = {"server": "127.0.0.1", "port": PORT, "zone": ZONE, "tsig_key_name": key,
                      "tsig_secret_file": str(bind_dir / f"{key}.secret")}
    (inv / "cluster.yaml").write_text(yaml.safe_dump(cluster, allow_unicode=True))
    return inv


def answer(name: str, typ: str) -> set[str]:
    q = dns.message.make_query(name, typ)
    resp = dns.query.tcp(q, "127.0.0.1", port=PORT, timeout=5)
    assert resp.rcode() == dns.rcode.NOERROR
    return {rd.to_text() for rrset in resp.answer for rd in rrset}


def push(inv: Path, *args: str) -> dict:
    r = govhost(inv, "dns", "push", "--json", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_push_moves_the_zone_to_the_floating_addresses_once(tmp_path, bind):
    inv = _county(tmp_path, lab_services.DNS_KEY, bind)
    plan = json.loads(govhost(inv, "dns", "plan", "--json").stdout)
    names = {r["name"] for r in plan if r["name"].endswith("." + ZONE) or r["name"] == ZONE}
    assert answer(f"jiaoyu.{ZONE}", "A") == set(NODES4)

    dry = push(inv, "--dry-run")
    assert dry["updates_sent"] == 0 and answer(f"jiaoyu.{ZONE}", "A") == set(NODES4)
    by_key = {(c["name"], c["type"]): c for c in dry["changes"]}
    assert by_key[(f"jiaoyu.{ZONE}", "A")]["now"] == NODES4
    assert set(by_key[(f"jiaoyu.{ZONE}", "A")]["after"]) == FLOATING4
    assert by_key[(f"jiaoyu.{ZONE}", "AAAA")]["now"] == []
    assert {n for n, _ in by_key} == names

    done = push(inv)
    assert done["updates_sent"] >= 1 and len(done["changes"]) == len(dry["changes"])
    for name in names:
        assert answer(name, "A") == FLOATING4, name
        assert answer(name, "AAAA") == FLOATING6, name
    # Outside the zone: listed, never sent (its own zone points it at the nodes).
    assert done["outside_zone"] == sorted({r["name"] for r in plan} - names)

    again = push(inv)
    assert again["changes"] == [] and again["updates_sent"] == 0
    assert again["unchanged"] == len(by_key)


def test_a_key_the_server_allows_only_txt_is_refused_and_changes_nothing(tmp_path, bind):
    inv = _county(tmp_path, lab_services.TSIG_KEY, bind)       # the ACME key: TXT only
    r = govhost(inv, "dns", "push")
    assert r.returncode != 0
    assert "refused the update" in r.stderr + r.stdout and "REFUSED" in r.stderr + r.stdout
    assert answer(f"jiaoyu.{ZONE}", "A") == set(NODES4)


def test_a_wrong_secret_is_refused_clearly(tmp_path, bind):
    inv = _county(tmp_path, lab_services.DNS_KEY, bind)
    secret = bind / f"{lab_services.DNS_KEY}.secret"
    secret.write_text("c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1zZXJ2ZXJzCg==\n")
    r = govhost(inv, "dns", "push")
    assert r.returncode != 0 and "TSIG" in r.stderr + r.stdout, r.stdout + r.stderr
    assert answer(f"jiaoyu.{ZONE}", "A") == set(NODES4)
    secret.chmod(0o644)
    r = govhost(inv, "dns", "push")
    assert "readable by others" in r.stderr + r.stdout
