"""The memo (core/memo.py): a plan made with what runs before kept is the plan made without
it, byte for byte, whatever changed between the runs; and a memo that cannot be used is a
memo that remembers nothing, never a failed or a wrong plan."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.backup import recovery
from controlplane.core import inventory, yamlsafe
from controlplane.core.county import County
from controlplane.core.memo import Memo
from controlplane.core.specfile import spec_bytes
from controlplane.sites.plan import compute_placement, make_plan
from controlplane.sites.render import render_cluster
from controlplane.tls.store import Deployed
from tests.helpers import CLUSTER, hosts, tenant, write_inventory

UNITS = [
    tenant("jiaoyu"),
    tenant("chahe", kind="township", sections=[{"name": "cun1", "title": "第一村"}]),
    tenant("php-unit", site={"type": "php", "database": True}),
    tenant("proxy-unit", site={"type": "proxy", "upstreams": ["http://10.77.5.9:8080"]}),
    # a date (YAML reads it as one, JSON has none): parsed each run, never kept
    tenant("detect", waf={"mode": "detect", "reason": "旧系统",
                          "until": datetime.date.today() + datetime.timedelta(days=30)}),
    tenant("pending", launch="pending"),
]


def _hosts() -> dict:
    doc = hosts(3)
    doc["nodes"][1]["roles"] = ["web", "db"]
    return doc


def _county(root: Path, units: list[dict], cluster: dict | None = None,
            host_doc: dict | None = None) -> Path:
    host_doc = host_doc or _hosts()
    if root.exists():
        for f in (root / "tenants").glob("*.yaml"):
            f.unlink()
    return write_inventory(root, units, 3, cluster=cluster, host_doc=host_doc)


def _releases(inv_dir: Path, state: Path, memo: Memo | None, tweak=None) -> dict:
    inv = inventory.load(inv_dir, state, memo=memo)
    if tweak is not None:
        inv = tweak(inv)
    placement = compute_placement(inv, frozenset(), {})
    releases = render_cluster(inv, placement)
    if memo is not None:
        memo.close()
    return {n: (r.id, dict(r.files), r.digests) for n, r in releases.items()}


def _cert(inv):
    chain, key = b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n"
    return dataclasses.replace(inv, certificates={
        "lin": Deployed(("jiaoyu.qingshui.gov.cn",), chain, key, True, 0.0)},
        served_with={"jiaoyu": "lin", "chahe": "lin"})


# What may change between two runs: each gives (units, cluster, hosts, what the state adds).
CHANGES = {
    "nothing": lambda u, c, h: (u, c, h, None),
    "a title": lambda u, c, h: ([{**u[0], "title": "教育局（新）"}, *u[1:]], c, h, None),
    "a section": lambda u, c, h: ([u[0], {**u[1], "sections": [{"name": "cun2", "title": "二"}]},
                                   *u[2:]], c, h, None),
    "a rate limit": lambda u, c, h: ([{**u[0], "rate_limit": {"requests_per_second": 7,
                                                             "burst": 3}}, *u[1:]], c, h, None),
    "the domain": lambda u, c, h: (u, {**c, "domain": "lushan.gov.cn"}, h, None),
    "the county's name": lambda u, c, h: (u, {**c, "name": "庐山县"}, h, None),
    "a node's address": lambda u, c, h: (u, c, {**h, "nodes": [
        {**h["nodes"][0], "address": "10.77.0.41"}, *h["nodes"][1:]]}, None),
    "a unit removed": lambda u, c, h: (u[1:], c, h, None),
    "replicas": lambda u, c, h: ([{**u[0], "replicas": 1}, *u[1:]], c, h, None),
    "certificates": lambda u, c, h: (u, c, h, _cert),
    "a WAF mode": lambda u, c, h: (u, c, h, lambda inv: dataclasses.replace(
        inv, waf_modes={"jiaoyu": "off", "detect": "block"})),
    "a launch": lambda u, c, h: (u, c, h, lambda inv: dataclasses.replace(
        inv, gated=frozenset({"jiaoyu"}))),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(CHANGES)), min_size=2, max_size=5))
def test_every_run_renders_with_the_memo_what_it_renders_without(changes):
    with tempfile.TemporaryDirectory() as tmp:
        root, state = Path(tmp) / "inventory", Path(tmp) / "state"
        units, cluster, host_doc = UNITS, CLUSTER, _hosts()
        for change in changes:
            units, cluster, host_doc, tweak = CHANGES[change](units, cluster, host_doc)
            inv_dir = _county(root, units, cluster, host_doc)
            without = _releases(inv_dir, state, None, tweak)
            with_memo = _releases(inv_dir, state, Memo.of_state(state), tweak)
            assert with_memo == without, f"after {change!r}"


def test_a_second_run_takes_every_manifest_and_unit_from_the_memo(tmp_path):
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    first = _releases(inv_dir, state, None)
    warm = Memo.of_state(state)
    _releases(inv_dir, state, warm)
    assert warm.hits == 0 and warm.misses == 2 * len(UNITS)
    again = Memo.of_state(state)
    assert _releases(inv_dir, state, again) == first
    # every unit's files and every manifest but the one with a date (parsed each time)
    assert again.misses == 1 and again.hits == 2 * len(UNITS) - 1


def test_an_edited_manifest_is_read_again(tmp_path):
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    inventory.load(inv_dir, state, memo=Memo.of_state(state))
    path = inv_dir / "tenants" / "jiaoyu.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("测试单位", "教育局"),
                    encoding="utf-8")
    inv = inventory.load(inv_dir, state, memo=Memo.of_state(state))
    assert inv.tenant("jiaoyu").title == "教育局 jiaoyu"


def test_a_manifest_in_the_memo_is_still_checked_against_the_county(tmp_path):
    """The memo keeps what YAML read, not that it was valid: a manifest that was fine is
    refused when the county around it changes (here: a second unit of the same name is not
    possible, so a file renamed away from its unit's name)."""
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    inventory.load(inv_dir, state, memo=Memo.of_state(state))
    (inv_dir / "tenants" / "jiaoyu.yaml").rename(inv_dir / "tenants" / "jiaoyu2.yaml")
    with pytest.raises(inventory.ManifestError, match="does not match the file name"):
        inventory.load(inv_dir, state, memo=Memo.of_state(state))


def test_line_ends_are_read_as_before(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_bytes(b"a: 1\r\nb: |\r\n  x\r\n  y\r\nc: 'q\rr'\n")
    assert yamlsafe.decode(p.read_bytes()) == p.read_text(encoding="utf-8")
    assert yamlsafe.load_file(p) == yaml.safe_load(p.read_text(encoding="utf-8"))


def test_a_damaged_memo_remembers_nothing_and_the_plan_is_the_same(tmp_path):
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    expected = _releases(inv_dir, state, None)
    _releases(inv_dir, state, Memo.of_state(state))
    db = state / "memo" / "memo.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 100)
    broken = Memo.of_state(state)
    assert _releases(inv_dir, state, broken) == expected
    assert broken.hits == 0


def test_a_memo_with_damaged_values_is_data_never_code_and_is_read_past(tmp_path):
    """What is in the memo is data: a value that is not what it should be (here code, and
    cut short) runs nothing; the manifest is read from its file and the unit rendered
    again, and the plan is the plan without the memo."""
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    expected = _releases(inv_dir, state, None)
    _releases(inv_dir, state, Memo.of_state(state))
    db = sqlite3.connect(state / "memo" / "memo.db")
    db.execute("UPDATE memo SET value = ? WHERE kind = 'manifest'",
               (b'__import__("os").system("touch /tmp/x")',))
    db.execute("UPDATE memo SET value = substr(value, 1, length(value) - 7) "
               "WHERE kind = 'unit-files'")
    db.commit()
    db.close()
    assert _releases(inv_dir, state, Memo.of_state(state)) == expected


def test_the_memo_is_used_only_in_a_state_directory_of_this_account(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    assert Memo.of_state(state).db is not None
    os.chown(state, 65534, 65534)
    other = Memo.of_state(state)
    assert other.db is None and other.get(("manifest", b"x")) is None
    assert Memo.of_state(tmp_path / "missing").db is None


def test_the_county_plans_with_its_memo(tmp_path):
    inv_dir = _county(tmp_path / "inventory", UNITS)
    county = County(inv_dir, tmp_path / "state")
    make_plan(county.inv, frozenset(), {}, {})
    assert (tmp_path / "state" / "memo" / "memo.db").stat().st_mode & 0o777 == 0o600
    again = County(inv_dir, tmp_path / "state")
    make_plan(again.inv, frozenset(), {}, {})
    assert again.inv.memo.hits > 0


def test_what_no_run_uses_any_more_is_dropped(tmp_path):
    many = UNITS + [tenant(f"unit{i}") for i in range(20)]
    inv_dir, state = _county(tmp_path / "inventory", many), tmp_path / "state"
    _releases(inv_dir, state, Memo.of_state(state))
    db = sqlite3.connect(state / "memo" / "memo.db")
    before = dict(db.execute("SELECT kind, count(*) FROM memo GROUP BY kind"))
    _county(inv_dir, UNITS[:2] + [{**UNITS[2], "title": "新"}])
    _releases(inv_dir, state, Memo.of_state(state))
    after = dict(db.execute("SELECT kind, count(*) FROM memo GROUP BY kind"))
    db.close()
    assert before == {"manifest": len(many) - 1, "unit-files": len(many)}
    assert after == {"manifest": 3, "unit-files": 3}


def test_the_control_backup_leaves_the_memo_out():
    assert not recovery.state_file_kept("memo/memo.db")
    assert not recovery.state_file_kept("memo/memo.db-wal")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4), max_leaves=20)


@given(st.dictionaries(st.text(max_size=6), _JSON, max_size=6))
def test_a_node_spec_file_is_the_json_value_it_was_made_from(spec):
    text = spec_bytes(spec)
    assert json.loads(text) == spec
    assert text.endswith(b"\n")


def test_the_memo_knows_the_node_programs_layout_it_renders(monkeypatch):
    """The reviewer's case: a release that moves the nodes' log directory changes no file
    of controlplane/ or templates/, only govhost_node/layout.py; the memo's code digest
    covers it, so no vhost from before the move is taken."""
    from controlplane.core import memo as memo_mod
    layout = memo_mod.Path(memo_mod.__file__).resolve().parents[2] / "govhost_node" / "layout.py"
    real = memo_mod.Path.read_bytes

    def moved(self):
        data = real(self)
        return data + b"\n# moved\n" if self == layout else data

    before = memo_mod._code_digest()
    monkeypatch.setattr(memo_mod.Path, "read_bytes", moved)
    assert memo_mod._code_digest() != before


def test_a_manifest_a_tenant_makes_unreadable_is_refused_not_a_crash(tmp_path):
    """A number of thousands of digits stopped every load with a bare ValueError (before
    the memo too); it is a manifest problem naming the file."""
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    (inv_dir / "tenants" / "jiaoyu.yaml").write_text(
        "name: jiaoyu\nquota_mb: " + "9" * 5000 + "\n", encoding="utf-8")
    for memo in (None, Memo.of_state(state)):
        with pytest.raises(inventory.ManifestError, match="jiaoyu.yaml.*too long"):
            inventory.load(inv_dir, state, memo=memo)


def test_a_long_running_process_reads_its_own_results_again(tmp_path):
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    inventory.load(inv_dir, state)
    memo = Memo.of_state(state)
    inv = inventory.load(inv_dir, state, memo=memo)
    for _ in range(3):
        render_cluster(inv, compute_placement(inv, frozenset(), {}))
    assert memo.misses == 2 * len(UNITS) and memo.hits == 2 * len(UNITS)


def test_a_memo_directory_left_open_to_others_is_closed_again(tmp_path):
    inv_dir, state = _county(tmp_path / "inventory", UNITS), tmp_path / "state"
    _releases(inv_dir, state, Memo.of_state(state))
    (state / "memo").chmod(0o777)
    (state / "memo" / "memo.db").chmod(0o666)
    _releases(inv_dir, state, Memo.of_state(state))
    assert (state / "memo").stat().st_mode & 0o777 == 0o700
    assert (state / "memo" / "memo.db").stat().st_mode & 0o777 == 0o600
