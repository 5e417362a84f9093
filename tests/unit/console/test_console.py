"""The console over real HTTP requests (Starlette's TestClient): logging in with a
password and a real TOTP code, sessions, CSRF on every form, and the authorization matrix:
every route for every role, checked one by one.

The unit page's live status (probes and SSH through the nodes, `views.unit`) is replaced by
a fixed record here: these tests are about who may see what; the lab test shows the page
with the real status."""
import re
from pathlib import Path

import pyotp
import pytest
from starlette.testclient import TestClient

from controlplane.console import app as console_app
from controlplane.console import i18n
from controlplane.console.routes.auth import safe_next
from controlplane.core.county import County
from controlplane.people.store import People
from tests.helpers import Sink, example_inventory

REPO = Path(__file__).resolve().parents[3]
BASE = "https://console.qingshui.gov.cn"
# Who, unit, roles
PEOPLE = {"editor": ("jiaoyu", ["editor"]), "reviewer": ("jiaoyu", ["reviewer"]),
          "admin": ("jiaoyu", ["admin"]), "other": ("chahe", ["editor"]),
          "operator": (None, ["operator"]), "leaver": ("jiaoyu", ["editor"])}
R_JY, R_CH = "20261201T000000-aaaaaa", "20261201T000000-bbbbbb"   # pending releases
SESSIONS: dict = {}         # who -> cookies of their one login (a TOTP code is taken once)


def fake_unit(county, name):
    return {"unit": name, "title": f"<b>{name}</b>", "host": f"{name}.qingshui.gov.cn",
            "kind": "department", "nodes": [{"node": "n1", "status": 200, "up": True,
                                              "ms": 3.0}],
            "live": "r1", "releases": [], "columns": [], "cert": None, "backups": {},
            "disk_bytes": 0, "quota_bytes": 1 << 30, "quota_used": 0.0, "findings": [],
            "checked_at": None, "requests": 0, "rollbacks": [], "rollback_open": False,
            "visits": [{"day": "2026-12-01", "views": 40, "visitors": 12}],
            "top_pages": [{"path": '/"><script>alert(1)</script>', "views": 3}]}


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    dest = tmp_path_factory.mktemp("console") / "inventory"
    example_inventory(dest)
    sink = Sink()          # a real SMTP server on loopback: enrolment links are mailed
    cluster = (dest / "cluster.yaml").read_text()
    assert "smarthost: 127.0.0.1:2525" in cluster
    (dest / "cluster.yaml").write_text(cluster.replace("smarthost: 127.0.0.1:2525",
                                                       f"smarthost: 127.0.0.1:{sink.port}"))
    c = County(dest)
    c.sink = sink
    people = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    issued = {}
    for name, (unit, roles) in PEOPLE.items():
        issued[name] = people.add(name, name.title(), unit, roles,
                                  frozenset(t.name for t in c.inv.tenants))
        people.change_password(name, issued[name].password, f"{name}-password-12")
    st = people.st
    for unit, rid in (("jiaoyu", R_JY), ("chahe", R_CH)):
        st.add_content_release(unit, rid, "pending", {
            "published_by": "editor", "files": 2, "bytes": 10,
            "added": [["<img src=x onerror=alert(1)>.html", 5]], "changed": [],
            "removed": []}, ["n1", "n2"])
        st.add_review_chain(unit, rid, ["unit", "county"], "editor")
    assert st.add_rollback("jiaoyu", "20261130T000000-cccccc", "editor", ["unit"]) == 1
    assert st.add_site_request("tiyu", "name: tiyu\n", {"name": "tiyu"}, "赵敏", "127.0.9.1",
                               "0" * 64) == 1
    st.close()
    return c, issued


def _token(html: str) -> str:
    return re.search(r'name="csrftoken" value="([^"]+)"', html).group(1)


