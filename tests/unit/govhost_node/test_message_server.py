"""govhost-messages on loopback: two real servers stand for two nodes, each with its own
spool in a directory of the test's own (issue 38, first part). A message is answered with a
number only once the peer holds it; the doors a stranger or a hostile unit would try are
tried."""
import http.client
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest

from govhost_node import message_server as ms
from govhost_node import messages as rules
from govhost_node.layout import Layout
from govhost_node.message_spool import Spool

SECRET = b"county message secret"
GOOD = {"subject": "路灯不亮", "text": "青水路与南街路口的路灯已经坏了一周，请尽快修复。",
        "contact": "13800138000", "name": "张先生"}


class Node:
    def __init__(self, tmp: Path, name: str, index: int) -> None:
        self.lay = Layout.under(str(tmp / name))
        self.spool = Spool(self.lay)
        self.settings = ms.Settings(node=name, index=index, units={"jiaoyu": "JY"}, peers=[],
                                    secret=SECRET, work_bits=8, peer_timeout=2)
        self.srv = ms.server(("127.0.0.1", 0), self.settings, self.spool)
        self.address = f"127.0.0.1:{self.srv.server_address[1]}"
        self.thread = threading.Thread(target=self.srv.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict]:
        host, port = self.address.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            conn.close()

    def post(self, fields: dict, unit: str = "jiaoyu", source: str = "203.0.113.5"
             ) -> tuple[int, dict]:
        _, c = self.request("GET", "/challenge", headers={"X-Govhost-Unit": unit})
        form = {**fields, "challenge": c.get("challenge", ""),
                "nonce": rules.solve(c["challenge"]) if "challenge" in c else ""}
        return self.request("POST", "/message", urlencode(form).encode(),
                            {"X-Govhost-Unit": unit, "X-Real-IP": source,
                             "Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture
def nodes(tmp_path):
    n1, n2 = Node(tmp_path, "n1", 1), Node(tmp_path, "n2", 2)
    n1.settings.peers, n2.settings.peers = [n2.address], [n1.address]
    yield n1, n2
    for n in (n1, n2):
        n.stop()


def test_a_message_is_numbered_only_once_a_peer_holds_it(nodes):
    n1, n2 = nodes
    status, res = n1.post(GOOD)
    assert status == 200 and res["number"].startswith("JY-") and res["number"].endswith(
        "-1-000001")
    own, = list(n1.spool.records("own"))
    copy, = list(n2.spool.records("copies"))
    assert own == copy and own["subject"] == "路灯不亮" and own["contact"] == "13800138000"
    # the reading token is handed out once and kept only as its hash
    assert res["token"] not in json.dumps(own) and own["token_hash"] == rules.token_hash(
        res["token"])
    # the source is a keyed hash, not the address
    assert "203.0.113.5" not in json.dumps(own)
    path = Path(n1.spool.root) / "own" / "jiaoyu" / f"{res['number']}.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert n1.post(GOOD)[1]["number"].endswith("-1-000002")


def test_with_no_peer_reachable_nothing_is_kept_and_the_citizen_is_told(nodes):
    n1, n2 = nodes
    n2.stop()
    status, res = n1.post(GOOD)
    assert status == 503 and "nothing was kept" in res["error"]
    assert list(n1.spool.records("own")) == []


def test_a_second_peer_is_tried_when_the_first_is_down(nodes, tmp_path):
    n1, n2 = nodes
    n3 = Node(tmp_path, "n3", 3)
    try:
        n2.stop()
        n1.settings.peers = [n2.address, n3.address]
        assert n1.post(GOOD)[0] == 200
        assert len(list(n3.spool.records("copies"))) == 1
    finally:
        n3.stop()


def test_a_challenge_answers_once_and_only_for_its_unit(nodes):
    n1, _ = nodes
    _, c = n1.request("GET", "/challenge", headers={"X-Govhost-Unit": "jiaoyu"})
    form = urlencode({**GOOD, "challenge": c["challenge"],
                      "nonce": rules.solve(c["challenge"])}).encode()
    headers = {"X-Govhost-Unit": "jiaoyu"}
    assert n1.request("POST", "/message", form, headers)[0] == 200
    status, res = n1.request("POST", "/message", form, headers)
    assert status == 400 and "already used" in res["problems"]["challenge"]
    # no answer at all, or an answer without work
    status, res = n1.request("POST", "/message", urlencode(GOOD).encode(), headers)
    assert status == 400 and "challenge" in res["problems"]
    assert n1.request("GET", "/challenge", headers={"X-Govhost-Unit": "renshe"})[0] == 404
    assert n1.post(GOOD, unit="renshe")[0] == 404


@pytest.mark.parametrize("field,value", [("subject", "x\r\nSet-Cookie: a=b"),
                                         ("contact", "13800138000\u2028Bcc: x@y.cn"),
                                         ("name", "\u202e生先张")])
def test_forged_headers_and_unicode_line_breaks_are_refused_by_field(nodes, field, value):
    n1, n2 = nodes
    status, res = n1.post({**GOOD, field: value})
    assert status == 400 and field in res["problems"]
    assert list(n1.spool.records("own")) == [] and list(n2.spool.records("copies")) == []


def test_a_huge_body_is_refused_before_it_is_read(nodes):
    n1, _ = nodes
    host, port = n1.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/message")
    conn.putheader("X-Govhost-Unit", "jiaoyu")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))
    conn.endheaders()
    conn.send(b"subject=" + b"a" * 1024)
    r = conn.getresponse()
    assert r.status == 413
    conn.close()
    # a field sent twice is not taken either
    status, res = n1.request("POST", "/message", b"subject=a&subject=b",
                             {"X-Govhost-Unit": "jiaoyu"})
    assert status == 400 and "twice" in res["problems"]["form"]


