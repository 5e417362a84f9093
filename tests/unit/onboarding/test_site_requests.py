"""Site requests: the form becomes a manifest only through data (nothing typed is read as
YAML), is checked exactly as `govhost validate` checks the inventory, names the form field of
each problem, and queues with a secret only the requester holds."""
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.onboarding import form, queue

GOOD = {"name": "tiyu", "title": "青水县体育局", "kind": "department",
        "contact_name": "赵敏", "contact_email": "office@tiyu.qingshui.gov.cn",
        "contact_phone": "0571-6512-3399", "aliases": "tyj.qingshui.gov.cn",
        "columns": "/tzgg/ 通知公告 notices\n/xwdt/ 新闻 动态 news",
        "site_code": "3301270099", "icp": "浙ICP备00000000号", "psb": "浙公网安备 33012702000000号",
        "review": "unit_county"}


def test_a_good_request_checks_out_and_its_plan_adds_the_unit_on_every_node(inv_dir):
    c = County(inv_dir)
    checked = queue.check(c, form.SiteRequest.from_form(GOOD))
    assert checked.ok, checked.problems
    doc = yaml.safe_load(checked.yaml)
    assert doc["launch"] == "pending" and doc["review"] == {"levels": ["unit", "county"]}
    assert doc["columns"][1] == {"path": "/xwdt/", "title": "新闻 动态", "category": "news"}
    assert checked.plan["tenant"]["action"] == "add"
    assert checked.plan["units_after"] == len(c.inv.tenants) + 1
    assert {n["node"] for n in checked.plan["nodes"]} == {n.name for n in c.inv.hosts.nodes}
    assert not (inv_dir / "tenants" / "tiyu.yaml").exists()       # nothing was written


@pytest.mark.parametrize("change, field, words", [
    ({"name": "jiaoyu"}, "name", "taken"),
    ({"name": "www"}, "name", "reserved"),
    ({"name": "ti yu"}, "name", "second-level"),
    ({"contact_email": "not-an-email"}, "contact_email", "e-mail"),
    ({"kind": "company"}, "kind", "department"),
    ({"aliases": "jyj.qingshui.gov.cn"}, "aliases", "jiaoyu"),
    ({"columns": "/tzgg/ 通知公告"}, "columns", "category"),
    ({"columns": "tzgg 通知公告 notices"}, "columns", "column path"),
    ({"site_code": "12"}, "site_code", "10 letters"),
    ({"review": "anyone"}, "review", "choose"),
])
def test_each_problem_names_the_form_field(inv_dir, change, field, words):
    checked = queue.check(County(inv_dir), form.SiteRequest.from_form({**GOOD, **change}))
    found = checked.by_field()
    assert field in found, found
    assert any(words in m for m in found[field]), found[field]


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_nothing_typed_is_read_as_yaml(text):
    """Any title round-trips as the same string, and no typed text adds a key."""
    doc, problems = form.manifest(form.SiteRequest.from_form({**GOOD, "title": text,
                                                              "contact_name": text}))
    typed = text.replace("\r\n", "\n").strip()[:form.MAX_FIELD]
    refused = {p.field for p in problems}
    assert ("title" in refused) == (form.check_text("title", typed) is not None)
    text_ = form.to_yaml(doc)
    assert text_.split("\n", 1)[0] == ("# Requested through the console's site request "
                                       "form; approved by an operator.")   # no typed text
    back = yaml.safe_load(text_)
    assert set(back) == set(doc)
    if "title" not in refused:
        assert back["title"] == typed       # what is accepted round-trips exactly


def test_requests_queue_with_a_secret_and_are_throttled_per_address(inv_dir):
    c = County(inv_dir)
    bad = queue.submit(c, form.SiteRequest.from_form({**GOOD, "name": "jiaoyu"}), "127.0.9.1")
    assert not bad["ok"] and "name" in bad["problems"]
    done = queue.submit(c, form.SiteRequest.from_form(GOOD), "127.0.9.1")
    assert done["ok"] and queue.for_requester(c, done["id"], done["secret"])["status"] == \
        "pending"
    assert queue.for_requester(c, done["id"], done["secret"] + "x") is None
    assert [r["name"] for r in queue.listing(c)] == ["tiyu"]
    assert "token" not in queue.listing(c)[0]
    shown = queue.show(c, done["id"])
    assert shown["problems"] == {} and shown["plan"]["tenant"]["action"] == "add"
    with pytest.raises(queue.RequestError, match="comment"):
        queue.send_back(c, done["id"], "zhaoliu", "  ")
    queue.send_back(c, done["id"], "zhaoliu", "请补充网站标识码")
    back = queue.for_requester(c, done["id"], done["secret"])
    assert back["status"] == "returned" and back["comment"] == "请补充网站标识码"
    with pytest.raises(queue.RequestError, match="not waiting"):
        queue.approve(c, done["id"], "zhaoliu", queue.show(c, done["id"])["manifest_sha256"])
    for i in range(4):          # five queued from one address in the hour
        queue.submit(c, form.SiteRequest.from_form({**GOOD, "name": f"tiyu{i}"}), "127.0.9.1")
    with pytest.raises(queue.RequestError, match="in an hour"):
        queue.submit(c, form.SiteRequest.from_form({**GOOD, "name": "tiyu9"}), "127.0.9.1")
    assert queue.submit(c, form.SiteRequest.from_form({**GOOD, "name": "tiyu9"}),
                        "127.0.9.2")["ok"]
    inventory.load(inv_dir)        # the county's own inventory is as it was
    assert not (inv_dir / "tenants" / "tiyu.yaml").exists()


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\n", "\r", "\u200b", "\u202e",
                                 "\x00"])
def test_a_line_separator_in_a_one_line_field_is_refused_by_name(sep):
    """The site-request attack: a contact name carrying its own manifest keys."""
    name = f"王芳{sep}waf: off{sep}site: {{type: proxy, upstreams: ['http://127.0.0.1:9100']}}"
    doc, problems = form.manifest(form.SiteRequest({**GOOD, "contact_name": name}))
    found = {p.field: p.message for p in problems}
    assert "contact_name" in found and f"U+{ord(sep):04X}" in found["contact_name"]
    back = yaml.safe_load(form.to_yaml(doc))
    assert "waf" not in back and "site" not in back


def test_columns_and_aliases_take_one_item_per_line_and_nothing_else():
    assert form.check_text("columns", "/xwdt/ 新闻动态 news\n/zcwj/ 政策 policy", True) is None
    assert "U+2028" in form.check_text("columns", "/a/ b news\u2028/c/ d news", True)
    assert "U+000A" in form.check_text("title", "a\nb")
    assert form.check_text("comment", "第一行\r\n第二行", True) is None      # a textarea


def test_the_operator_approves_the_exact_text_shown(inv_dir):
    c = County(inv_dir)
    done = queue.submit(c, form.SiteRequest.from_form({**GOOD, "name": "shown1"}), "127.0.9.5")
    shown = queue.show(c, done["id"])
    assert shown["manifest_sha256"] == queue.text_digest(shown["manifest"])
    with pytest.raises(queue.RequestError, match="not the text you were shown"):
        queue.approve(c, done["id"], "zhaoliu", queue.text_digest(shown["manifest"] + " "))
    assert not (inv_dir / "tenants" / "shown1.yaml").exists()
