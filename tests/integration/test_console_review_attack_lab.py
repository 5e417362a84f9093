"""Issue 31, item 7 on the lab: a unit admin acting alone tries to pass a release through
two-person review, through the real console behind a node's nginx, with the county's mail
server a real SMTP sink (aiosmtpd).

The attack: the admin makes the accounts it needs (an editor to publish, a reviewer to
approve; a second admin to make the reviewer for it, so that the reviewer is not the
admin's own doing on paper) and resets an existing reviewer, hoping to read first
credentials on its screen, or to receive them in mailboxes it holds, and then approves its
own release as "another person". What must hold: no page the admin sees carries a password,
a second factor's key or an enrolment link; every link goes to the person's own address and
the county hears of every account; and every approval by an account the admin holds,
directly or through the second admin, is refused with its reason, while a reviewer the
county made may decide. The release stays off the live site."""
import io
import json
import re
import zipfile

import pyotp

from controlplane.core.county import County

from .conftest import govhost
from .test_apply_lab import NODES
from .test_console_lab import (
    HOST,
    _http_session,
    _login_form,
    _token,
    console,  # noqa: F401  (the module's console on the lab)
)
from .test_tenants_lab import page

UNIT = "caizheng"                 # review: unit, then county (the console fixture says so)
COUNTY_MAIL = "ops@qingshui.gov.cn"
SECRETS = re.compile(r"otpauth://|/enrol/|id=\"issued|id=\"enrol-totp")


def _logged_in(name: str, password: str, code: str = "", source: str | None = None):
    """A session through n1's nginx; the first password, if it is one, changed."""
    s = _http_session(source=source)
    r = _login_form(s, name, password, code)
    assert r.status_code == 303, (name, r.status_code, r.text[-600:])
    if r.headers["location"] == "/password":
        form = s.get("/password")
        new = f"{name}-changed-2026-x"
        r = s.post("/password", data={"old": password, "new": new, "again": new,
                                      "csrftoken": _token(form.text)})
        assert r.status_code == 303, r.text[-600:]
    return s


def _people_action(s, **data):
    form = s.get(f"/units/{UNIT}/people")
    assert form.status_code == 200, form.status_code
    return s.post(f"/units/{UNIT}/people", data={**data, "csrftoken": _token(form.text)})


def _enrol(sink, address: str, password: str) -> str:
    """Open the one link mailed to `address` as its holder would: set the password; the
    second factor's key shown there (empty for an editor)."""
    (mail,) = [m for m in sink.to(address) if "/enrol/" in m]
    link = re.search(r"http://" + re.escape(HOST) + r"(/enrol/\S+)", mail).group(1)
    s = _http_session()
    try:
        form = s.get(link)
        assert form.status_code == 200, form.status_code
        found = re.search(r'id="enrol-totp">([A-Z2-7]+)<', form.text)
        r = s.post(link, data={"new": password, "again": password,
                               "csrftoken": _token(form.text)})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert s.get(link).status_code == 404                 # spent
    finally:
        s.close()
    return found.group(1) if found else ""


def _decide(name: str, password: str, secret: str, rid: str, source: str):
    """Log in and try to approve `rid`: the review page's text and the decision's answer."""
    s = _logged_in(name, password, pyotp.TOTP(secret).now(), source)
    try:
        shown = s.get(f"/units/{UNIT}/reviews/{rid}")
        assert shown.status_code == 200, shown.status_code
        r = s.post(f"/units/{UNIT}/reviews/{rid}", data={
            "decision": "approve", "comment": "同意", "csrftoken": _token(shown.text)})
        return shown.text, r
    finally:
        s.close()


