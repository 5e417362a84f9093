"""The pure side of HTTPS: which certificates a county needs (wildcard, SAN groups within the
CA's limits, stable across changes), renewal timing with jitter and backoff, certificate
checks for imports, and the nginx TLS config (checked by the real `nginx -t`). Real Pebble,
BIND and nginx serving HTTPS run in tests/integration/test_tls_lab.py."""
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.core.errors import ManifestError
from controlplane.core.manifest import TlsSettings
from controlplane.sites.apply import pack, private
from controlplane.sites.plan import make_plan
from controlplane.tls import certs as tls_certs
from controlplane.tls import plan as tls_plan
from tests.helpers import CLUSTER, nginx_test, tenant, write_inventory

ACME = {"directory": "https://127.0.2.1:14000/dir", "contact": "web@qingshui.gov.cn"}
DNS = {"server": "127.0.0.1", "port": 1053, "zone": "qingshui.gov.cn",
       "tsig_key_name": "govhost-acme", "tsig_secret_file": "/etc/govhost/tsig.secret"}


def _units(n: int, aliases: int = 0) -> list[tls_plan.Unit]:
    return [tls_plan.Unit(f"u{i:03d}", "acme", (f"u{i:03d}.qingshui.gov.cn",
                                               *(f"a{j}.u{i:03d}.example.cn"
                                                 for j in range(aliases))))
            for i in range(n)]


def _tls(**acme) -> TlsSettings:
    return TlsSettings(issuer="acme", acme={**ACME, **acme})


def test_dns01_gives_one_wildcard_for_every_unit_under_the_county_domain():
    units = [tls_plan.Unit("_portal", "acme", ("www.qingshui.gov.cn", "qingshui.gov.cn")),
             *_units(300),
             tls_plan.Unit("wenlv", "acme", ("wenlv.qingshui.gov.cn", "xn--6qq986b3xl.qingshui.gov.cn")),
             tls_plan.Unit("deep", "acme", ("deep.qingshui.gov.cn", "www.deep.qingshui.gov.cn"))]
    plan = tls_plan.plan(units, _tls(challenge="dns-01", dns=DNS), "qingshui.gov.cn")
    assert plan["acme-wildcard"].names == ("qingshui.gov.cn", "*.qingshui.gov.cn")
    assert len(plan["acme-wildcard"].units) == 302
    # A name two labels down is not covered by the wildcard: it gets a SAN certificate.
    assert [lin.units for lid, lin in plan.items() if lid != "acme-wildcard"] == [("deep",)]
    acme = _tls(challenge="dns-01", dns=DNS).acme
    assert tls_plan.challenge_for("*.qingshui.gov.cn", acme) == "dns-01"
    assert tls_plan.challenge_for("www.other.cn", acme) == "http-01"


def test_dns01_wildcard_covers_every_units_preview_host_too():
    """`*.qingshui.gov.cn` does not cover `jiaoyu.preview.qingshui.gov.cn`: the county's
    wildcard takes `*.preview.qingshui.gov.cn` as well, so previews add no order."""
    units = [*_units(3), *(tls_plan.Unit(f"_preview-u{i:03d}", "acme",
                                         (f"u{i:03d}.preview.qingshui.gov.cn",))
                           for i in range(3))]
    plan = tls_plan.plan(units, _tls(challenge="dns-01", dns=DNS), "qingshui.gov.cn",
                         wildcard_below=("preview.qingshui.gov.cn",))
    assert list(plan) == ["acme-wildcard"]
    assert plan["acme-wildcard"].names == ("qingshui.gov.cn", "*.qingshui.gov.cn",
                                           "*.preview.qingshui.gov.cn")
    assert len(plan["acme-wildcard"].units) == 6


def test_http01_packs_300_units_into_few_san_certificates_within_the_name_limit():
    units = _units(300, aliases=1)          # 600 names
    plan = tls_plan.plan(units, _tls(), "qingshui.gov.cn")
    assert len(plan) == 6                   # 100 names each: 6 orders, not 300
    assert all(len(lin.names) <= 100 for lin in plan.values())
    assert sorted(u for lin in plan.values() for u in lin.units) == [u.key for u in units]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), aliases=st.integers(0, 3), limit=st.integers(1, 100),
       removed=st.sets(st.integers(0, 119)), added=st.integers(0, 30), data=st.data())
