"""Manifests: the example county loads; bad input is refused with file, field and reason."""
from pathlib import Path

import pytest
import yaml

from controlplane.core import inventory, names
from controlplane.core.errors import ManifestError
from tests.helpers import CLUSTER, tenant, write_inventory

# a real public key (its private half was thrown away)
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKGFpSySurMb9oTilH22GAEl5vvmZVRKQwoc+8UFba+7 "
           "unit@test")


def refuse(root: Path) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        inventory.load(root)
    return [str(p) for p in exc.value.problems]


def test_example_county_loads(inv_dir):
    inv = inventory.load(inv_dir)
    assert len(inv.tenants) >= 15
    kinds = {t.kind for t in inv.tenants}
    assert kinds == {"department", "township"}
    with_sections = [t for t in inv.tenants if t.sections]
    assert len(with_sections) >= 2
    assert inv.site_host(inv.tenant("jiaoyu")) == "jiaoyu.qingshui.gov.cn"
    # the Unicode alias is stored as punycode
    assert inv.tenant("wenlv").aliases == [names.canonical_host("旅游.qingshui.gov.cn")]


def test_every_problem_listed_with_file_and_field(tmp_path):
    root = write_inventory(tmp_path / "inv", [
        tenant("good"),
        tenant("Bad", ),
        {**tenant("extra"), "colour": "red"},
        tenant("www"),
        tenant("inj", aliases=["x.gov.cn; return 301 http://evil"]),
        tenant("mail2", contact={"name": "a", "email": "not-an-email", "phone": "1234"}),
    ])
    # file name must match, so write Bad under its own name
    problems = refuse(root)
    text = "\n".join(problems)
    assert "inv/tenants/Bad.yaml: name: 'Bad' must be written in lower case: 'bad'" in text
    assert "inv/tenants/extra.yaml: colour: unknown field" in text
    assert "inv/tenants/www.yaml: name: 'www' is reserved" in text
    assert "inv/tenants/inj.yaml: aliases[0]: 'x.gov.cn; return 301 http://evil' is not a host name" in text
    assert "inv/tenants/mail2.yaml: contact.email: 'not-an-email' is not an e-mail address" in text
    assert not any("good.yaml" in p for p in problems)


@pytest.mark.parametrize("spelling", [
    "JIAOYU.qingshui.gov.cn", "jiaoyu.qingshui.gov.cn.", "Jiaoyu.QingShui.Gov.Cn.",
])
def test_same_name_in_another_spelling_is_refused(tmp_path, spelling):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu"), tenant("other", aliases=[spelling])])
    assert any("other.yaml: aliases[0]: 'jiaoyu.qingshui.gov.cn' is already claimed by"
               in p for p in refuse(root))


def test_unicode_and_punycode_are_one_name(tmp_path):
    puny = names.canonical_host("旅游.qingshui.gov.cn")
    assert puny.startswith("xn--")
    root = write_inventory(tmp_path / "inv", [
        tenant("a", aliases=["旅游.qingshui.gov.cn"]),
        tenant("b", aliases=[puny.upper()]),
    ])
    assert any("b.yaml: aliases[0]" in p and "already claimed" in p for p in refuse(root))


def test_sftp_keys_review_and_quota_are_accepted(tmp_path):
    doc = tenant("t1")
    doc.update({"sftp": {"keys": [ED25519]}, "review": "required", "quota_mb": 200,
                "sections": [{"name": "cun", "title": "村", "sftp": {"keys": [ED25519]}}]})
    root = write_inventory(tmp_path / "inv", [doc])
    inv = inventory.load(root)
    t = inv.tenant("t1")
    assert t.sftp.keys == [ED25519] and t.review.levels == ["unit"]
    assert inv.quota_bytes(t) == 200 * 2**20
    assert inv.quota_bytes(inventory.load(write_inventory(tmp_path / "i2", [tenant("t2")]))
                           .tenant("t2")) == 1024 * 2**20


def test_review_chains_of_one_to_three_levels(tmp_path):
    docs = [tenant("a", review="none"), tenant("b", review="required"),
            tenant("c", review={"levels": ["unit", "county"]}),
            tenant("d", review={"levels": ["unit", "unit", "county"]}), tenant("e")]
    inv = inventory.load(write_inventory(tmp_path / "inv", docs))
    assert {t.name: t.review.levels for t in inv.tenants} == {
        "a": [], "b": ["unit"], "c": ["unit", "county"], "d": ["unit", "unit", "county"],
        "e": []}


