"""Citizens' messages in the console over real HTTP requests (Starlette's TestClient), with
real logins, the real broker and state store: who may read, answer, review and forward a
unit's messages, and the county's overdue list.

Two things stand in for the nodes, and only they: the messages the nodes hold (read over
SSH, `collect.collect`) come from a fixed list, and sending a unit's answers to the nodes
(`answers.add`, SSH) is recorded instead. tests/integration/test_messages_lab.py answers
through the console on the lab's real nodes."""
import re
from datetime import datetime, timedelta, timezone

import pyotp
import pytest
from starlette.testclient import TestClient

from controlplane.console import app as console_app
from controlplane.core.county import County
from controlplane.core.state import State
from controlplane.messages import answers, inbox
from controlplane.messages.collect import Message
from controlplane.people.store import People
from govhost_node.message_spool import number_day
from tests.helpers import Sink, example_inventory

BASE = "https://console.qingshui.gov.cn"
PEOPLE = {"editor": ("jiaoyu", ["editor"]), "editor2": ("jiaoyu", ["editor"]),
          "reviewer": ("jiaoyu", ["reviewer"]), "admin": ("jiaoyu", ["admin"]),
          "other": ("chahe", ["editor"]), "operator": (None, ["operator"])}
OLD, NEW, THIRD = "JY-20261201-1-000001", "JY-20261203-2-000002", "JY-20261204-1-000003"
# 10 December 2026, 10:00 in the county: OLD (1 December, a Tuesday) was due on the 8th
NOW = datetime(2026, 12, 10, 10, 0, tzinfo=timezone(timedelta(hours=8))).timestamp()


def message(number: str, received: str, subject: str) -> Message:
    return Message(number=number, unit="jiaoyu", received=received, subject=subject,
                   text="青水路的路灯坏了。\n请修。", name="张先生", contact="13800138000",
                   token_hash="ab" * 32, taken_by="n1", stored_on=("n1", "n2"),
                   differs=False)


NODES = [message(OLD, "2026-12-01T02:00:00Z", "路灯不亮"),
         message(NEW, "2026-12-03T02:00:00Z", "<script>alert(1)</script>"),
         message(THIRD, "2026-12-04T02:00:00Z", "景区门票")]


def read(county, number=None, unit=None, placed=(), since=None):
    """What collect.collect gives (`number`: the nodes' `dump --number`, that one only;
    `unit`, `placed`: `dump --unit --placed`, what was written to the unit and those;
    `since`: `dump --since`, those numbered that day or later). Each read is recorded."""
    READS.append({"number": number, "unit": unit, "since": since})
    return [m for m in NODES if wanted(m, number, unit, placed)
            and (since is None or number_day(m.number) >= since)], {}


READS: list[dict] = []


def wanted(m, number, unit, placed) -> bool:
    if number is not None:
        return m.number == number
    return unit is None or m.unit == unit or (m.unit, m.number) in placed


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    dest = tmp_path_factory.mktemp("messages-console") / "inventory"
    example_inventory(dest)
    sink = Sink()
    cluster = (dest / "cluster.yaml").read_text()
    (dest / "cluster.yaml").write_text(cluster.replace("smarthost: 127.0.0.1:2525",
                                                       f"smarthost: 127.0.0.1:{sink.port}"))
    # jiaoyu's answers pass one level of its reviewers
    with (dest / "tenants" / "jiaoyu.yaml").open("a") as f:
        f.write("review:\n  levels: [unit]\n")
    c = County(dest)
    c.sink = sink
    people = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    issued = {}
    for name, (unit, roles) in PEOPLE.items():
        issued[name] = people.add(name, name.title(), unit, roles,
                                  frozenset(t.name for t in c.inv.tenants))
        people.change_password(name, issued[name].password, f"{name}-password-12")
    people.st.close()
    yield c, issued
    sink.stop()


@pytest.fixture(autouse=True)
def pushed(monkeypatch):
    """What would go to the nodes: (unit, its answered list)."""
    sent = []

    def add(county, unit, number):
        with county.state() as st:
            sent.append((unit, st.message_answers(unit)))
        return {"n1": "ok", "n2": "ok", "n3": "ok"}
    monkeypatch.setattr(answers, "add", add)
    return sent


SESSIONS: dict = {}