def test_packing_covers_every_unit_once_and_keeps_units_where_they_were(
        n, aliases, limit, removed, added, data):
    units = _units(n, aliases)
    tls = _tls(names_per_certificate=limit)
    first = tls_plan.plan(units, tls, "qingshui.gov.cn")
    previous = {u: lid for lid, lin in first.items() for u in lin.units}
    kept = [u for i, u in enumerate(units) if i not in removed]
    more = [tls_plan.Unit(f"v{i:03d}", "acme", (f"v{i:03d}.qingshui.gov.cn",)) for i in range(added)]
    isolate = data.draw(st.sets(st.sampled_from([u.key for u in kept]) if kept else st.nothing()))
    second = tls_plan.plan(kept + more, tls, "qingshui.gov.cn", previous, isolate)
    where = {u: lid for lid, lin in second.items() for u in lin.units}
    # every unit in exactly one lineage, whose names cover all of the unit's names
    assert sorted(where) == sorted(u.key for u in kept + more)
    assert sum(len(lin.units) for lin in second.values()) == len(kept + more)
    for u in kept + more:
        assert all(tls_plan.covers(second[where[u.key]].names, name) for name in u.names)
    # no certificate over the CA's limit, unless one unit alone needs more names
    for lin in second.values():
        assert len(lin.names) <= limit or len(lin.units) == 1
    # a unit that stays keeps its certificate (nobody is re-ordered because others changed)
    for u in kept:
        if u.key not in isolate:
            assert where[u.key] == previous[u.key]
        else:
            assert where[u.key] == f"acme-u-{u.key}"


def test_issuers_per_unit_and_the_certificate_that_serves_a_unit():
    units = [tls_plan.Unit("a", "internal", ("a.qingshui.gov.cn",)),
             tls_plan.Unit("b", "manual", ("b.qingshui.gov.cn",)),
             tls_plan.Unit("c", "none", ("c.qingshui.gov.cn",))]
    plan = tls_plan.plan(units, TlsSettings(issuer="internal"), "qingshui.gov.cn")
    assert set(plan) == {"internal-a", "manual-b"}
    certs = {"w": ("*.qingshui.gov.cn",), "x": ("a.qingshui.gov.cn",)}
    assert tls_plan.certificate_for(["a.qingshui.gov.cn"], certs, "x") == "x"
    assert tls_plan.certificate_for(["a.qingshui.gov.cn"], certs, "gone") == "w"
    assert tls_plan.certificate_for(["a.b.qingshui.gov.cn"], certs) is None


NAMES = ("a.qingshui.gov.cn", "b.qingshui.gov.cn", "*.qingshui.gov.cn", "a.b.qingshui.gov.cn")


@settings(max_examples=200, deadline=None)
@given(unit=st.lists(st.sampled_from(NAMES[:2] + NAMES[3:]), min_size=1, max_size=3),
       certs=st.dictionaries(st.sampled_from("pqrstuvw"),
                             st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)),
       preferred=st.sampled_from("pqrstuvwz") | st.none())
def test_the_certificate_for_a_unit_is_its_planned_one_else_the_first_that_covers(
        unit, certs, preferred):
    """The definition as it stood (the planned id first, then every id in order), against
    the planned one looked at alone first and the rest sorted only when it does not do."""
    order = ([preferred] if preferred in certs else []) + sorted(c for c in certs
                                                                  if c != preferred)
    want = next((c for c in order if all(tls_plan.covers(certs[c], n) for n in unit)), None)
    assert tls_plan.certificate_for(unit, certs, preferred) == want


