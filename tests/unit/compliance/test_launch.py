"""The launch gate's pure parts: each check's verdict from what was measured, and the
vhost of a pending unit letting in only the county's addresses."""
import dataclasses

import pytest

from controlplane.compliance import launch
from controlplane.core import inventory
from controlplane.core.manifest import Tenant
from controlplane.sites.plan import make_plan
from tests.helpers import tenant, write_inventory

FOOTER = ("主办单位：青水县新建局 电话 0571-6512-3388 网站标识码 3301000088 浙ICP备12345678号-8 "
          "浙公网安备 33010602000088号")
HEADERS = {"strict-transport-security": "max-age=31536000", "x-content-type-options": "nosniff",
           "x-frame-options": "SAMEORIGIN", "referrer-policy": "strict-origin-when-cross-origin"}


def _tenant() -> Tenant:
    return Tenant.model_validate({
        "name": "xinjian", "title": "青水县新建局", "kind": "department", "launch": "pending",
        "contact": {"name": "王芳", "email": "it@xinjian.qingshui.gov.cn",
                    "phone": "0571-6512-3388"},
        "identity": {"site_code": "3301000088", "icp": "浙ICP备12345678号-8",
                     "psb": "浙公网安备 33010602000088号"}})


def _seen(**kw) -> launch.Seen:
    base = launch.Seen(True, [{"node": "n1", "ok": True, "error": ""}], HEADERS,
                       f"<p>2026-11-30 新闻</p><footer>{FOOTER}</footer>", [],
                       ["index.html", "img/a.png"], [], {"release": "r1", "findings": []}, True)
    return dataclasses.replace(base, **kw)


def _failed(seen: launch.Seen) -> dict[str, launch.Check]:
    return {c.check: c for c in launch.judge(_tenant(), seen) if not c.ok}


def test_a_clean_site_passes_every_check():
    checks = launch.judge(_tenant(), _seen())
    assert [c.check for c in checks] == ["https", "headers", "exposed", "footer", "content",
                                         "wording", "waf"]
    assert all(c.ok for c in checks), checks


@pytest.mark.parametrize("kw,failed", [
    ({"served_with_cert": False, "https": []}, "https"),
    ({"https": [{"node": "n2", "ok": False, "error": "certificate: certificate has expired"}]},
     "https"),
    ({"headers": {**HEADERS, "x-content-type-options": "sniff"}}, "headers"),
    ({"headers": {k: v for k, v in HEADERS.items() if k != "x-frame-options"}}, "headers"),
    ({"exposed": [{"path": "/.git/HEAD", "status": 200, "why": "answers 200"}]}, "exposed"),
    ({"listings": ["/files/"]}, "exposed"),
    ({"homepage": "<p>本站正在建设中。</p>" + FOOTER}, "content"),
    ({"homepage": "<p>no marks</p>"}, "footer"),
    ({"wording": {"release": "r1", "findings": [
        {"severity": "block", "word": "坏词", "file": "index.html"}]}}, "wording"),
    ({"waf_after": "off"}, "waf"),
])
def test_each_failure_is_named_with_what_to_do(kw, failed):
    bad = _failed(_seen(**kw))
    assert failed in bad and bad[failed].fix, bad


@pytest.mark.parametrize("path,risky", [
    (".git/HEAD", True), ("a/.env", True), ("db.sql", True), ("index.html.bak", True),
    ("backup-2026.zip", True), ("wwwroot.tar.gz", True), ("phpinfo.php", True),
    ("x/info.php", True), ("index.php~", True), (".well-known/security.txt", False),
    ("zcwj/2026-1.zip", False), ("img/site-logo.png", False), ("news/2026/info.html", False),
])
def test_risky_published_files(path, risky):
    bad = _failed(_seen(live_files=["index.html", path]))
    assert ("exposed" in bad) is risky, bad
    if risky:
        assert f"{path} (in the published files)" in bad["exposed"].detail


def test_hsts_is_not_asked_for_when_the_county_turned_it_off():
    no_hsts = {k: v for k, v in HEADERS.items() if k != "strict-transport-security"}
    assert "headers" in _failed(_seen(headers=no_hsts))
    assert "headers" not in _failed(_seen(headers=no_hsts, hsts_wanted=False))


def test_a_pending_unit_is_served_only_to_the_county_and_left_off_the_portal(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu"), tenant("xinjian")])
    inv = inventory.load(root)
    gated = dataclasses.replace(inv, gated=frozenset({"xinjian"}))
    rel = make_plan(gated, frozenset(), {}, {}).releases["n1"]
    vhost = rel.files["vhosts/xinjian.conf"].decode()
    assert "deny all;" in vhost and "allow 10.77.0.11;" in vhost
    assert "deny all;" not in rel.files["vhosts/jiaoyu.conf"].decode()
    assert "allow all;" in rel.files["snippets/acme-challenge.conf"].decode()
    portal = rel.files["pages/_portal/index.html"].decode()
    assert "xinjian" not in portal and "jiaoyu" in portal
    opened = make_plan(inv, frozenset(), {}, {}).releases["n1"]
    assert "deny all;" not in opened.files["vhosts/xinjian.conf"].decode()