def test_account_names_fit_linux_and_stay_unique():
    from controlplane.core.accounts import user_name
    assert user_name("jiaoyu") == "gh-jiaoyu"
    assert user_name("chahe", "hexi") == "gh-chahe.hexi"
    long_a, long_b = user_name("a" * 63), user_name("a" * 62 + "b")
    assert len(long_a) <= 32 and len(long_b) <= 32 and long_a != long_b
    assert len(user_name("x" * 40, "y" * 40)) <= 32


@pytest.mark.parametrize("field,value,expect", [
    ("title", "教育局 } server { listen 80", "contains '}'"),
    ("title", "a\nb", "control characters"),
    ("title", "${HOME}", "contains '$'"),
    ("name", "jiao_yu", "not a DNS label"),
    ("name", "-jiaoyu", "not a DNS label"),
    ("name", "a" * 64, "not a DNS label"),
    ("name", "xn--abc", "punycode"),
    ("replicas", 0, "greater than or equal to 1"),
    ("replicas", "2", "valid integer"),
    ("kind", "company", "'department' or 'township'"),
    ("aliases", ["*.qingshui.gov.cn"], "not a host name"),
    ("aliases", ["a.gov.cn`id`"], "not a host name"),
    ("aliases", ["localhost"], "needs a dot"),
    ("site", {"type": "ftp"}, "not a site type"),
    ("site", {"type": "proxy", "upstreams": ["http://10.0.0.5:8080/x;"]}, "no path"),
    ("site", {"type": "proxy", "upstreams": ["file:///etc/passwd"]}, "http:// or https://"),
    ("site", {"type": "php", "php": {"max_children": 0}}, "greater than or equal to 1"),
    ("site", {"type": "php", "php": {"memory_mb": "128M"}}, "valid integer"),
    ("site", {"type": "php", "database": "yes"}, "valid boolean"),
    ("rate_limit", {"requests_per_second": 0}, "greater than or equal to 1"),
    ("sections", [{"name": "a b", "title": "x"}], "not a DNS label"),
    ("sections", [{"name": "a", "title": "x"}, {"name": "a", "title": "y"}], "listed twice"),
    ("sftp", {"keys": ['command="/bin/sh" ' + ED25519]}, "key options are not allowed"),
    ("sftp", {"keys": [ED25519 + "\nssh-ed25519 AAAA evil"]}, "key options are not allowed"),
    ("sftp", {"keys": ["ssh-ed25519 !!notbase64!!"]}, "not base64"),
    ("sftp", {"keys": ["ssh-rsa " + ED25519.split()[1]]}, "does not match its type"),
    ("sftp", {"keys": [" ".join(ED25519.split()[:2]) + " a;b"]}, "comment may only hold"),
    ("sftp", {"password": "x"}, "sftp.password: unknown field"),
    ("review", "maybe", "use none, required or {levels: [unit, county]}"),
    ("review", {"levels": ["unit", "province"]}, "'unit' or 'county'"),
    ("review", {"levels": ["unit", "unit", "county", "county"]}, "at most 3 items"),
    ("review", {"levels": ["unit"], "by": "x"}, "review.by: unknown field"),
    ("quota_mb", 0, "greater than or equal to 1"),
    ("sections", [{"name": "a", "title": "x", "sftp": {"keys": ["from=x " + ED25519]}}],
     "key options are not allowed"),
    ("messages", {"code": "jy"}, "2 to 6 capital letters"),
    ("messages", {"code": "JY\n"}, "2 to 6 capital letters"),
    ("messages", {"code": "JY", "path": "/hudong"}, "a slash at each end"),
    ("messages", {"code": "JY", "path": "/a/b/"}, "one level"),
    ("messages", {"code": "JY", "path": "/hudong/\n"}, "one level"),
    ("messages", {"code": "JY", "path": "/hu dong/;"}, "one level"),
    ("messages", {"code": "JY", "due": 5}, "messages.due: unknown field"),
    ("messages", {"path": "/hudong/"}, "messages.code: required field is missing"),
    ("contact", {"name": "王芳", "email": "web@t1.qingshui.gov.cn\n", "phone": "0571-1234"},
     "is not an e-mail address"),
    ("contact", {"name": "王芳", "email": "web@t1.qingshui.gov.cn", "phone": "0571-1234\n"},
     "contact.phone"),
])
def test_bad_values_are_refused(tmp_path, field, value, expect):
    doc = tenant("t1")
    doc[field] = value
    if field == "name":
        doc["name"] = value
    root = write_inventory(tmp_path / "inv", [])
    (root / "tenants" / "t1.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    problems = refuse(root)
    assert any(expect in p for p in problems), problems
    assert all(p.startswith("inv/tenants/t1.yaml") for p in problems)


@pytest.mark.parametrize("text,expect", [
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("", "found empty"),
    ("a: &x [1]\nb: *x\n", "anchors"),
    ("name: a\nname: b\n", "duplicate key 'name'"),
    ("name: [unclosed\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['id']\n", "not valid YAML"),
    ("a: 1\n---\nb: 2\n", "exactly one YAML document"),
    ("x: " + "[" * 50 + "]" * 50 + "\n", "nesting"),
    ("".join(" " * i + f"k{i}:\n" for i in range(40)) + " " * 40 + "v: 1\n", "nesting"),
    ("x: " + "[" * 50 + "'*'" + "]" * 50 + "\n", "nesting"),
])
def test_malicious_or_broken_yaml(tmp_path, text, expect):
    root = write_inventory(tmp_path / "inv", [tenant("ok")])
    (root / "tenants" / "evil.yaml").write_text(text)
    problems = refuse(root)
    assert any(p.startswith("inv/tenants/evil.yaml: ") and expect in p for p in problems), problems


def test_billion_laughs_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i-1}"] * 9) + "]")
    root = write_inventory(tmp_path / "inv", [])
    (root / "tenants" / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert any("anchors" in p for p in refuse(root))


def test_huge_file_refused(tmp_path):
    root = write_inventory(tmp_path / "inv", [])
    (root / "tenants" / "huge.yaml").write_text("title: " + "x" * 100_000 + "\n")
    assert any("larger than 64 KiB" in p for p in refuse(root))


def test_file_name_must_match_name(tmp_path):
    root = write_inventory(tmp_path / "inv", [])
    (root / "tenants" / "wrong.yaml").write_text(yaml.safe_dump(tenant("right")))
    assert any("save this manifest as tenants/right.yaml" in p for p in refuse(root))


def test_replicas_beyond_nodes_refused(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("a", replicas=4)], nodes=3)
    assert any("replicas: 4 replicas but only 3 web node(s)" in p for p in refuse(root))