def test_renewal_at_two_thirds_with_per_certificate_jitter_and_backoff():
    day = 86400.0
    facts = tls_plan.CertFacts(("a.qingshui.gov.cn",), 0.0, 90 * day)
    lin = tls_plan.Lineage("acme-001", "acme", ("a.qingshui.gov.cn",), ("a",))
    due = [tls_plan.due_at(f"acme-{i:03d}", facts, 2 / 3, 0.05) for i in range(300)]
    assert all(60 * day - 4.5 * day <= d <= 60 * day for d in due)
    assert len({round(d / 60) for d in due}) > 250          # spread, not the same minute
    d1 = tls_plan.due_at("acme-001", facts, 2 / 3, 0.05)
    assert tls_plan.renewal_reason(lin, facts, d1 - 1, 2 / 3, 0.05) is None
    assert tls_plan.renewal_reason(lin, facts, d1, 2 / 3, 0.05) == "due"
    assert tls_plan.renewal_reason(lin, None, 0, 2 / 3, 0.05) == "missing"
    assert tls_plan.renewal_reason(lin, facts, 91 * day, 2 / 3, 0.05) == "expired"
    moved = tls_plan.Lineage("acme-001", "acme", ("a.qingshui.gov.cn", "b.qingshui.gov.cn"), ("a",))
    assert tls_plan.renewal_reason(moved, facts, day, 2 / 3, 0.05) == "names changed"
    assert tls_plan.renewal_reason(lin, facts, day, 2 / 3, 0.05, ari_start=2 * day) is None
    assert [tls_plan.backoff_seconds(n, 600, 86400) for n in range(0, 10)] == \
        [0, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800, 86400]
    go, later = tls_plan.within_budget([("b", "due"), ("a", "expired"), ("c", "missing")], 48, 50)
    assert go == ["a", "c"] and later == ["b"]


def _ca_and_leaf(names, now=None, key=None):
    now = now or time.time()
    root, root_key = tls_certs.make_root("Test Commercial CA", now)
    key = key or tls_certs.new_key()
    return root, key, tls_certs.sign_leaf(root, root_key, key, names, now, 90)


def test_import_check_refuses_wrong_key_missing_names_and_incomplete_chain(tmp_path):
    names = ["jiaoyu.qingshui.gov.cn", "jyj.qingshui.gov.cn"]
    root, key, leaf = _ca_and_leaf(names)
    roots = [tls_certs.split_pem(root)[0]]
    facts = tls_certs.check(leaf, key, names, roots)
    assert set(facts.names) == set(names)
    with pytest.raises(tls_certs.CertProblem, match="private key does not belong"):
        tls_certs.check(leaf, tls_certs.new_key(), names, roots)
    with pytest.raises(tls_certs.CertProblem, match="does not cover jyj.qingshui.gov.cn"):
        _, k2, only_one = _ca_and_leaf(names[:1])
        tls_certs.check(only_one, k2, names, roots)
    with pytest.raises(tls_certs.CertProblem, match="chain does not verify"):
        tls_certs.check(leaf, key, names, [tls_certs.split_pem(_ca_and_leaf(names)[0])[0]])


def test_manifest_refuses_bad_tls_settings_naming_file_and_field(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu", tls={"issuer": "letsencrypt"})],
                           cluster={**CLUSTER, "tls": {"issuer": "acme", "acme": {
                               **ACME, "directory": "http://ca.example/dir",
                               "challenge": "dns-01"}}})
    with pytest.raises(ManifestError) as exc:
        inventory.load(root)
    text = str(exc.value)
    assert "cluster.yaml" in text and "tls.acme.directory" in text and "https://" in text
    assert "tenants/jiaoyu.yaml" in text and "tls.issuer" in text
    (root / "cluster.yaml").write_text(yaml.safe_dump({**CLUSTER, "tls": {
        "issuer": "acme", "acme": {**ACME, "challenge": "dns-01"}}}))
    with pytest.raises(ManifestError, match="dns-01 needs `dns:`"):
        inventory.load(root)


