"""A unit admin's add and reset in the console when the county's mail cannot carry the link
(issue 31, item 7), over real HTTP requests to the application and a real SMTP server on
loopback: without a mail server in cluster.yaml the console refuses and sends the admin to
the county's `govhost user add|reset`; a link leaves only after the county has been told.
"""
import re
from pathlib import Path

import pyotp
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from controlplane.console import app as console_app
from controlplane.core.county import County
from controlplane.people.store import People
from tests.helpers import Sink, example_inventory, free_port

REPO = Path(__file__).resolve().parents[3]
BASE = "https://console.qingshui.gov.cn"
ALERTS = re.compile(r"^alerts:\n(?:  .*\n)+", re.M)


def _county(tmp_path: Path, alerts: str | None) -> tuple[County, dict]:
    """The example county with `alerts:` replaced (None: taken out), an admin of jiaoyu who
    has logged in once, and a reviewer with an address."""
    dest = tmp_path / "inventory"
    example_inventory(dest)
    cluster = (dest / "cluster.yaml").read_text()
    assert ALERTS.search(cluster)
    (dest / "cluster.yaml").write_text(ALERTS.sub(alerts or "", cluster))
    c = County(dest)
    p = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    units = frozenset(t.name for t in c.inv.tenants)
    admin = p.add("admin", "Admin", "jiaoyu", ["admin"], units, "admin@jiaoyu.example")
    p.change_password("admin", admin.password, "admin-password-12")
    p.add("rev", "Rev", "jiaoyu", ["reviewer"], units, "rev@jiaoyu.example")
    p.st.close()
    return c, {"admin": admin}


def _token(html: str) -> str:
    return re.search(r'name="csrftoken" value="([^"]+)"', html).group(1)


def _admin(c: County, issued: dict) -> TestClient:
    client = TestClient(console_app.build(c, unit_view=lambda *_: {}), base_url=BASE)
    page = client.get("/login")
    r = client.post("/login", data={
        "csrftoken": _token(page.text), "name": "admin", "password": "admin-password-12",
        "code": pyotp.TOTP(issued["admin"].totp_secret).now(), "next": "/"},
        follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def _post(client: TestClient, **data) -> object:
    page = client.get("/units/jiaoyu/people")
    return client.post("/units/jiaoyu/people", data={**data, "csrftoken": _token(page.text)})


def test_without_a_mail_server_the_console_sends_the_admin_to_the_county(tmp_path):
    c, issued = _county(tmp_path, None)
    assert c.inv.cluster.alerts is None
    admin = _admin(c, issued)
    r = _post(admin, action="add", name="sock", display="Sock", role="reviewer",
              email="sock@jiaoyu.example")
    assert r.status_code == 400 and "no mail server" in r.text
    assert "govhost user add" in r.text and "otpauth" not in r.text
    r = _post(admin, action="reset", person="rev")
    assert r.status_code == 400 and "govhost user reset" in r.text
    with c.state() as st:
        p = People(st, c.inv.secret, c.inv.cluster.name)
        assert p.get("sock") is None                          # nothing was made
        actions = [e["action"] for e in st.audit_log(50)]
    assert "user.reset" not in actions


class _NoCounty:
    """A mail server that refuses the county's address (full mailbox, a typo in
    cluster.yaml) and keeps whatever else it takes."""

    def __init__(self) -> None:
        self.mails: list[list[str]] = []
        box = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
                if address == "ops@qingshui.gov.cn":
                    return "550 no such mailbox"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                box.mails.append(list(envelope.rcpt_tos))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()


def _alerts(port: int) -> str:
    """cluster.yaml's mail settings, to a server on `port` here, the county at ops@."""
    return ("alerts:\n  smarthost: 127.0.0.1:%d\n  sender: govhost@qingshui.gov.cn\n"
            "  require_tls: false\n  county: [ops@qingshui.gov.cn]\n" % port)


def test_no_link_leaves_unless_the_county_was_told(tmp_path):
    """The county hears of every account made or reset in the console: when that mail
    fails, the person's link is not sent either, and the admin is told what to do."""
    server = _NoCounty()
    try:
        c, issued = _county(tmp_path, _alerts(server.port))
        admin = _admin(c, issued)
        r = _post(admin, action="reset", person="rev")
        assert r.status_code == 400, r.text[-500:]
        assert "rev was reset, but no link reached rev@jiaoyu.example" in r.text
        assert "govhost user reset rev" in r.text
        assert server.mails == []                    # the reviewer got no link
        with c.state() as st:
            assert st.db.execute("SELECT COUNT(*) FROM enrolments").fetchone()[0] == 0
    finally:
        server.controller.stop()


def test_every_add_and_reset_is_told_to_the_county_and_audited(tmp_path):
    sink = Sink()
    try:
        c, issued = _county(tmp_path, _alerts(sink.port))
        admin = _admin(c, issued)
        r = _post(admin, action="add", name="sock", display="Sock", role="reviewer",
                  email="sock@jiaoyu.example")
        assert r.status_code == 200 and "mailed to sock@jiaoyu.example" in r.text
        r = _post(admin, action="reset", person="rev")
        assert r.status_code == 200 and "mailed to rev@jiaoyu.example" in r.text
        for page in (r.text, admin.get("/units/jiaoyu/people").text):
            assert "otpauth" not in page and "/enrol/" not in page
        county = sink.to("ops@qingshui.gov.cn")
        assert len(county) == 2 and "sock" in county[0] and "rev" in county[1]
        assert all("/enrol/" not in m for m in county)        # the link is the person's
        for who in ("sock", "rev"):
            (mine,) = sink.to(f"{who}@jiaoyu.example")
            assert "/enrol/" in mine
        with c.state() as st:
            log = [(e["action"], e["actor"], e["target"]) for e in st.audit_log(50)]
        for entry in (("user.add", "admin", "sock"), ("user.reset", "admin", "rev"),
                      ("user.enrolment_mailed", "admin", "sock"),
                      ("user.enrolment_mailed", "admin", "rev")):
            assert entry in log, entry
    finally:
        sink.stop()
