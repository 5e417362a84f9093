"""Site requests: the form becomes a manifest only through data (nothing typed is read as
YAML), is checked exactly as `govhost validate` checks the inventory, names the form field of
each problem, and queues with a secret only the requester holds."""
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.core.errors import ManifestError
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
    with pytest.raises(queue.RequestError, match="changed since you looked at it"):
        queue.approve(c, done["id"], "zhaoliu", queue.text_digest(shown["manifest"] + " "))
    assert not (inv_dir / "tenants" / "shown1.yaml").exists()


# What a hostile requester types: anything, with YAML's and Unicode's line breaks, YAML's
# indicators and the invisible characters made likely.
_HOSTILE = st.text(st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list("\n\r\t\x00\x85\u2028\u2029\u200b\u202e\ufeff\ufffe"
                         ":#{}[]'\"-&*!|>%@`, ?"))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(form.FIELDS), _HOSTILE, _HOSTILE)
def test_any_text_the_form_accepts_lands_as_exactly_the_manifest_built(key, text, more):
    """Item 2's property: whatever is typed into any field, if the field's check lets it
    through, the manifest text written to inventory/tenants/ reads back (safe_load) as
    exactly the manifest built from the form: no key more, no value other, and the only
    comment is the fixed header."""
    req = form.SiteRequest.from_form({**GOOD, key: text, "contact_name": f"王{more}芳"})
    doc, problems = form.manifest(req)
    refused = {p.field for p in problems}
    if form.check_text(key, req.get(key), key in form.MULTILINE) is not None:
        assert key in refused
    if refused & {key, "contact_name"}:
        return
    written = form.to_yaml(doc)
    assert yaml.safe_load(written) == doc
    comments = [line for line in written.splitlines() if line.lstrip().startswith("#")]
    assert comments == ["# Requested through the console's site request form; approved by "
                        "an operator."]


@pytest.mark.parametrize("ch", ["\x00", "\x1b", "\x7f", "\x85", "\x9b", "\r", "\u200b",
                                "\u200e", "\u202e", "\u2066", "\ufeff", "\u2028", "\u2029",
                                "\U000e0041", "\ufdd0", "\uffff"])
def test_every_refused_character_is_named_with_the_field(ch):
    why = form.check_text("title", f"青水{ch}县")
    assert why and why.startswith("title: ") and f"U+{ord(ch):04X}" in why


def test_rare_characters_of_names_are_not_refused():
    """A clerk's name may hold a character newer than this Python's Unicode tables (CJK
    Extension H, U+31350..) or one an older GB18030 system put in the private-use area."""
    for name in ("王\U00031350", "李\ue81e明", "𠀀𪚥", "Zoë O'Neil-Müller"):
        assert form.check_text("contact_name", name) is None, name


def test_a_hand_written_manifest_title_refuses_yaml_line_breaks_too(inv_dir):
    """The manifest's own text rule (not only the form's) refuses C1 controls and the line
    and paragraph separators, for text that reaches a manifest another way (written as YAML
    escapes, which keep them: a raw U+0085 inside quotes is folded to a space on reading)."""
    path = inv_dir / "tenants" / "jiaoyu.yaml"
    base = path.read_text()
    assert "\ntitle: " in base
    for escape in ("\\x85", "\\u2028", "\\u2029", "\\x9b"):
        path.write_text(re.sub(r"(?m)^title: .*$", lambda _: f'title: "青水{escape}waf: off"',
                               base))
        with pytest.raises(ManifestError) as exc:
            inventory.load(inv_dir)
        assert [p.field for p in exc.value.problems] == ["title"], exc.value


def test_a_refused_character_is_shown_next_to_its_own_field(inv_dir):
    """The form shows each problem beside the field it is about: the field rule's refusals
    are keyed by the form field (contact_name, icp, …), each said once."""
    bad = {**GOOD, "contact_name": "赵\u2028waf: off", "icp": "浙ICP备\u200b1号",
           "psb": "x\x85y"}
    found = queue.check(County(inv_dir), form.SiteRequest.from_form(bad)).by_field()
    for key, code in (("contact_name", "U+2028"), ("icp", "U+200B"), ("psb", "U+0085")):
        (msg,) = [m for m in found[key] if code in m]
        assert msg.startswith(f"{key}: ") and msg.count(key) == 1, msg
    assert "" not in found, found