def test_https_config_keys_0600_redirect_hsts_and_reject_unknown_sni_pass_nginx_t(tmp_path):
    import dataclasses

    from controlplane.tls.store import Deployed
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu", aliases=["jyj.qingshui.gov.cn"]),
                                              tenant("plain", tls={"issuer": "none"})],
                           cluster={**CLUSTER, "tls": {"issuer": "internal"}})
    inv = inventory.load(root)
    r, k, leaf = _ca_and_leaf(["jiaoyu.qingshui.gov.cn", "jyj.qingshui.gov.cn"])
    r2, k2, portal = _ca_and_leaf(["www.qingshui.gov.cn", "qingshui.gov.cn"])
    inv = dataclasses.replace(inv, certificates={
        "internal-jiaoyu": Deployed(("jiaoyu.qingshui.gov.cn", "jyj.qingshui.gov.cn"),
                                    leaf + r, k, False, 0),
        "internal-_portal": Deployed(("www.qingshui.gov.cn",), portal + r2, k2, False, 0)},
        served_with={"jiaoyu": "internal-jiaoyu", "_portal": "internal-_portal"})
    rel = make_plan(inv, frozenset(), {}, {}).releases["n1"]
    vhost = rel.files["vhosts/jiaoyu.conf"].decode()
    assert "listen-tls.conf" in vhost and "ssl_certificate tls/internal-jiaoyu.crt;" in vhost
    assert "return 301 https://$host$request_uri;" in vhost and "hsts.conf" in vhost
    assert "listen-tls.conf" not in rel.files["vhosts/plain.conf"].decode()
    assert "ssl_reject_handshake on;" in rel.files["vhosts/_default.conf"].decode()
    assert b"TLSv1.2 TLSv1.3;" in rel.files["snippets/tls.conf"]
    assert b"max-age=31536000" in rel.files["snippets/hsts.conf"]
    assert rel.files["tls/internal-jiaoyu.key"] == k
    assert private("tls/internal-jiaoyu.key") and not private("tls/internal-jiaoyu.crt")
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(pack(rel)), mode="r:gz") as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["tls/internal-jiaoyu.key"] == 0o600 and modes["tls/internal-jiaoyu.crt"] == 0o644
    res = nginx_test(rel.files, tmp_path / "rel")
    assert res.returncode == 0, res.stderr


def test_console_and_preview_over_https_pass_nginx_t_with_secure_cookies(tmp_path):
    """The console's and the units' preview hosts with the county's certificates: browsers
    go to HTTPS, requests forwarded between nodes stay on port 80, the preview cookie is
    Secure; a unit's preview host whose certificate is not there yet is served on port 80
    only; real `nginx -t`."""
    import dataclasses

    from controlplane.core.units import units
    from controlplane.tls.store import Deployed
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu"), tenant("chahe")],
                           cluster={**CLUSTER, "tls": {"issuer": "internal"}, "console": {}})
    inv = inventory.load(root)
    keys = {u.key: u.names for u in units(inv)}
    assert keys["_console"] == ("console.qingshui.gov.cn",)
    assert keys["_preview-jiaoyu"] == ("jiaoyu.preview.qingshui.gov.cn",)
    certs = {}
    for key in ("_console", "_preview-jiaoyu"):
        r, k, leaf = _ca_and_leaf(list(keys[key]))
        certs[f"internal-{key}"] = Deployed(keys[key], leaf + r, k, False, 0)
    inv = dataclasses.replace(inv, certificates=certs, served_with={
        "_console": "internal-_console", "_preview-jiaoyu": "internal-_preview-jiaoyu"})
    rel = make_plan(inv, frozenset(), {}, {}).releases["n1"]
    preview = rel.files["vhosts/_preview.conf"].decode()
    tls_block = preview[preview.index("listen-tls.conf"):]
    assert "ssl_certificate tls/internal-_preview-jiaoyu.crt;" in tls_block
    assert "server_name jiaoyu.preview.qingshui.gov.cn;" in tls_block
    assert "chahe.preview" not in tls_block                   # no certificate for it yet
    assert "if ($govhost_to_https)" in preview and "SameSite=Lax; Secure" in tls_block
    plain = preview[:preview.index("server_name jiaoyu.preview")]
    assert "server_name chahe.preview.qingshui.gov.cn;" in plain
    assert "; Secure" not in plain
    console = rel.files["vhosts/_console.conf"].decode()
    assert "ssl_certificate tls/internal-_console.crt;" in console
    res = nginx_test(rel.files, tmp_path / "rel")
    assert res.returncode == 0 and "[warn]" not in res.stderr, res.stderr