def test_one_source_is_slowed_and_another_is_not(nodes):
    n1, _ = nodes
    for _ in range(5):
        assert n1.post(GOOD, source="198.51.100.7")[0] == 200
    assert n1.post(GOOD, source="198.51.100.7")[0] == 429
    assert n1.post(GOOD, source="198.51.100.8")[0] == 200


def test_a_replica_must_be_signed_and_is_checked_like_a_citizens_message(nodes):
    n1, n2 = nodes
    assert n1.post(GOOD)[0] == 200
    record, = list(n1.spool.records("own"))
    forged = {**record, "number": "JY-20261205-1-000099"}
    body = json.dumps(forged).encode()
    assert n2.request("POST", "/replica", body, {"X-Govhost-Mac": "0" * 64})[0] == 403
    for bad in ({**forged, "subject": "a\nb"}, {**forged, "extra": "x"},
                {**forged, "unit": "../../etc"}):
        body = json.dumps(bad).encode()
        status, _ = n2.request("POST", "/replica", body,
                               {"X-Govhost-Mac": ms.sign(SECRET, body)})
        assert status == 400
    # the same copy twice is harmless; a different one under a taken number is refused
    body = json.dumps(record).encode()
    assert n2.request("POST", "/replica", body, {"X-Govhost-Mac": ms.sign(SECRET, body)}
                      )[0] == 201
    other = json.dumps({**record, "text": record["text"] + "（改）"}).encode()
    assert n2.request("POST", "/replica", other, {"X-Govhost-Mac": ms.sign(SECRET, other)}
                      )[0] == 400


def test_concurrent_messages_get_distinct_numbers_and_all_are_kept(nodes):
    n1, n2 = nodes
    n1.settings.per_source = (1000, 60.0)
    numbers: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        status, res = n1.post({**GOOD, "subject": f"第{i}条"})
        assert status == 200
        with lock:
            numbers.append(res["number"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(numbers)) == 40
    assert {r["number"] for r in n1.spool.records("own")} == set(numbers)
    assert {r["number"] for r in n2.spool.records("copies")} == set(numbers)
    assert not [p for p in os.listdir(Path(n1.spool.root) / "own" / "jiaoyu")
                if p.endswith(".tmp")]


def test_spent_challenges_are_swept_once_they_could_no_longer_be_answered(tmp_path):
    spool = Spool(Layout.under(str(tmp_path)))
    assert spool.spend("c1", now=1000) and not spool.spend("c1", now=1001)
    spent = Path(spool.root) / "spent"
    for p in spent.iterdir():
        os.utime(p, (1000, 1000))
    later = 1000 + rules.CHALLENGE_SECONDS + 500
    assert spool.spend("c2", now=later)
    assert len(list(spent.iterdir())) == 1       # c1's mark is gone, c2's stays