def test_alias_of_portal_refused(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("a", aliases=["www.qingshui.gov.cn"])])
    assert any("already claimed by" in p and "portal" in p for p in refuse(root))


def test_alias_under_the_preview_hosts_refused(tmp_path):
    """`<unit>.preview.<domain>` is another unit's preview origin: no unit may take a name
    there, which would put its live pages in that origin."""
    root = write_inventory(tmp_path / "inv", [
        tenant("jiaoyu"), tenant("a", aliases=["jiaoyu.preview.qingshui.gov.cn"])],
        cluster={**CLUSTER, "console": {}})
    assert any("aliases[0]" in p and "preview hosts" in p for p in refuse(root))


def test_a_message_code_is_one_units_and_a_proxy_site_has_no_box(tmp_path):
    root = write_inventory(tmp_path / "inv", [
        tenant("a", messages={"code": "JY"}), tenant("b", messages={"code": "JY"}),
        tenant("c", messages={"code": "CX"}, site={"type": "proxy",
                                                   "upstreams": ["http://10.0.0.5:8080"]})])
    problems = refuse(root)
    assert any(p.startswith("inv/tenants/b.yaml: messages.code") and "already the message "
               "code of inv/tenants/a.yaml" in p for p in problems), problems
    assert any(p.startswith("inv/tenants/c.yaml: messages") and "static or PHP" in p
               for p in problems), problems
    ok = write_inventory(tmp_path / "ok", [tenant("a", messages={"code": "JY"}),
                                           tenant("b", messages={"code": "JYZ",
                                                                 "path": "/liuyan/"})])
    inv = inventory.load(ok)
    assert [(t.messages.code, t.messages.path) for t in inv.tenants] == [
        ("JY", "/hudong/"), ("JYZ", "/liuyan/")]


@pytest.mark.parametrize("field,value", [
    ("address", "fe80::1%$(touch /tmp/x)"), ("address", "fe80::1%eth0"),
    ("address6", "fe80::1%`id`"), ("address", "10.0.0.1 ; id")])
def test_a_node_address_with_a_scope_or_shell_text_is_refused(tmp_path, field, value):
    """An IPv6 scope may hold any text; node addresses reach ssh and the nodes' commands."""
    from tests.helpers import hosts
    doc = hosts(3)
    doc["nodes"][0][field] = value
    problems = refuse(write_inventory(tmp_path / "inv", [tenant("jiaoyu")], host_doc=doc))
    assert any("hosts.yaml" in p and field in p and "not an IP" in p for p in problems), problems