def test_a_unit_admin_alone_cannot_make_or_take_over_a_second_person(console):  # noqa: F811
    inv, sink = console["inv"], console["mail"]
    # The county made the admin and, long before, a reviewer with her own mailbox.
    boss = json.loads(govhost(inv, "user", "add", "boss", "--display", "单位管理员", "--unit",
                              UNIT, "--role", "admin", "--json", check=True).stdout)
    liwei = json.loads(govhost(inv, "user", "add", "liwei", "--display", "李伟", "--unit",
                               UNIT, "--role", "reviewer", "--email", "liwei@caizheng.example",
                               "--json", check=True).stdout)

    # 1. The admin adds an editor, a reviewer and a second admin, each "for" a mailbox the
    #    admin holds, and resets the existing reviewer: nothing to read on the screen.
    admin = _logged_in("boss", boss["password"], pyotp.TOTP(boss["totp_secret"]).now(),
                       "10.77.8.51")
    shown_to_admin = []
    try:
        for name, role in (("pen", "editor"), ("sock", "reviewer"), ("boss2", "admin")):
            r = _people_action(admin, action="add", name=name, display=name, role=role,
                               email=f"{name}@attacker.example")
            assert r.status_code == 200, r.text[-800:]
            assert f"a link to set the password was mailed to {name}@attacker.example" in r.text
            shown_to_admin.append(r.text)
        r = _people_action(admin, action="reset", person="liwei")
        assert r.status_code == 200 and "mailed to liwei@caizheng.example" in r.text
        shown_to_admin.append(r.text)
        shown_to_admin.append(admin.get(f"/units/{UNIT}/people").text)
    finally:
        admin.close()
    for html in shown_to_admin:
        assert not SECRETS.search(html), SECRETS.search(html)
    # The reset took: liwei's first credentials, given by the county, no longer work.
    s = _http_session(source="10.77.8.52")
    try:
        r = _login_form(s, "liwei", liwei["password"], pyotp.TOTP(liwei["totp_secret"]).now())
        assert r.status_code == 401
    finally:
        s.close()
    # Each link went to the person's own address only; the county heard of every account.
    for address in ("pen@attacker.example", "sock@attacker.example",
                    "boss2@attacker.example", "liwei@caizheng.example"):
        assert len([m for m in sink.to(address) if "/enrol/" in m]) == 1, address
    told = sink.to(COUNTY_MAIL)
    for name in ("pen", "sock", "boss2", "liwei"):
        assert any(f"账号 {name}" in m for m in told), name
    assert not any("/enrol/" in m for m in told)

    # 2. The admin holds the attacker.example mailboxes (and, say, reads the unit's shared
    #    one where liwei's link went): it enrols every account. The second admin adds one
    #    more reviewer, so that this reviewer was not made by `boss` itself.
    keys = {name: _enrol(sink, f"{name}@attacker.example", f"{name}-own-password-2026")
            for name in ("pen", "sock", "boss2")}
    keys["liwei"] = _enrol(sink, "liwei@caizheng.example", "liwei-own-password-2026")
    assert keys["sock"] and keys["boss2"] and keys["liwei"] and not keys["pen"]
    second = _logged_in("boss2", "boss2-own-password-2026",
                        pyotp.TOTP(keys["boss2"]).now(), "10.77.8.53")
    try:
        r = _people_action(second, action="add", name="sock2", display="sock2",
                           role="reviewer", email="sock2@attacker.example")
        assert r.status_code == 200 and not SECRETS.search(r.text)
    finally:
        second.close()
    keys["sock2"] = _enrol(sink, "sock2@attacker.example", "sock2-own-password-2026")

    # 3. The admin's editor publishes.
    pen = _logged_in("pen", "pen-own-password-2026", "", "10.77.8.54")
    try:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("index.html", "<h1>财政局 一人说了算</h1>")
        form = pen.get(f"/units/{UNIT}/upload")
        r = pen.post(f"/units/{UNIT}/upload", data={"csrftoken": _token(form.text)},
                     files={"site": ("site.zip", buf.getvalue(), "application/zip")})
        assert r.status_code == 200, r.text[-800:]
        r = pen.post(f"/units/{UNIT}/submit", data={"csrftoken": _token(r.text)})
        assert r.status_code == 200, r.text[-800:]
    finally:
        pen.close()
    with County(inv).state() as st:
        (rid,) = [r["release_id"] for r in st.content_releases(UNIT, "pending")
                  if r["actor"] == "pen"]

    # 4. Every account the admin holds is refused, on the page and at the decision; the
    #    reason names the admin, and the second admin in between.
    both = "boss created or reset both your account and that of pen"
    for name, source, reason in (("sock", "10.77.8.55", both),
                                 ("sock2", "10.77.8.56", "(through boss → boss2 → sock2)"),
                                 ("liwei", "10.77.8.57", both)):
        shown, r = _decide(name, f"{name}-own-password-2026", keys[name], rid, source)
        assert both in shown and reason in shown, (name, shown[-1500:])
        assert r.status_code == 400 and reason in r.text, (name, r.status_code)
    with County(inv).state() as st:
        assert [r["release_id"] for r in st.content_releases(UNIT, "pending")
                if r["actor"] == "pen"] == [rid]
        approved = [e for e in st.audit_log(5000)
                    if e["action"] == "content.review.approved" and rid in e["target"]]
    assert approved == []
    for address in NODES.values():
        assert "一人说了算" not in page(UNIT, address)[1]

    # 5. A reviewer the county made, whom the admin never touched, is a second person.
    chen = console["people"]["chenjing"]
    _, r = _decide("chenjing", chen["password"], chen["totp_secret"], rid, "10.77.8.59")
    assert r.status_code == 200, r.text[-800:]
    with County(inv).state() as st:
        steps = st.review_chain(UNIT, rid)["steps"]
    assert [(s["by"], s["decision"]) for s in steps] == [("chenjing", "approved")]
    for address in NODES.values():             # the county's level still waits
        assert "一人说了算" not in page(UNIT, address)[1]