def login(c, issued, who, now=NOW):
    from controlplane.console.broker import Broker
    from controlplane.console.transport import Local
    broker = Broker(c, True, lambda county, name: {}, read, lambda: now)
    client = TestClient(console_app.build(Local(broker)), base_url=BASE)
    if who in SESSIONS:
        client.cookies.update(SESSIONS[who])
        return client
    page = client.get("/login")
    code = pyotp.TOTP(issued[who].totp_secret).now() if issued[who].totp_secret else ""
    r = client.post("/login", data={"csrftoken": token(page.text), "name": who,
                                    "password": f"{who}-password-12", "code": code,
                                    "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    SESSIONS[who] = dict(client.cookies)
    return client


def token(html):
    return re.search(r'name="csrftoken" value="([^"]+)"', html).group(1)


@pytest.mark.parametrize("who,path,status", [
    ("editor", "/units/jiaoyu/messages", 200), ("reviewer", "/units/jiaoyu/messages", 200),
    ("operator", "/units/jiaoyu/messages", 200), ("admin", "/units/jiaoyu/messages", 403),
    ("other", "/units/jiaoyu/messages", 403), ("other", f"/units/jiaoyu/messages/{OLD}", 403),
    ("admin", f"/units/jiaoyu/messages/{OLD}", 403),
    ("other", "/units/chahe/messages/JY-nonsense", 404),
    ("editor", "/messages/overdue", 403), ("operator", "/messages/overdue", 200)])
def test_who_may_see_a_units_messages(county, who, path, status):
    c, issued = county
    r = login(c, issued, who).get(path, follow_redirects=False)
    assert r.status_code == status, (who, path, r.text[:300])


def test_the_list_has_due_dates_and_standing_and_the_contact_read_is_audited(county):
    c, issued = county
    editor = login(c, issued, "editor")
    page = editor.get("/units/jiaoyu/messages").text
    # due: five working days after the county's day; OLD is past it on 10 December
    assert re.search(rf'class="message-overdue"><td><a [^>]+>{OLD}</a></td><td>2026-12-01'
                     r'</td><td>路灯不亮</td><td>2026-12-08', page)
    assert re.search(rf'class="message-due_soon"><td><a [^>]+>{NEW}', page)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "13800138000" not in page                 # no contact in the list
    one = editor.get(f"/units/jiaoyu/messages/{OLD}").text
    assert "13800138000" in one and "张先生" in one
    with c.state() as st:
        read_by = [(e["actor"], e["target"]) for e in st.audit_log(50)
                   if e["action"] == "messages.read"]
    assert ("editor", OLD) in read_by


def test_a_message_held_for_review_words_is_marked_and_its_answer_is_private_by_default(
        county, monkeypatch):
    """A node found words of the county's `review` lists in NEW (govhost_node/words.py):
    the list marks it, its page names the words, and the answer form starts as 不予公开."""
    import dataclasses
    held = dataclasses.replace(NODES[1], review_words=("茶河乡", "国家工商行政管理总局"))
    monkeypatch.setitem(globals(), "NODES", [NODES[0], held, NODES[2]])
    c, issued = county
    editor = login(c, issued, "editor")
    page = editor.get("/units/jiaoyu/messages").text

    def row(number):
        return re.search(rf'<tr [^>]+><td><a [^>]+>{number}</a>.*?</tr>', page, re.S).group(0)
    assert "含待审核词语" in row(NEW) and "含待审核词语" not in row(OLD)
    one = editor.get(f"/units/jiaoyu/messages/{NEW}").text
    assert re.search(r'id="held">[^<]*茶河乡、国家工商行政管理总局', one)
    assert 'id="private" checked' in one
    assert 'id="private">' in editor.get(f"/units/jiaoyu/messages/{OLD}").text


def test_an_answer_waits_for_the_units_reviewer_and_then_reaches_the_nodes(county, pushed):
    c, issued = county
    editor = login(c, issued, "editor")
    page = editor.get(f"/units/jiaoyu/messages/{OLD}").text
    bad = editor.post(f"/units/jiaoyu/messages/{OLD}/answer",
                      data={"csrftoken": token(page), "answer": "已修复\u202e。"})
    assert bad.status_code == 400 and "U+202E" in bad.text
    r = editor.post(f"/units/jiaoyu/messages/{OLD}/answer",
                    data={"csrftoken": token(page), "answer": "路灯已于12月9日修复。\r\n谢谢。"})
    assert r.status_code == 200 and 'id="draft"' in r.text and pushed == []
    # the writer may not approve it (the unit's reviewers decide), nor answer it twice
    assert 'id="why-not"' in r.text and 'id="approve"' not in r.text
    again = editor.post(f"/units/jiaoyu/messages/{OLD}/answer",
                        data={"csrftoken": token(page), "answer": "再答一次"})
    assert again.status_code == 400 and "waiting for review" in again.text
    # an editor may not decide at all
    decide = editor.post(f"/units/jiaoyu/messages/{OLD}/review",
                         data={"csrftoken": token(page), "decision": "approve"})
    assert decide.status_code == 403
    reviewer = login(c, issued, "reviewer")
    page = reviewer.get(f"/units/jiaoyu/messages/{OLD}").text
    assert 'id="approve"' in page and "13800138000" in page
    r = reviewer.post(f"/units/jiaoyu/messages/{OLD}/review",
                      data={"csrftoken": token(page), "decision": "approve", "comment": "可以"})
    assert r.status_code == 200 and 'id="answer"' in r.text
    [(unit, sent)] = pushed
    assert unit == "jiaoyu" and [a["number"] for a in sent] == [OLD]
    assert sent[0]["answer"] == "路灯已于12月9日修复。\n谢谢。" and sent[0]["publish"]
    assert sent[0]["answered_by"] == "editor"
    listing = editor.get("/units/jiaoyu/messages").text
    assert re.search(rf'class="message-answered"><td><a [^>]+>{OLD}', listing)


def test_a_rejected_answer_is_written_again(county, pushed):
    c, issued = county
    editor = login(c, issued, "editor2")
    page = editor.get(f"/units/jiaoyu/messages/{THIRD}").text
    r = editor.post(f"/units/jiaoyu/messages/{THIRD}/answer",
                    data={"csrftoken": token(page), "answer": "不知道。", "private": "1"})
    assert 'id="draft"' in r.text
    reviewer = login(c, issued, "reviewer")
    page = reviewer.get(f"/units/jiaoyu/messages/{THIRD}").text
    r = reviewer.post(f"/units/jiaoyu/messages/{THIRD}/review",
                      data={"csrftoken": token(page), "decision": "reject",
                            "comment": "请具体答复"})
    assert r.status_code == 200 and pushed == []
    page = editor.get(f"/units/jiaoyu/messages/{THIRD}").text
    assert 'id="answer-text"' in page and 'id="draft"' not in page


def test_forwarding_moves_the_message_to_the_other_units_staff(county, pushed):
    c, issued = county
    editor = login(c, issued, "editor")
    page = editor.get(f"/units/jiaoyu/messages/{NEW}").text
    bad = editor.post(f"/units/jiaoyu/messages/{NEW}/forward",
                      data={"csrftoken": token(page), "to": "chahe",
                            "reason": "不是本单位\u2028to: wenlv"})
    assert bad.status_code == 400 and "U+2028" in bad.text
    nosuch = editor.post(f"/units/jiaoyu/messages/{NEW}/forward",
                         data={"csrftoken": token(page), "to": "../etc", "reason": "x"})
    assert nosuch.status_code == 400
    r = editor.post(f"/units/jiaoyu/messages/{NEW}/forward",
                    data={"csrftoken": token(page), "to": "chahe", "reason": "茶河镇的路灯"})
    assert r.status_code == 200 and 'id="result"' in r.text
    # jiaoyu sees it as forwarded and may no longer answer it
    listing = editor.get("/units/jiaoyu/messages").text
    assert re.search(rf"{NEW}</a>.*?已转办", listing, re.S)
    r = editor.post(f"/units/jiaoyu/messages/{NEW}/answer",
                    data={"csrftoken": token(page), "answer": "答复"})
    assert r.status_code in (400, 404) and pushed == []
    # chahe's editor answers it from chahe's page (no review chain there): on jiaoyu's page
    other = login(c, issued, "other")
    assert NEW in other.get("/units/chahe/messages").text
    page = other.get(f"/units/chahe/messages/{NEW}").text
    assert "13800138000" in page and "茶河镇的路灯" in page
    r = other.post(f"/units/chahe/messages/{NEW}/answer",
                   data={"csrftoken": token(page), "answer": "已安排维修。"})
    assert r.status_code == 200, r.text
    [(unit, sent)] = pushed
    assert unit == "jiaoyu" and NEW in [a["number"] for a in sent]
    with c.state() as st:
        assert [e["detail"]["to"] for e in st.audit_log(100)
                if e["action"] == "messages.forward"] == ["chahe"]


def test_the_countys_overdue_list_comes_from_the_state_alone(county):
    c, issued = county
    # every earlier test has run: OLD and NEW are answered, THIRD (4 December) is overdue
    rows = inbox.overdue(c, datetime.fromtimestamp(NOW, timezone(timedelta(hours=8))).date()
                         + timedelta(days=10))
    assert [e.number for e in rows] == [THIRD]
    assert "没有超期的留言" in login(c, issued, "operator").get("/messages/overdue?page=x").text
    later = login(c, issued, "operator", NOW + 10 * 86400).get("/messages/overdue").text
    assert re.search(rf'href="/units/jiaoyu/messages/{THIRD}">{THIRD}</a></td><td>'
                     r'[^<]+</td><td>2026-12-04</td><td>2026-12-11</td>', later)


def test_reminders_and_alerts_are_mailed_once_each(county):
    c, _ = county
    today = datetime.fromtimestamp(NOW, timezone(timedelta(hours=8))).date()
    READS.clear()
    first = inbox.remind(c, today + timedelta(days=70), read=read)
    claims = []
    real = State.notice_once
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(State, "notice_once", lambda self, *a: claims.append(a) or real(self, *a))
        again = inbox.remind(c, today + timedelta(days=70), read=read)
    assert first["failed"] == [] and first["sent"] == 2      # THIRD: remind, alert
    assert again["sent"] == 0 and again["owed"] == 2
    assert claims == []            # the notices sent are skipped by one read, not claimed
    # the day's first reminder reads every message; the next, those of the last few days
    # only (by the day in their numbers: none of these three)
    assert [r["since"] for r in READS] == [None, "20270215"]
    mails = c.sink.to("ops@qingshui.gov.cn")
    assert len(mails) == 1 and THIRD in mails[0] and "13800138000" not in mails[0]
    assert len(c.sink.to("webmaster@jiaoyu.qingshui.gov.cn")) == 2
