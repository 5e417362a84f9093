"""Which stored certificate serves each unit, with the facts of unchanged bundles kept
between looks (in the process and in the county's memo): the same answer as parsing every
bundle each time, and a changed bundle is always read again."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.core.county import County
from controlplane.core.units import units as site_units
from controlplane.tls import certs as tls_certs
from controlplane.tls import plan as tls_plan
from controlplane.tls import store as tls_store
from tests.helpers import CLUSTER, tenant, write_inventory

NOW = time.time()
CA, CA_KEY = tls_certs.make_root("青水县测试 CA", NOW)
KEY = tls_certs.new_key()
TENANTS = ("jiaoyu", "weijian", "renshe")


def _county(root: Path) -> County:
    inv = write_inventory(root / "inventory", [tenant(t) for t in TENANTS],
                          cluster={**CLUSTER, "tls": {"issuer": "internal"}})
    return County(inv, root / "state")


def _names(county: County) -> dict[str, tuple[str, ...]]:
    return {u.key: u.names for u in site_units(county.inv)}


def _leaf(names, days: int = 90) -> bytes:
    return tls_certs.sign_leaf(CA, CA_KEY, KEY, list(names), NOW, days) + CA


def _issue_all(county: County) -> None:
    for unit, names in _names(county).items():
        county.certs.write(f"internal-{unit}", KEY, _leaf(names))


def _look(county: County):
    with county.state() as state:
        return tls_store.deployable(county.inv, county.certs, state)


def _uncached(county: County):
    """`deployable` as it was before its facts were kept: every bundle listed by a glob,
    read and parsed on every call."""
    inv, store = county.inv, county.certs
    with county.state() as state:
        plan = tls_store.current_plan(inv, state)
    stored = {}
    d = store.certs_dir
    for lineage in ([p.stem for p in sorted(d.glob("*.pem"))] if d.is_dir() else []):
        data = store.bundle_path(lineage).read_bytes()
        at = data.find(b"-----BEGIN CERTIFICATE-----")
        if at < 0:
            continue
        key, chain = data[:at], data[at:]
        try:
            info = tls_certs.info(tls_certs.split_pem(chain)[0])
        except (tls_certs.CertProblem, IndexError):
            continue
        stored[lineage] = tls_store.Deployed(info.names, chain, key, info.ocsp_url is not None,
                                             info.not_after)
    planned_for = {u: lid for lid, lin in plan.items() for u in lin.units}
    names = {k: v.names for k, v in stored.items()}
    chosen = {}
    for u in site_units(inv):
        if u.issuer == "none":
            continue
        cid = tls_plan.certificate_for(u.names, names, planned_for.get(u.key))
        if cid is not None:
            chosen[u.key] = cid
    used = set(chosen.values())
    return {k: v for k, v in stored.items() if k in used}, chosen


def _new_process(county: County) -> County:
    """The county as the next `govhost` run finds it: nothing parsed in this process, the
    memo read from its file."""
    tls_store._parsed.clear()
    return County(county.root, county.state_dir)


@pytest.fixture
def parses(monkeypatch):
    """How many certificates were parsed (each parse reads one leaf's facts)."""
    tls_store._parsed.clear()
    count = [0]
    real = tls_certs.info

    def counting(cert):
        count[0] += 1
        return real(cert)

    monkeypatch.setattr(tls_certs, "info", counting)

    def taken() -> int:
        n, count[0] = count[0], 0
        return n
    return taken


def test_a_second_look_parses_nothing_and_what_changed_is_read_again(tmp_path, parses):
    county = _county(tmp_path)
    _issue_all(county)
    bundles = len(county.certs.lineages())
    first = _look(county)
    assert parses() == bundles and len(first[1]) == bundles
    assert _look(county) == first and parses() == 0
    assert tls_store.facts(county.certs, "internal-jiaoyu")[0].names == (
        "jiaoyu.qingshui.gov.cn",) and parses() == 0

    # renewed: a new certificate by the store's own write
    county.certs.write("internal-jiaoyu", KEY, _leaf(["jiaoyu.qingshui.gov.cn"], days=30))
    certs, chosen = _look(county)
    assert parses() == 1
    assert certs["internal-jiaoyu"].not_after == pytest.approx(NOW + 30 * 86400, abs=1)
    assert certs["internal-weijian"] == first[0]["internal-weijian"]

    # removed: the unit is on HTTP again, and nothing else was parsed
    county.certs.bundle_path("internal-weijian").unlink()
    certs, chosen = _look(county)
    assert parses() == 0
    assert "internal-weijian" not in certs and "weijian" not in chosen
    assert (certs, chosen) == _uncached(county)


def test_a_bundle_rewritten_in_place_with_its_size_and_dates_is_read_again(tmp_path, parses):
    """The facts are kept by what the bundle holds, not by its file's size and dates: an
    edit in place that keeps both (here with the modification time set back) is new."""
    county = _county(tmp_path)
    _issue_all(county)
    _look(county)
    path = county.certs.bundle_path("internal-renshe")
    before = path.stat()
    old = path.read_bytes()
    names = ["renshe.qingshui.gov.cn"]
    # a certificate for a year instead of 90 days, of the same length (signatures vary in
    # length by a byte or two: sign until one has the old one's)
    new = next(b for b in (KEY.strip() + b"\n" + _leaf(names, days=365).strip() + b"\n"
                           for _ in range(200)) if len(b) == len(old))
    assert new != old
    with open(path, "r+b") as f:
        f.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)
    parses()
    certs, _ = _look(county)
    assert parses() == 1
    assert certs["internal-renshe"].not_after == pytest.approx(NOW + 365 * 86400, abs=1)
    assert certs["internal-renshe"].chain == new[new.find(b"-----BEGIN CERTIFICATE-----"):]


