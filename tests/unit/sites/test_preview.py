"""Preview links and the preview host's config: the signature binds unit, release and end
time; each node serves from disk the units it holds and forwards the others; the key is in a
root-only file. nginx's own check of these links runs in tests/integration/test_console_lab.py."""
import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.core import inventory
from controlplane.sites import apply, preview
from controlplane.sites.plan import make_plan

RID = "20261203T101500-a1b2c3"


def test_the_signature_is_nginx_secure_link_md5_of_expiry_unit_release_and_key():
    want = base64.urlsafe_b64encode(hashlib.md5(
        f"1800000000|jiaoyu|{RID}|k3y".encode()).digest()).decode().rstrip("=")
    assert preview.signature("k3y", "jiaoyu", RID, 1800000000) == want


@given(st.sampled_from(["unit", "release", "expires", "key"]))
def test_changing_any_part_breaks_the_signature(part):
    parts = {"link_key": "k3y", "unit": "jiaoyu", "release": RID, "expires": 1800000000}
    other = {**parts, part: {"unit": "chahe", "release": RID[:-1] + "d",
                             "expires": 1800000001, "key": "k4y"}[part]}
    other["link_key"] = other.pop("key", other["link_key"])
    assert preview.signature(**parts) != preview.signature(**other)


def test_a_link_ends_after_its_minutes_and_refuses_what_is_not_a_unit_or_release():
    link = preview.link("jiaoyu.preview.qingshui.gov.cn", True, "k", "jiaoyu", RID, 1000.4, 60)
    assert link["expires"] == 1000 + 3600
    assert str(link["url"]).startswith(
        f"https://jiaoyu.preview.qingshui.gov.cn/_govhost/preview?r={RID}&e=4600&s=")
    for unit, release in (("jiaoyu;", RID), ("jiaoyu", "../../etc"), ("Jiaoyu", RID),
                          ("jiaoyu", RID + "\r\nSet-Cookie: x=1")):
        with pytest.raises(ValueError):
            preview.link("preview.qingshui.gov.cn", True, "k", unit, release, 0, 60)


def test_each_node_serves_the_units_it_holds_and_forwards_the_rest(inv_dir):
    inv = inventory.load(inv_dir)
    plan = make_plan(inv, frozenset(), {}, {})
    key = preview.key(inv.secret)
    for node, rel in plan.releases.items():
        conf = rel.files["vhosts/_preview.conf"].decode()
        for t in inv.tenants:
            where = ("local" if node in plan.placement[t.name]
                     else f"govhost_t_{t.name.replace('-', '_')}")
            assert f"    {t.name} {where};\n" in conf, (node, t.name)
            # one host per unit, and the unit is the host's, never the request's
            assert f"    {t.name}.preview.qingshui.gov.cn {t.name};\n" in conf, (node, t.name)
        assert key not in conf                      # only in the root-only snippet
        assert key in rel.files["snippets/preview-key.conf"].decode()
        assert apply.private("snippets/preview-key.conf")
        assert "X-Robots-Tag" in conf and "$arg_u" not in conf
        assert " preview.qingshui.gov.cn" not in conf     # no host shared by every unit
        assert "preview-access.log" in conf and "/tenants/" not in conf
