"""Which WAF mode a unit's site gets (pure): blocking from its first public day, detecting
only before the launch of a site that takes input, and stated exceptions that end."""
from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controlplane.compliance import launch
from controlplane.core.manifest import Tenant, WafSettings
from controlplane.sites import waf
from tests.helpers import tenant

TODAY = datetime.date(2026, 12, 4)
PHP = {"type": "php"}
PROXY = {"type": "proxy", "upstreams": ["http://10.1.2.3:8080"]}


def _t(name: str = "renshe", **extra) -> Tenant:
    return Tenant.model_validate(tenant(name, **extra))


@pytest.mark.parametrize("site,launch_,launched,want", [
    ({"type": "static"}, "pending", False, "block"),   # takes no input: blocks from the start
    ({"type": "static"}, "live", True, "block"),
    (PHP, "pending", False, "detect"),                  # learning before the public arrives
    (PHP, "pending", True, "block"),                    # from the launch on
    (PHP, "live", True, "block"),                       # never gated: public from day one
    (PROXY, "pending", False, "detect"),
    (PROXY, "live", True, "block"),
])
def test_auto_detects_only_before_the_launch_of_a_site_that_takes_input(site, launch_,
                                                                         launched, want):
    t = _t(site=site, launch=launch_)
    assert waf.mode_now(t, launched, TODAY) == want
    gated = set() if launched else {t.name}
    assert waf.modes([t], gated, TODAY) == {t.name: want}


def test_a_stated_detect_ends_on_its_date_and_off_and_block_stay():
    t = _t(site=PHP, waf={"mode": "detect", "reason": "考试报名表单的富文本", "until":
                          datetime.date(2026, 12, 18)})
    assert waf.mode_now(t, True, datetime.date(2026, 12, 17)) == "detect"
    assert waf.mode_now(t, True, datetime.date(2026, 12, 18)) == "block"
    assert waf.mode_now(_t(waf=False), True, TODAY) == "off"
    assert waf.mode_now(_t(site=PHP, launch="pending", waf="block"), False, TODAY) == "block"


@given(st.sampled_from(["static", "php"]), st.sampled_from(["pending", "live"]),
       st.booleans(), st.sampled_from(["auto", "block", "off"]))
def test_only_off_or_a_site_waiting_for_launch_does_not_block(kind, launch_, launched, mode):
    t = _t(site={"type": kind}, launch=launch_, waf=mode if mode != "off" else False)
    got = waf.mode_now(t, launched, TODAY)
    waiting = mode == "auto" and kind != "static" and not launched
    assert (got != "block") == (mode == "off" or waiting)
    # whatever the state, a launched unit of a blocking manifest blocks
    assert waf.after_launch(t, TODAY) == ("off" if mode == "off" else "block")


def test_not_blocking_says_why_and_until_when():
    units = [_t("a", waf=False), _t("b", site=PHP, launch="pending"),
             _t("c", site=PHP, waf={"mode": "detect", "reason": "旧系统迁移",
                                    "until": datetime.date(2026, 12, 5)}),
             _t("d", site=PHP)]
    modes = waf.modes(units, {"b"}, TODAY)
    got = {n.unit: n.to_json(TODAY) for n in waf.not_blocking(units, modes)}
    assert set(got) == {"a", "b", "c"}
    assert got["a"]["why"] == "off" and "waf: off" in got["a"]["text"]
    assert got["b"]["why"] == "before-launch"
    assert got["c"] == {"unit": "c", "mode": "detect", "why": "stated", "reason": "旧系统迁移",
                        "until": "2026-12-05",
                        "text": "WAF detecting only until 2026-12-05 (1 day left): 旧系统迁移"}


# -- the manifest ------------------------------------------------------------------------