def test_the_next_run_takes_the_facts_from_the_memo(tmp_path, parses):
    county = _county(tmp_path)
    _issue_all(county)
    expected = _look(county)
    bundles = parses()
    assert bundles == len(county.certs.lineages())
    again = _new_process(county)
    assert _look(again) == expected and parses() == 0
    assert again.inv.memo.hits >= bundles
    # one renewed between runs: only it is parsed by the next
    again.certs.write("internal-_portal", KEY, _leaf(_names(again)["_portal"], days=30))
    third = _new_process(again)
    got = _look(third)
    assert parses() == 1 and got == _uncached(third)


def test_a_damaged_memo_is_read_past_and_the_answer_is_the_same(tmp_path, parses):
    county = _county(tmp_path)
    _issue_all(county)
    expected = _look(county)
    bundles = parses()
    db = county.state_dir / "memo" / "memo.db"

    # values cut short, not JSON, of another shape, of the wrong types: parsed again
    # (and put right, so the run after parses nothing)
    conn = sqlite3.connect(db)
    rows = [k for (k,) in conn.execute("SELECT key FROM memo WHERE kind = 'cert-facts'")]
    assert len(rows) == bundles
    bad = [b'{"names": ["jiaoyu.qingshui.gov.cn"], "not_af', b"\x00\xff not json",
           b'{"names": []}', b'{"fingerprint": 1, "issuer": "", "names": "x", '
           b'"not_after": "soon", "not_before": 0, "ocsp_url": null, "serial": ""}']
    for k, value in zip(rows, bad * bundles):
        conn.execute("UPDATE memo SET value = ? WHERE kind = 'cert-facts' AND key = ?",
                     (value, k))
    conn.commit()
    conn.close()
    assert _look(_new_process(county)) == expected and parses() == bundles
    assert _look(_new_process(county)) == expected and parses() == 0

    # the whole file damaged: it remembers nothing
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 100)
    assert _look(_new_process(county)) == expected and parses() == bundles


# -- the same answer as parsing every bundle, whatever the store holds ---------------------

_UNITS = ("_portal", *TENANTS)
_LINEAGES = (*(f"internal-{u}" for u in _UNITS), "acme-001", "internal-jiaoyu.was-0a1b2c")
# what a bundle holds: a certificate for one unit's names, for two units' names, for a name
# no unit has; no certificate at all; something that only starts like one
_NAMES = {"_portal": ("www.qingshui.gov.cn",), **{t: (f"{t}.qingshui.gov.cn",) for t in TENANTS}}
_CHAINS = [*(_leaf(n, days) for n in _NAMES.values() for days in (30, 90)),
           _leaf(_NAMES["jiaoyu"] + _NAMES["renshe"]), _leaf(["other.example.cn"]),
           b"", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                b"-----END CERTIFICATE-----\n"]
_stores = st.dictionaries(st.sampled_from(_LINEAGES), st.integers(0, len(_CHAINS) - 1))


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    return _county(tmp_path_factory.mktemp("generated"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stores=st.lists(_stores, min_size=1, max_size=3))
def test_every_look_gives_what_parsing_every_bundle_gives(county, stores):
    """Whatever a run of changes leaves in the store (bundles written, rewritten, removed,
    broken), each look, in this process or the next, is the look without kept facts."""
    for held in stores:
        for lineage in county.certs.lineages():
            if lineage not in held:
                county.certs.bundle_path(lineage).unlink()
        for lineage, i in held.items():
            county.certs.write(lineage, KEY, _CHAINS[i])
        expected = _uncached(county)
        assert _look(county) == expected
        assert _look(county) == expected
        county = _new_process(county)
        assert _look(county) == expected
