"""govhost-messages on loopback: real servers stand for two nodes (the citizens' side on a
Unix socket, the nodes' side on 127.0.0.1), each with its own spool in a directory of the
test's own (issue 38, first part). A message is answered with a number only once the peer
holds it; the doors a stranger or a hostile unit would try are tried."""
import http.client
import json
import os
import socket
import threading
import time
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


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Node:
    def __init__(self, tmp: Path, name: str, index: int, read_seconds: float = 10) -> None:
        self.lay = Layout.under(str(tmp / name))
        self.spool = Spool(self.lay)
        self.settings = ms.Settings(node=name, index=index, units={"jiaoyu": "JY"}, peers=[],
                                    secret=SECRET, work_bits=8, peer_timeout=2,
                                    read_seconds=read_seconds)
        self.socket = str(tmp / f"{name}.sock")
        self.public = ms.server(self.socket, self.settings, self.spool)
        self.nodes = ms.server(("127.0.0.1", 0), self.settings, self.spool, public=False)
        self.address = f"127.0.0.1:{self.nodes.server_address[1]}"
        for srv in (self.public, self.nodes):
            threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            for srv in (self.public, self.nodes):
                srv.shutdown()
                srv.server_close()
            self.stopped = True

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, side: str = "public") -> tuple[int, dict]:
        if side == "public":
            conn: http.client.HTTPConnection = UnixConnection(self.socket)
        else:
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


def test_a_peer_that_did_not_answer_is_tried_last_for_a_while(nodes, monkeypatch):
    """A node powered off answers nothing: each citizen would wait out the connection
    timeout before the next peer. After one such wait the silent peer is tried last (for
    PEER_DOWN_SECONDS), and first again once that has passed."""
    n1, n2 = nodes
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)                       # takes connections, never answers
    accepted: list = []

    def take() -> None:
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            accepted.append(conn)
    threading.Thread(target=take, daemon=True).start()
    dead = f"127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setattr(ms, "_down", {})
    try:
        n1.settings.peers = [dead, n2.address]
        n1.settings.peer_timeout = 1
        assert n1.post(GOOD, source="203.0.113.21")[0] == 200      # waited for `dead` once
        assert n1.post(GOOD, source="203.0.113.22")[0] == 200
        assert n1.post(GOOD, source="203.0.113.23")[0] == 200
        assert len(accepted) == 1
        assert len(list(n2.spool.records("copies"))) == 3
        monkeypatch.setattr(ms, "PEER_DOWN_SECONDS", 0.0)
        assert n1.post(GOOD, source="203.0.113.24")[0] == 200
        assert len(accepted) == 2                                  # tried first again
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


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
    conn = UnixConnection(n1.socket)
    conn.putrequest("POST", "/message")
    conn.putheader("X-Govhost-Unit", "jiaoyu")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))
    conn.endheaders()
    try:
        conn.send(b"subject=" + b"a" * 1024)
    except BrokenPipeError:
        pass            # it answered and closed before these bytes came: what is asked
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


def test_a_flood_from_many_sources_at_one_unit_stops_at_its_limit(nodes):
    """Each source within its own limit, many sources at one unit: past the unit's limit
    on this node (per window) a message is refused with 429 and nothing is kept; another
    unit's box still takes messages."""
    n1, _ = nodes
    n1.settings.units["wenlv"] = "WL"
    n1.settings.per_unit = (3, 3600.0)
    for i in range(3):
        assert n1.post(GOOD, source=f"198.51.100.{20 + i}")[0] == 200
    status, res = n1.post(GOOD, source="198.51.100.30")
    assert status == 429 and "this unit" in res["error"]
    assert len(list(n1.spool.records("own"))) == 3
    assert n1.post(GOOD, unit="wenlv", source="198.51.100.31")[0] == 200


def test_a_replica_must_be_signed_and_is_checked_like_a_citizens_message(nodes):
    n1, n2 = nodes
    assert n1.post(GOOD)[0] == 200
    record, = list(n1.spool.records("own"))
    forged = {**record, "number": "JY-20261205-1-000099"}
    body = json.dumps(forged).encode()
    assert n2.request("POST", "/replica", body, {"X-Govhost-Mac": "0" * 64},
                      side="nodes")[0] == 403
    for bad in ({**forged, "subject": "a\nb"}, {**forged, "extra": "x"},
                {**forged, "unit": "../../etc"}, {**forged, "subject": "路灯" + " " * 50},
                {**forged, "text": forged["text"] + "\u2028"},
                {**forged, "number": "JY-20261205-1-00009\U0001d7ce"},
                {**forged, "node": "n\u0663"}, {**forged, "received": "2026-99-99T99:99:99Z"}):
        body = json.dumps(bad).encode()
        status, _ = n2.request("POST", "/replica", body,
                               {"X-Govhost-Mac": ms.sign(SECRET, body)}, side="nodes")
        assert status == 400
    # the same copy twice is harmless; a different one under a taken number is refused
    body = json.dumps(record).encode()
    assert n2.request("POST", "/replica", body, {"X-Govhost-Mac": ms.sign(SECRET, body)},
                      side="nodes")[0] == 201
    other = json.dumps({**record, "text": record["text"] + "（改）"}).encode()
    assert n2.request("POST", "/replica", other, {"X-Govhost-Mac": ms.sign(SECRET, other)},
                      side="nodes")[0] == 400


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