@pytest.mark.parametrize("value,needle", [
    ("detect", "needs a reason and an end date"),
    ({"mode": "detect"}, "needs `reason`"),
    ({"mode": "detect", "reason": "x"}, "needs `reason`"),
    ({"mode": "detect", "until": "2027-01-01"}, "needs `reason`"),
    ({"mode": "block", "reason": "x"}, "belong to `mode: detect` only"),
    ({"mode": "detect", "reason": "a\u2028waf: off", "until": "2027-01-01"}, "control"),
    ({"mode": "detect", "reason": "x", "until": "next week"}, "until"),
])
def test_a_detect_without_reason_and_end_date_is_refused(value, needle):
    with pytest.raises(ValidationError) as exc:
        _t(waf=value)
    assert needle in str(exc.value)


def test_the_old_detect_days_setting_gets_a_clear_answer():
    with pytest.raises(ValidationError) as exc:
        WafSettings.model_validate({"detect_days": 7})
    assert "`detect_days` is gone" in str(exc.value)


# -- launch ------------------------------------------------------------------------------

def test_launch_refuses_a_site_whose_waf_would_not_block():
    off = launch._waf_check(_t(site=PHP, waf=False), "off")
    assert not off.ok and "waf replay" in off.fix
    stated = _t(site=PHP, waf={"mode": "detect", "reason": "旧系统迁移", "until": "2027-01-01"})
    ok = launch._waf_check(stated, waf.after_launch(stated, TODAY))
    assert ok.ok and "until 2027-01-01: 旧系统迁移" in ok.detail
    assert launch._waf_check(_t(site=PHP), waf.after_launch(_t(site=PHP), TODAY)).ok


# -- the render --------------------------------------------------------------------------

def test_assets_skip_the_waf_where_nginx_only_sends_files_and_nothing_else_does(tmp_path):
    from controlplane.core import inventory
    from controlplane.sites.plan import make_plan
    from tests.helpers import write_inventory
    docs = [tenant("jingtai"), tenant("renshe", site=PHP), tenant("app", site=PROXY),
            tenant("guan", site=PHP, waf=False)]
    inv = inventory.load(write_inventory(tmp_path / "inv", docs))
    releases = make_plan(inv, frozenset(), {}, {}).releases.values()
    # each unit's vhost where it is served (a replica), not where it is only passed on
    vhost = {name: next(r.files[f"vhosts/{name}.conf"].decode() for r in releases
                        if "Tenant " + name + ": replica" in
                        r.files[f"vhosts/{name}.conf"].decode())
             for name in ("jingtai", "renshe", "app", "guan")}
    asset = f"location ~* {waf.ASSET_LOCATION} {{"       # the template and skips_waf agree
    for name in ("jingtai", "renshe"):
        v = vhost[name]
        assert f"include waf/{name}.conf;" in v
        block = v[v.index(asset):]
        assert block[:block.index("}")].count("modsecurity off;") == 1
        # PHP (path info too) is matched before the assets, and /files/ never reaches them
        if name == "renshe":
            assert v.index("\\.php(/|$)") < v.index(asset) and "location ^~ /files/" in v
    assert asset not in vhost["app"]          # a unit's own application reads every request
    assert asset not in vhost["guan"] and "modsecurity" not in vhost["guan"]


def test_the_machinery_of_the_crs_cannot_be_excluded_and_exceptions_are_short():
    for rule in (949110, 901001, 959100, 980130):
        with pytest.raises(ValidationError, match="how it refuses"):
            _t(waf={"mode": "block", "exclude_rules": [942100, rule]})
    assert _t(waf={"mode": "block", "exclude_rules": [942100, 920350]})
    far = datetime.date.today() + datetime.timedelta(days=91)
    with pytest.raises(ValidationError, match="more than 90 days"):
        _t(waf={"mode": "detect", "reason": "旧系统迁移", "until": far})


@pytest.mark.parametrize("site,path,skips", [
    ("static", "/img/logo.PNG", True), ("static", "/index.html", False),
    ("php", "/style.css", True), ("php", "/x.php/y.png", False),
    ("php", "/files/a.png", False), ("php", "/a.php", False),
    ("proxy", "/app.js", False),
])
def test_which_requests_a_node_serves_without_the_waf(site, path, skips):
    assert waf.skips_waf(site, path) is skips