def login(c: County, issued, who: str) -> TestClient:
    client = TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
    if who in SESSIONS:
        client.cookies.update(SESSIONS[who])
        return client
    page = client.get("/login")
    code = pyotp.TOTP(issued[who].totp_secret).now() if issued[who].totp_secret else ""
    r = client.post("/login", data={"csrftoken": _token(page.text), "name": who,
                                    "password": f"{who}-password-12", "code": code,
                                    "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    SESSIONS[who] = dict(client.cookies)
    return client


MATRIX = {  # route -> expected status per role (303: redirected)
    "/units/jiaoyu": {"editor": 200, "reviewer": 200, "admin": 200, "other": 403,
                      "operator": 200, "anonymous": 303},
    "/units/chahe": {"editor": 403, "reviewer": 403, "admin": 403, "other": 200,
                     "operator": 200, "anonymous": 303},
    "/units/nosuch": {"editor": 403, "reviewer": 403, "admin": 403, "other": 403,
                      "operator": 404, "anonymous": 303},
    "/": {"editor": 303, "reviewer": 303, "admin": 303, "other": 303, "operator": 200,
          "anonymous": 303},
    "/password": {"editor": 200, "reviewer": 200, "admin": 200, "other": 200, "operator": 200,
                  "anonymous": 303},
    "/units/jiaoyu/upload": {"editor": 200, "reviewer": 403, "admin": 403, "other": 403,
                             "operator": 403, "anonymous": 303},
    "/units/chahe/upload": {"editor": 403, "reviewer": 403, "admin": 403, "other": 200,
                            "operator": 403, "anonymous": 303},
    f"/units/jiaoyu/reviews/{R_JY}": {"editor": 200, "reviewer": 200, "admin": 200,
                                      "other": 403, "operator": 200, "anonymous": 303},
    f"/units/chahe/reviews/{R_CH}": {"editor": 403, "reviewer": 403, "admin": 403,
                                     "other": 200, "operator": 200, "anonymous": 303},
    f"/units/jiaoyu/reviews/{R_CH}": {"editor": 404, "reviewer": 404, "admin": 404,
                                      "other": 403, "operator": 404, "anonymous": 303},
    f"/units/jiaoyu/preview/{R_JY}": {"editor": 303, "reviewer": 303, "admin": 303,
                                      "other": 403, "operator": 303, "anonymous": 303},
    f"/units/chahe/preview/{R_CH}": {"editor": 403, "reviewer": 403, "admin": 403,
                                     "other": 303, "operator": 303, "anonymous": 303},
    f"/units/jiaoyu/preview/{R_CH}": {"editor": 404, "reviewer": 404, "admin": 404,
                                      "other": 403, "operator": 404, "anonymous": 303},
    "/request": {"editor": 200, "reviewer": 200, "admin": 200, "other": 200,
                 "operator": 200, "anonymous": 200},
    "/requests": {"editor": 403, "reviewer": 403, "admin": 403, "other": 403,
                  "operator": 200, "anonymous": 303},
    "/requests/1": {"editor": 403, "reviewer": 403, "admin": 403, "other": 403,
                    "operator": 200, "anonymous": 303},
    "/requests/1/status?k=wrong": {"editor": 404, "reviewer": 404, "admin": 404,
                                   "other": 404, "operator": 404, "anonymous": 404},
    "/units/jiaoyu/people": {"editor": 403, "reviewer": 403, "admin": 200, "other": 403,
                             "operator": 403, "anonymous": 303},
    "/units/chahe/people": {"editor": 403, "reviewer": 403, "admin": 403, "other": 403,
                            "operator": 403, "anonymous": 303},
    "/units/jiaoyu/rollbacks/1": {"editor": 200, "reviewer": 200, "admin": 200, "other": 403,
                                  "operator": 200, "anonymous": 303},
    "/units/chahe/rollbacks/1": {"editor": 403, "reviewer": 403, "admin": 403, "other": 404,
                                 "operator": 404, "anonymous": 303},
}


@pytest.mark.parametrize("route", sorted(MATRIX))
@pytest.mark.parametrize("who", sorted([*(set(PEOPLE) - {"leaver"}), "anonymous"]))
def test_authorization_matrix(county, route, who):
    c, issued = county
    client = (TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
              if who == "anonymous" else login(c, issued, who))
    r = client.get(route, follow_redirects=False)
    assert r.status_code == MATRIX[route][who], (who, route, r.status_code)
    if r.status_code == 200:
        assert r.headers["x-frame-options"] == "DENY" and "no-store" in r.headers[
            "cache-control"]
    if who != "anonymous" and route == "/" and who != "operator":
        assert r.headers["location"] == f"/units/{PEOPLE[who][0]}"
    if who != "anonymous" and "/preview/" in route and r.status_code == 303:
        # A GET issues nothing: it leads to the review page, whose button POSTs for a
        # signed link to the preview host, for exactly this unit and release.
        unit, release = route.split("/")[2], route.split("/")[4]
        assert r.headers["location"] == f"/units/{unit}/reviews/{release}"
        page = client.get(r.headers["location"])
        assert f'action="{route}"' in page.text
        r = client.post(route, data={"csrftoken": _token(page.text)}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith(       # the unit's own preview host
            f"http://{unit}.preview.qingshui.gov.cn/_govhost/preview?r={release}&"), \
            r.headers["location"]
        csp = page.headers["content-security-policy"]
        assert f"form-action 'self' https://{unit}.preview.qingshui.gov.cn " in csp
        assert client.post(route, data={"csrftoken": "forged"},
                           follow_redirects=False).status_code == 403


def test_forms_without_the_csrf_token_are_refused_and_logout_ends_every_session(county):
    c, issued = county
    client = login(c, issued, "leaver")
    copy = login(c, issued, "leaver")           # the same session cookie, elsewhere
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.post("/password", data={"old": "x", "new": "y" * 12, "again": "y" * 12},
                       follow_redirects=False).status_code == 403
    fresh = TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
    fresh.get("/login")
    assert fresh.post("/login", data={"name": "leaver", "password": "leaver-password-12",
                                      "csrftoken": "forged"}).status_code == 403
    page = client.get("/password")
    out = client.post("/logout", data={"csrftoken": _token(page.text)},
                      follow_redirects=False)
    assert out.status_code == 303 and client.get("/units/jiaoyu",
                                                 follow_redirects=False).status_code == 303
    assert copy.get("/units/jiaoyu", follow_redirects=False).status_code == 303


def test_reviewers_need_their_code_and_cookies_are_host_only(county):
    c, issued = county
    client = TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
    page = client.get("/login")
    assert "__Host-csrftoken=" in page.headers["set-cookie"]
    r = client.post("/login", data={"csrftoken": _token(page.text), "name": "reviewer",
                                    "password": "reviewer-password-12", "code": "123456"})
    assert r.status_code == 401 and "用户名、密码或验证码不正确" in r.text
    ok = login(c, issued, "reviewer")
    cookie = next(v for k, v in ok.cookies.items() if "session" in k)
    assert cookie and any(k == "__Host-govhost-session" for k in ok.cookies.keys())


def test_titles_are_escaped_and_next_never_leaves_the_console(county):
    c, issued = county
    client = login(c, issued, "editor")
    page = client.get("/units/jiaoyu")
    assert "&lt;b&gt;jiaoyu&lt;/b&gt;" in page.text and "<b>jiaoyu</b>" not in page.text
    anon = TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert safe_next(evil) == "/"
    login_page = anon.get("/login?next=//evil.example/")
    assert 'name="next" value="/"' in login_page.text


def test_english_on_request_and_every_page_string_translated(county):
    c, issued = county
    client = login(c, issued, "operator")
    assert "全县网站" in client.get("/").text
    en = client.get("/?lang=en")
    assert "All sites of the county" in en.text and "全县网站" not in en.text
    assert "All sites of the county" in client.get("/").text        # kept in a cookie
    used = set()
    for f in (REPO / "templates" / "console").glob("*.j2"):
        used |= set(re.findall(r'_\("([^"]+)"\)', f.read_text()))
    missing = [s for s in sorted(used) if i18n.translations("en").gettext(s) == s]
    assert missing == []


def _zip(*members) -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("who,unit,status", [("editor", "chahe", 403),
                                             ("reviewer", "jiaoyu", 403),
                                             ("operator", "jiaoyu", 403)])
def test_uploads_and_submits_for_a_unit_one_may_not_act_on_are_refused(county, who, unit,
                                                                       status):
    c, issued = county
    client = login(c, issued, who)
    token = _token(client.get("/password").text)
    up = client.post(f"/units/{unit}/upload", data={"csrftoken": token},
                     files={"site": ("site.zip", _zip(("index.html", "x")), "application/zip")})
    assert up.status_code == status
    sub = client.post(f"/units/{unit}/submit", data={"csrftoken": token})
    assert sub.status_code == status


@pytest.mark.parametrize("members,expect", [
    ([("../../etc/cron.d/x", "x")], "would leave the upload area"),
    ([("a.html", "x"), ("A.HTML", "y")], "the same file"),
])
def test_a_hostile_zip_is_refused_with_the_reason_before_any_node_is_asked(county, members,
                                                                           expect):
    c, issued = county
    client = login(c, issued, "editor")
    token = _token(client.get("/units/jiaoyu/upload").text)
    r = client.post("/units/jiaoyu/upload", data={"csrftoken": token},
                    files={"site": ("site.zip", _zip(*members), "application/zip")})
    assert r.status_code == 400 and expect in r.text
    missing = client.post("/units/jiaoyu/upload", data={"csrftoken": token})
    assert missing.status_code == 400 and "请选择一个 zip 文件" in missing.text
    forged = client.post("/units/jiaoyu/upload", data={"csrftoken": "forged"},
                         files={"site": ("site.zip", _zip(("a.html", "x")), "application/zip")})
    assert forged.status_code == 403
    none = client.post("/units/jiaoyu/upload",
                       files={"site": ("site.zip", _zip(("a.html", "x")), "application/zip")})
    assert none.status_code == 403
    huge = client.post("/units/jiaoyu/upload", content=b"x" * 10,
                       headers={"content-type": "multipart/form-data; boundary=b",
                                "content-length": str(5 << 30)})
    assert huge.status_code == 413


@pytest.mark.parametrize("query,cookie,accept,lang", [
    (None, None, None, "zh"), (None, None, "en-US,en;q=0.9", "en"),
    (None, None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"), (None, None, "fr-FR,fr", "zh"),
    (None, "en", "zh-CN", "en"), ("zh", "en", "en-US", "zh"), ("xx", None, "de;q=x", "zh")])
def test_the_language_from_the_query_the_cookie_or_the_browser(query, cookie, accept, lang):
    assert i18n.pick(query, cookie, accept) == lang


@pytest.mark.parametrize("who,unit,rid", [("editor", "jiaoyu", R_JY), ("admin", "jiaoyu", R_JY),
                                          ("other", "jiaoyu", R_JY),
                                          ("reviewer", "chahe", R_CH)])
def test_a_decision_by_someone_who_may_not_review_that_unit_is_refused(county, who, unit, rid):
    c, issued = county
    client = login(c, issued, who)
    token = _token(client.get("/password").text)
    r = client.post(f"/units/{unit}/reviews/{rid}",
                    data={"csrftoken": token, "decision": "approve"})
    assert r.status_code == 403
    assert client.post(f"/units/{unit}/reviews/{rid}",
                       data={"decision": "approve"}).status_code == 403       # no token
    with c.state() as st:
        assert st.review_chain(unit, rid)["steps"] == []


def test_the_review_page_shows_the_form_to_the_waiting_level_only_and_escapes(county):
    c, issued = county
    reviewer = login(c, issued, "reviewer").get(f"/units/jiaoyu/reviews/{R_JY}")
    assert 'id="approve"' in reviewer.text and 'id="reject"' in reviewer.text
    assert "&lt;img src=x onerror=alert(1)&gt;.html" in reviewer.text
    assert "<img src=x" not in reviewer.text
    operator = login(c, issued, "operator").get(f"/units/jiaoyu/reviews/{R_JY}")
    assert 'id="approve"' not in operator.text
    assert "level 1 of 2 is decided by" in operator.text
    editor = login(c, issued, "editor").get(f"/units/jiaoyu/reviews/{R_JY}")
    assert 'id="approve"' not in editor.text and 'id="why-not"' in editor.text


@pytest.mark.parametrize("who,route", [
    ("editor", "/units/jiaoyu/rollbacks/1"), ("admin", "/units/jiaoyu/rollbacks/1"),
    ("other", "/units/jiaoyu/rollbacks/1"), ("reviewer", "/units/chahe/rollbacks/1"),
    ("reviewer", "/units/jiaoyu/rollbacks"), ("operator", "/units/jiaoyu/rollbacks"),
    ("other", "/units/jiaoyu/rollbacks")])
def test_rollbacks_are_proposed_by_editors_and_confirmed_by_reviewers_only(county, who, route):
    c, issued = county
    client = login(c, issued, who)
    token = _token(client.get("/password").text)
    r = client.post(route, data={"csrftoken": token, "decision": "approve",
                                 "release": "20261130T000000-cccccc"})
    assert r.status_code == 403
    with c.state() as st:
        assert st.review_chain("jiaoyu", "rollback:1")["steps"] == []
        assert len(st.rollbacks("jiaoyu")) == 1


def test_the_rollback_page_offers_the_decision_to_a_reviewer_not_the_proposer(county):
    c, issued = county
    assert 'id="approve"' in login(c, issued, "reviewer").get("/units/jiaoyu/rollbacks/1").text
    editor = login(c, issued, "editor").get("/units/jiaoyu/rollbacks/1").text
    assert 'id="approve"' not in editor and "20261130T000000-cccccc" in editor


def test_a_unit_requests_a_site_without_an_account_and_follows_it(county):
    """The form is refused field by field (escaped), a good one is queued with a secret
    link; the operator returns it with a comment the requester then reads."""
    c, issued = county
    anon = TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
    form = {"name": "tiyu2", "title": "<script>alert(1)</script>体育局", "kind": "department",
            "contact_name": "赵敏", "contact_email": "bad", "contact_phone": "0571-6512-3399",
            "columns": "/tzgg/ 通知公告 notices", "review": "unit"}
    page = anon.get("/request")
    assert anon.post("/request", data=form).status_code == 403          # no CSRF token
    r = anon.post("/request", data={**form, "csrftoken": _token(page.text)})
    assert r.status_code == 400 and "contact.email" in r.text
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;" in r.text
    assert "title:" in r.text                    # a title with markup is refused by name
    r = anon.post("/request", data={**form, "contact_email": "office@tiyu.qingshui.gov.cn",
                                    "title": "青水县体育局", "csrftoken": _token(r.text)})
    assert r.status_code == 200, r.text
    follow = re.search(r'id="follow">([^<]+)<', r.text).group(1).replace("&amp;", "&")
    assert "等待县数据中心审核" in anon.get(follow).text
    rid = follow.split("/")[2]
    op = login(c, issued, "operator")
    queue_page = op.get("/requests").text
    assert f'href="/requests/{rid}"' in queue_page
    shown = op.get(f"/requests/{rid}")
    assert "launch: pending" in shown.text and "tiyu2: add" in shown.text
    r = op.post(f"/requests/{rid}", data={"decision": "return", "comment": "请补充栏目<b>",
                                         "csrftoken": _token(shown.text)})
    assert r.status_code == 200 and 'id="result"' in r.text
    back = anon.get(follow).text
    assert "已退回" in back and "请补充栏目&lt;b&gt;" in back
    with c.state() as st:
        actions = [(e["action"], e["actor"]) for e in st.audit_log(20)]
    assert ("site-request.returned", "operator") in actions


def test_the_unit_page_shows_visits_and_pages_most_read_escaped(county):
    c, issued = county
    html = login(c, issued, "editor").get("/units/jiaoyu").text
    assert "2026-12-01" in html and ">40<" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_a_unit_admin_adds_resets_and_disables_only_the_units_people(county):
    c, issued = county
    admin = login(c, issued, "admin")
    page = admin.get("/units/jiaoyu/people")
    assert "editor" in page.text and "Other" not in page.text     # chahe's editor not shown
    r = admin.post("/units/jiaoyu/people", data={
        "action": "add", "name": "xiaozhang", "display": "<i>小张</i>", "role": "reviewer",
        "email": "", "csrftoken": _token(page.text)})
    assert r.status_code == 400 and "e-mail" in r.text       # the link needs the address
    r = admin.post("/units/jiaoyu/people", data={
        "action": "add", "name": "xiaozhang", "display": "<i>小张</i>", "role": "reviewer",
        "email": "xz@jiaoyu.example", "csrftoken": _token(r.text)})
    assert r.status_code == 200 and "mailed to xz@jiaoyu.example" in r.text
    assert "&lt;i&gt;" in r.text and "otpauth" not in r.text and "issued" not in r.text
    (mail,) = c.sink.to("xz@jiaoyu.example")
    link = re.search(r"https?://console\.qingshui\.gov\.cn(/enrol/\S+)", mail).group(1)
    assert any("xiaozhang" in m for m in c.sink.to("ops@qingshui.gov.cn"))
    anon = TestClient(console_app.build(c, unit_view=fake_unit), base_url=BASE)
    form = anon.get(link)
    assert form.status_code == 200 and "otpauth://totp/" in form.text
    r = anon.post(link, data={"new": "xiaozhang-自己的密码", "again": "xiaozhang-自己的密码",
                              "csrftoken": _token(form.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert anon.get(link).status_code == 404                  # once only
    r = admin.get("/units/jiaoyu/people")
    r = admin.post("/units/jiaoyu/people", data={
        "action": "add", "name": "boss", "display": "x", "role": "operator",
        "csrftoken": _token(r.text)})
    assert r.status_code == 400                    # a unit admin cannot make an operator
    for target, want in (("other", 403), ("operator", 403), ("admin", 400)):
        r = admin.post("/units/jiaoyu/people", data={
            "action": "disable", "person": target, "csrftoken": _token(r.text)})
        assert r.status_code == want, (target, r.status_code)
    r = admin.post("/units/jiaoyu/people", data={
        "action": "disable", "person": "xiaozhang", "csrftoken": _token(r.text)})
    assert r.status_code == 200
    from controlplane.people.store import People
    with c.state() as st:
        p = People(st, c.inv.secret, c.inv.cluster.name)
        assert p.get("xiaozhang").disabled and p.get("xiaozhang").unit == "jiaoyu"
        log = [(e["action"], e["actor"], e["target"]) for e in st.audit_log(20)]
    assert ("user.add", "admin", "xiaozhang") in log
    assert ("user.disable", "admin", "xiaozhang") in log


def test_a_bad_sftp_key_is_refused_and_the_manifest_stays(county):
    c, issued = county
    admin = login(c, issued, "admin")
    before = (c.root / "tenants" / "jiaoyu.yaml").read_text()
    page = admin.get("/units/jiaoyu/people")
    r = admin.post("/units/jiaoyu/sftp-keys", data={
        "keys": 'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8 x',
        "csrftoken": _token(page.text)})
    assert r.status_code == 400 and "sftp.keys" in r.text
    assert (c.root / "tenants" / "jiaoyu.yaml").read_text() == before


def test_single_files_are_checked_before_they_reach_a_node(county):
    c, issued = county
    editor = login(c, issued, "editor")
    page = editor.get("/units/jiaoyu/upload")
    assert 'src="/static/upload.js"' in page.text
    js = editor.get("/static/upload.js")
    assert js.status_code == 200 and "XMLHttpRequest" in js.text
    r = editor.post("/units/jiaoyu/upload", data={"csrftoken": _token(page.text),
                                                   "folder": "../../etc"},
                    files=[("files", ("<b>x</b>.html", b"x", "text/html"))])
    assert r.status_code == 400 and "&#39;..&#39; would leave the upload area" in r.text
    assert "<b>x</b>" not in r.text
    r = editor.post("/units/jiaoyu/upload", data={"folder": "x"},
                    files=[("files", ("a.html", b"x", "text/html"))])
    assert r.status_code == 403                               # no CSRF token


POSTS = ["/login", "/logout", "/password", "/request", "/units/jiaoyu/upload", "/enrol/{token}",
         "/units/jiaoyu/submit", f"/units/jiaoyu/reviews/{R_JY}", "/units/jiaoyu/rollbacks",
         "/units/jiaoyu/rollbacks/1", "/units/jiaoyu/people", "/units/jiaoyu/sftp-keys",
         "/requests/1", f"/units/jiaoyu/preview/{R_JY}",
         "/units/jiaoyu/messages/JY-20261201-1-000001/answer",
         "/units/jiaoyu/messages/JY-20261201-1-000001/review",
         "/units/jiaoyu/messages/JY-20261201-1-000001/forward"]


def test_every_route_that_changes_something_is_a_post_the_app_lists_here():
    """A new state-changing route must be added to POSTS (and so to the CSRF test)."""
    app = console_app.build(County(REPO / "inventory"), unit_view=fake_unit)
    found = set()
    for route in app.routes:
        if "POST" in (getattr(route, "methods", None) or ()):
            found.add(route.path)
    listed = {re.sub(r"/(\d+|20\d{6}T\d{6}-\w{6}|[A-Z]{2,6}-\d{8}-\d+-\d{6})(?=/|$)",
                     "/{x}", p).replace("/jiaoyu", "/{unit}") for p in POSTS}
    normal = {re.sub(r"\{(release|proposal:int|rid:int|number:str)\}", "{x}", p)
              for p in found}
    assert normal == listed, (sorted(normal), sorted(listed))


# Routes open to anyone, each for its reason; every other route declares its gate.
OPEN = {"/login": "logging in", "/logout": "ends a session if there is one",
        "/password": "the one page a person who owes a password change may see (it asks "
                     "for the login itself)",
        "/enrol/{token}": "the secret link is the credential",
        "/request": "a unit without a site has no account yet",
        "/requests/{rid:int}/status": "the secret in the link is the credential",
        "/static/console.css": "an asset", "/static/upload.js": "an asset"}


def test_every_route_declares_its_gate_or_is_open_for_a_stated_reason():
    app = console_app.build(County(REPO / "inventory"), unit_view=fake_unit)
    gates = {}
    for route in app.routes:
        needs = getattr(route.endpoint, "needs", None)
        if needs is None:
            assert route.path in OPEN, f"{route.path} has no gate (Pages.needs) and no reason"
        else:
            assert route.path not in OPEN, route.path
            gates[(route.path, tuple(sorted(route.methods or ())))] = needs
    # a unit's pages are gated on the unit of their path
    assert all(unit for (path, _), (_, unit) in gates.items() if "{unit}" in path), gates
    assert gates[("/requests", ("GET", "HEAD"))] == ("decide_requests", False)
    assert gates[("/units/{unit}/upload", ("POST",))] == ("upload", True)


@pytest.mark.parametrize("path", POSTS)
def test_every_form_without_its_csrf_token_is_refused(county, path):
    """Forged from another site: no token (or a wrong one) gets 403 and changes nothing."""
    c, issued = county
    who = "operator" if path.startswith("/requests") else (
        "admin" if path.endswith(("/people", "/sftp-keys")) else "editor")
    client = login(c, issued, who)
    with c.state() as st:
        before = len(st.audit_log(500))
    for data in ({"decision": "approve", "comment": "x", "release": "r", "name": "x"},
                 {"decision": "approve", "csrftoken": "forged"}):
        r = client.post(path, data=data, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    with c.state() as st:
        assert len(st.audit_log(500)) == before


def test_every_form_field_is_held_to_the_same_rule(county):
    """A paragraph separator in a person's name or a review comment is refused by field,
    as in the site request form; nothing is recorded."""
    c, issued = county
    admin = login(c, issued, "admin")
    page = admin.get("/units/jiaoyu/people")
    r = admin.post("/units/jiaoyu/people", data={
        "action": "add", "name": "xiaoli", "display": "小李\u2029roles: [operator]",
        "role": "editor", "email": "xl@jiaoyu.example", "csrftoken": _token(page.text)})
    assert r.status_code == 400 and "U+2029" in r.text
    reviewer = login(c, issued, "reviewer")
    page = reviewer.get(f"/units/jiaoyu/reviews/{R_JY}")
    with c.state() as st:
        before = len(st.audit_log(500))
    r = reviewer.post(f"/units/jiaoyu/reviews/{R_JY}", data={
        "decision": "reject", "comment": "不行\u2028level: 2", "csrftoken": _token(page.text)})
    assert r.status_code == 400 and "U+2028" in r.text
    with c.state() as st:
        assert len(st.audit_log(500)) == before


def test_the_overview_comes_a_page_at_a_time(county, monkeypatch):
    """At 5,000 units one table of every unit cost 66 ms to lay out and 0.7 MB to send: the
    overview shows OVERVIEW_ROWS at a time, most neglected first, and says how many."""
    from controlplane.console import views
    c, issued = county
    client = login(c, issued, "operator")
    every = re.findall(r'<a href="/units/([^"]+)">', client.get("/").text)
    monkeypatch.setattr(views, "OVERVIEW_ROWS", 2)
    pages = -(-len(every) // 2)
    seen = []
    for n in range(1, pages + 1):
        html = client.get(f"/?page={n}").text
        seen += re.findall(r'<a href="/units/([^"]+)">', html)
        assert f"第 {n} / {pages} 页，共 {len(every)} 个单位" in html
        assert ('rel="next"' in html) == (n < pages) and ('rel="prev"' in html) == (n > 1)
    assert seen == every                      # the same order, every unit once
    for odd, shown in (("0", 1), ("-1", 1), ("abc", 1), ("99999999999", 1),
                       (str(pages + 5), pages)):
        html = client.get(f"/?page={odd}").text
        assert f"第 {shown} / {pages} 页" in html