def test_ipv6_listeners_and_aaaa_records_from_hosts_address6(tmp_path):
    """A node with `address6` listens there on 80 and 443 (checked by the real `nginx -t`, which binds, so ::1 here), and the
    DNS plan gives every name an AAAA record for it."""
    import dataclasses

    from controlplane.compliance import rules as compliance
    from controlplane.dns import plan as dns_plan
    from controlplane.tls.store import Deployed
    from tests.helpers import hosts
    doc = hosts(3)
    doc["nodes"][0]["address6"] = "::1"
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu")], host_doc=doc,
                           cluster={**CLUSTER, "tls": {"issuer": "internal"}})
    inv = inventory.load(root)
    r, k, leaf = _ca_and_leaf(["jiaoyu.qingshui.gov.cn"])
    inv = dataclasses.replace(inv, certificates={"internal-jiaoyu": Deployed(
        ("jiaoyu.qingshui.gov.cn",), leaf + r, k, False, 0)},
        served_with={"jiaoyu": "internal-jiaoyu"})
    rel = make_plan(inv, frozenset(), {}, {}).releases["n1"]
    assert rel.files["snippets/listen.conf"] == b"listen 10.77.0.11:80;\nlisten [::1]:80;\n"
    assert b"listen [::1]:443 ssl http2;" in rel.files["snippets/listen-tls.conf"]
    assert "listen [::1]:443 ssl default_server;" in rel.files["vhosts/_default.conf"].decode()
    res = nginx_test(rel.files, tmp_path / "rel")
    assert res.returncode == 0, res.stderr
    plan = dns_plan.records(inv)
    assert {(r.type, r.value) for r in plan if r.name == "jiaoyu.qingshui.gov.cn"} == \
        {("A", "10.77.0.11"), ("A", "10.77.0.12"), ("A", "10.77.0.13"), ("AAAA", "::1")}
    assert dns_plan.has_aaaa(dns_plan.aaaa_names(plan),
                             ["jiaoyu.qingshui.gov.cn", "www.qingshui.gov.cn"])
    assert "jiaoyu                           300 IN AAAA ::1" in dns_plan.zone_lines(inv)
    through = [{"node": "n1", "address6": "::1", "ok": True, "error": ""}]
    assert compliance.https_ipv6(True, through, True).ok
    down = [*through, {"node": "n2", "address6": "fd00::1:2", "ok": False,
                       "error": "ConnectionRefusedError: [Errno 111] Connection refused"}]
    v = compliance.https_ipv6(True, down, True)
    assert not v.ok and v.tally["missing"] == [
        "IPv6 through n2 (fd00::1:2): ConnectionRefusedError: [Errno 111] Connection refused"]
    assert compliance.https_ipv6(True, [], True).tally["missing"] == [
        "an IPv6 address on the web nodes (hosts.yaml `address6`)"]
    assert compliance.https_ipv6(False, through, False).tally["missing"] == [
        "HTTPS with a valid certificate", "AAAA records in the county DNS plan"]
    with pytest.raises(ManifestError, match="is not an IPv6 address"):
        doc["nodes"][1]["address6"] = "127.0.0.2"
        inventory.load(write_inventory(tmp_path / "bad", [tenant("jiaoyu")], host_doc=doc))


def test_a_chain_that_no_longer_verifies_to_the_cas_root_is_issued_again(tmp_path):
    from controlplane.tls import certificates as tls
    names = ["jiaoyu.qingshui.gov.cn"]
    root, key, leaf = _ca_and_leaf(names)
    other, _, _ = _ca_and_leaf(names)
    (tmp_path / "root.pem").write_bytes(root)
    (tmp_path / "other.pem").write_bytes(other)
    lin = tls_plan.Lineage("acme-001", "acme", tuple(names), ("jiaoyu",))
    for path, expected in (("root.pem", False), ("other.pem", True)):
        root_dir = write_inventory(tmp_path / f"inv-{path}", [tenant("jiaoyu")], cluster={
            **CLUSTER, "tls": {"issuer": "acme", "acme": {
                **ACME, "issued_root": str(tmp_path / path)}}})
        inv = inventory.load(root_dir)
        assert tls._untrusted(inv, lin, leaf + root, time.time()) is expected


def test_lineages_signed_at_once_share_one_county_ca(tmp_path):
    """Renewal signs internal lineages in parallel threads; the county CA is made once."""
    from concurrent.futures import ThreadPoolExecutor

    from controlplane.tls import certificates as tls
    inv = write_inventory(tmp_path / "inv", [tenant("jiaoyu")])
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: tls._internal_ca(County(inv), "青水县 CA", time.time()), range(8)))
    assert len(set(got)) == 1
    root = tls_certs.split_pem(got[0][0])[0]
    assert (inv / ".govhost/tls/ca/root.pem").read_bytes() == got[0][0]
    assert tls_certs.info(root).names is not None
    assert not list((inv / ".govhost/tls/ca").glob(".*.tmp"))