def test_each_door_serves_only_its_side(nodes):
    n1, _ = nodes
    assert n1.request("GET", "/challenge", headers={"X-Govhost-Unit": "jiaoyu"},
                      side="nodes")[0] == 404
    assert n1.request("POST", "/message", b"subject=a", {"X-Govhost-Unit": "jiaoyu"},
                      side="nodes")[0] == 404
    assert n1.request("POST", "/replica", b"{}", {"X-Govhost-Mac": "0" * 64})[0] == 404


def test_a_challenge_is_answered_only_on_the_node_that_gave_it(nodes):
    n1, n2 = nodes
    _, c = n1.request("GET", "/challenge", headers={"X-Govhost-Unit": "jiaoyu"})
    form = urlencode({**GOOD, "challenge": c["challenge"],
                      "nonce": rules.solve(c["challenge"])}).encode()
    status, res = n2.request("POST", "/message", form, {"X-Govhost-Unit": "jiaoyu"})
    assert status == 400 and "another server" in res["problems"]["challenge"]
    assert n1.request("POST", "/message", form, {"X-Govhost-Unit": "jiaoyu"})[0] == 200


def test_a_long_chinese_text_fits(nodes):
    n1, _ = nodes
    assert n1.post({**GOOD, "text": "请尽快修复路灯" * 714})[0] == 200      # 4,998 characters


def test_odd_lengths_and_macs_get_an_answer_not_a_dropped_connection(nodes):
    n1, _ = nodes
    # One write, as a client sends a small request (http.client writes the body apart, and
    # the server's early 411 could close the socket between the two: a broken pipe there
    # says nothing about the server).
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(n1.socket)
    raw.sendall(b"POST /message HTTP/1.1\r\nHost: x\r\nX-Govhost-Unit: jiaoyu\r\n"
                b"Content-Length: \xc2\xb2\r\n\r\nsubject=a")
    answer = raw.recv(200)
    raw.close()
    assert answer.startswith(b"HTTP/1.0 411") or answer.startswith(b"HTTP/1.1 411"), answer
    body = b"{}"
    status, _ = n1.request("POST", "/replica", body,
                           {"X-Govhost-Mac": "\u00e9".encode().decode("latin-1") * 32},
                           side="nodes")
    assert status == 403


def test_a_client_that_stops_sending_is_let_go_and_a_header_flood_is_cut(tmp_path):
    n = Node(tmp_path, "n1", 1, read_seconds=0.5)
    try:
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(n.socket)
        idle.sendall(b"POST /message HTTP/1.1\r\nX-Govhost-Unit: jiaoyu\r\n")
        idle.settimeout(20)                     # far past the server's 0.5 s
        assert idle.recv(100) == b""            # closed by the server, not by us
        flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        flood.connect(n.socket)
        flood.settimeout(5)
        try:
            flood.sendall(b"GET /challenge HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 60000 + b"\r\n")
            flood.sendall(b"X-More: b\r\n" * 2000)
        except OSError:
            pass                                # cut while still sending
        try:
            data = flood.recv(200)
        except ConnectionResetError:
            data = b""
        assert b"200" not in data
        # and the next citizen is answered
        assert n.request("GET", "/challenge", headers={"X-Govhost-Unit": "jiaoyu"})[0] == 200
    finally:
        n.stop()


def test_past_the_connection_cap_a_connection_is_closed_not_queued_for_ever(tmp_path):
    n = Node(tmp_path, "n1", 1, read_seconds=30)
    held = []
    try:
        for _ in range(ms.MAX_CONNECTIONS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(n.socket)
            s.sendall(b"GET /chal")
            held.append(s)
        time.sleep(0.3)
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.connect(n.socket)
        extra.settimeout(5)
        assert extra.recv(10) == b""            # refused at once, no thread of its own
        assert threading.active_count() < ms.MAX_CONNECTIONS + 20
    finally:
        for s in held:
            s.close()
        n.stop()


def test_peers_are_reached_directly_whatever_proxy_the_environment_names(nodes, monkeypatch):
    n1, n2 = nodes
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    assert n1.post(GOOD)[0] == 200
    assert len(list(n2.spool.records("copies"))) == 1


def test_a_source_is_kept_per_day_and_an_ipv6_source_by_its_network():
    a = ms.source_key(SECRET, "2001:db8:1:2::5", "2026-12-05")
    assert a == ms.source_key(SECRET, "2001:db8:1:2:ffff::9", "2026-12-05")
    assert a != ms.source_key(SECRET, "2001:db8:1:3::5", "2026-12-05")
    assert a != ms.source_key(SECRET, "2001:db8:1:2::5", "2026-12-06")
    assert ms.source_key(SECRET, "203.0.113.5", "2026-12-05") != ms.source_key(
        SECRET, "203.0.113.6", "2026-12-05")
