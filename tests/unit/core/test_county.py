"""The county is loaded once and passed down: its state directory is worked out once, its
manifests and secrets read once, however many layers use them."""
from __future__ import annotations

import stat
from collections import Counter

import pytest

from controlplane.core import county as county_mod
from controlplane.core import inventory as inventory_mod
from controlplane.core import secrets
from controlplane.core.certstore import CertStore
from controlplane.core.county import County
from controlplane.core.errors import ManifestError
from controlplane.sites import apply as apply_mod
from tests.helpers import CLUSTER, hosts, tenant, write_inventory


def _php_county_with_backups(root):
    doc = hosts(3)
    doc["nodes"][0]["roles"] = ["web", "backup"]
    doc["nodes"][1]["roles"] = ["web", "db"]
    return write_inventory(root, [tenant("jiaoyu"),
                                  tenant("renshe", site={"type": "php", "database": True})],
                           cluster=CLUSTER, host_doc=doc)


def _counting(monkeypatch, module, name, calls: Counter):
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)


def test_state_dir_secret_and_manifests_are_read_once_through_plan(tmp_path, monkeypatch):
    root = _php_county_with_backups(tmp_path / "inv")
    monkeypatch.delenv("GOVHOST_STATE_DIR", raising=False)
    calls: Counter = Counter()
    _counting(monkeypatch, county_mod, "state_dir", calls)
    _counting(monkeypatch, inventory_mod, "state_dir", calls)
    _counting(monkeypatch, inventory_mod, "_parse_bytes", calls)
    _counting(monkeypatch, secrets, "ensure", calls)
    _counting(monkeypatch, secrets, "backup_key", calls)

    county = County(root)
    with county.state() as st:
        inv, plan = apply_mod.prepare(county, st)         # what apply, publish and status do
        inv2, plan2 = apply_mod.prepare(county, st)       # a second layer asks again
    assert plan.releases and plan2.releases.keys() == plan.releases.keys()
    assert county.known_hosts.parent == county.state_dir == (root / ".govhost").resolve()
    assert inv.secret and inv.backup_key and inv2.secret == inv.secret
    # cluster.yaml, hosts.yaml and the two tenants: each parsed once
    assert calls == {"state_dir": 1, "_parse_bytes": 4, "ensure": 1, "backup_key": 1}


def test_a_bad_manifest_is_refused_on_first_use_and_not_cached(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu")])
    county = County(root)
    (root / "tenants" / "bad.yaml").write_text("name: Bad Name\n")
    with pytest.raises(ManifestError, match="bad.yaml"):
        county.inv
    (root / "tenants" / "bad.yaml").unlink()
    assert [t.name for t in county.inv.tenants] == ["jiaoyu"]   # fixed: loads now
    assert county.inv is county.inv                               # and once


def test_reloaded_reads_the_manifests_again_with_the_same_state(tmp_path, monkeypatch):
    monkeypatch.setenv("GOVHOST_STATE_DIR", str(tmp_path / "state"))
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu")])
    county = County(root)
    assert county.state_dir == (tmp_path / "state").resolve()
    assert len(county.inv.tenants) == 1
    write_inventory(root, [tenant("jiaoyu"), tenant("renshe")])
    assert len(county.inv.tenants) == 1                     # loaded once: not re-read
    again = county.reloaded()
    assert len(again.inv.tenants) == 2 and again.state_dir == county.state_dir


def test_cert_store_keeps_key_and_chain_private_and_whole(tmp_path):
    store = CertStore(tmp_path / "tls")
    assert store.lineages() == [] and store.read("x") is None
    key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    chain = b"-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"
    store.write("internal-jiaoyu", key, chain)
    store.write("acme-1", key, chain)
    assert store.lineages() == ["acme-1", "internal-jiaoyu"]
    got_key, got_chain = store.read("internal-jiaoyu")
    assert got_key.strip() == key and got_chain.strip() == chain
    mode = stat.S_IMODE(store.bundle_path("acme-1").stat().st_mode)
    assert mode == 0o600
    store.bundle_path("broken").write_bytes(b"no certificate here")
    assert store.read("broken") is None
    assert not list(store.certs_dir.glob(".*.tmp"))          # no temporary file left behind


def test_where_units_are_is_worked_out_without_rendering_the_county(tmp_path, monkeypatch):
    """A publish asks only where its unit's replicas are: the same answer as a whole plan,
    with no node's configuration rendered (that cost grows with the whole county)."""
    root = _php_county_with_backups(tmp_path / "inv")
    county = County(root)
    with county.state() as st:
        st.set_drained("n2", True)
        _, plan = apply_mod.prepare(county, st)
        st.save_placements(plan.placement)
        calls: Counter = Counter()
        _counting(monkeypatch, apply_mod, "render_cluster", calls)
        from controlplane.sites import plan as plan_mod
        _counting(monkeypatch, plan_mod, "render_cluster", calls)
        inv, placed = apply_mod.placement(county, st)
    assert placed == plan.placement and "n2" not in {n for ns in placed.values() for n in ns}
    assert inv.tenant("renshe") is not None and calls == Counter()


def test_one_units_status_is_gathered_without_rendering_the_county(tmp_path, monkeypatch):
    """The console's unit page and `govhost status UNIT` judge the nodes against what the last
    apply put there; only the county's whole status renders (and says so in its problem).
    The nodes are stood in for (no lab here): every one answers with the release applied."""
    from controlplane.core import remote
    from controlplane.sites import plan as plan_mod
    from controlplane.sites import status as status_mod
    root = _php_county_with_backups(tmp_path / "inv")
    county = County(root)
    with county.state() as st:
        _, plan = apply_mod.prepare(county, st)
        st.save_placements(plan.placement)
        for name, rel in plan.releases.items():
            st.record_applied(name, rel.id, rel.digests, 0)
    serving = {n: "0123456789abcdef" if n == "n2" else r.id for n, r in plan.releases.items()}
    monkeypatch.setattr(status_mod.remote, "node_status", lambda hosts, nodes, *a, **k: {
        n.name: remote.NodeStatus(n.name, True, release=serving[n.name], nginx_running=True,
                                  intact=True, agent_running=True) for n in nodes})
    monkeypatch.setattr(status_mod, "agent_metrics", lambda *a, **k: None)
    calls: Counter = Counter()
    _counting(monkeypatch, apply_mod, "render_cluster", calls)
    _counting(monkeypatch, plan_mod, "render_cluster", calls)
    one = status_mod.gather(county, probe=False, only="renshe")
    assert calls == Counter()
    assert one["tenants"][0]["replicas"] == list(plan.placement["renshe"])
    drift = [p["what"] for p in one["problems"] if "serves release" in p["what"]]
    assert drift == ["serves release 0123456789abcdef, the last apply put "
                     f"{plan.releases['n2'].id}: run `govhost apply`"]
    whole = status_mod.gather(county, probe=False)
    assert calls["render_cluster"] >= 1
    assert any("the inventory renders" in p["what"] for p in whole["problems"]
               if p["where"] == "n2")
