"""The message box wired to a node (issue 38): the service reads its settings from the live
config release and follows it without a restart, nginx's socket is its group's only, the page
and its script are served, `dump` gives the control machine what the node holds, and the
page's own SHA-256 (run by Node.js, the engine of the browsers' kind) agrees with Python's."""
import grp
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

import pytest

from govhost_node import message_page
from govhost_node import message_server as ms
from govhost_node import messages as rules
from govhost_node.layout import Layout
from govhost_node.message_spool import Spool
from tests.unit.govhost_node.test_message_server import GOOD, UnixConnection

SECRET = "county message secret"


def _config(path: Path, units: dict, peers: list, node: str = "n1", index: int = 1) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"node": node, "index": index, "units": units, "peers": peers,
                               "secret": SECRET, "titles": {u: f"<b>{u}</b> 局"
                                                            for u in units}}))
    os.replace(tmp, path)              # as a release's switch: a new file, not an edit


def _get(sock: str, path: str, unit: str) -> tuple[int, bytes, str]:
    conn = UnixConnection(sock)
    try:
        conn.request("GET", path, headers={"X-Govhost-Unit": unit})
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("Content-Type", "")
    finally:
        conn.close()


@pytest.fixture
def node(tmp_path):
    """One node's service as `serve` builds it: Live settings from a config file."""
    config = tmp_path / "messages.json"
    live = ms.Live(str(config))
    lay = Layout.under(str(tmp_path / "n1"))
    spool = Spool(lay)
    sock = str(tmp_path / "citizens.sock")
    servers = [ms.server(sock, live, spool, socket_group=grp.getgrgid(os.getgid()).gr_name),
               ms.server(("127.0.0.1", 0), live, spool, public=False)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield {"config": config, "sock": sock, "lay": lay, "live": live, "spool": spool,
           "peers_port": servers[1].server_address[1]}
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_without_a_release_no_site_takes_messages_and_a_new_release_is_followed(node):
    assert _get(node["sock"], "/challenge", "jiaoyu")[0] == 404
    _config(node["config"], {"jiaoyu": "JY"}, [])
    status, body, _ = _get(node["sock"], "/challenge", "jiaoyu")
    assert status == 200 and json.loads(body)["challenge"].startswith("jiaoyu.n1.")
    assert _get(node["sock"], "/challenge", "wenlv")[0] == 404
    _config(node["config"], {"wenlv": "WL"}, [])        # jiaoyu's box switched off
    assert _get(node["sock"], "/challenge", "jiaoyu")[0] == 404
    assert _get(node["sock"], "/challenge", "wenlv")[0] == 200


def test_the_socket_is_for_its_group_only(node):
    mode = os.stat(node["sock"]).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_the_page_and_script_are_served_and_the_title_is_escaped(node):
    _config(node["config"], {"jiaoyu": "JY"}, [])
    status, body, ctype = _get(node["sock"], "/page", "jiaoyu")
    assert status == 200 and ctype.startswith("text/html")
    page = body.decode()
    assert "&lt;b&gt;jiaoyu&lt;/b&gt; 局" in page and "<b>jiaoyu</b>" not in page
    for name in ("subject", "text", "name", "contact"):
        assert f'name="{name}"' in page
    assert '<script src="form.js">' in page and "http" not in page.split("<body>")[1]
    status, script, ctype = _get(node["sock"], "/form.js", "jiaoyu")
    assert status == 200 and ctype.startswith("text/javascript") and script == \
        message_page.SCRIPT
    assert _get(node["sock"], "/page", "wenlv")[0] == 404      # no box, no page


def test_dump_gives_every_message_the_node_holds(node, tmp_path, capsys):
    peer_lay = Layout.under(str(tmp_path / "n2"))
    peer = ms.server(("127.0.0.1", 0), ms.Settings(node="n2", index=2, units={"jiaoyu": "JY"},
                                                   peers=[], secret=SECRET.encode()),
                     Spool(peer_lay), public=False)
    threading.Thread(target=peer.serve_forever, args=(0.05,), daemon=True).start()
    try:
        _config(node["config"], {"jiaoyu": "JY"}, [f"127.0.0.1:{peer.server_address[1]}"])
        node["live"].current().work_bits = 8
        _, body, _ = _get(node["sock"], "/challenge", "jiaoyu")
        challenge = json.loads(body)["challenge"]
        form = urlencode({**GOOD, "challenge": challenge,
                          "nonce": rules.solve(challenge)}).encode()
        conn = UnixConnection(node["sock"])
        conn.request("POST", "/message", body=form, headers={
            "X-Govhost-Unit": "jiaoyu", "X-Real-IP": "203.0.113.9",
            "Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        answer = json.loads(r.read())
        conn.close()
        assert r.status == 200, answer
        ms.dump(node["lay"])
        ms.dump(peer_lay)
    finally:
        peer.shutdown()
        peer.server_close()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["number"], x["held_as"], x["node"]) for x in lines] == [
        (answer["number"], "own", "n1"), (answer["number"], "copies", "n1")]
    assert all(x["contact"] == GOOD["contact"] and "token" not in x for x in lines)


needs_node = pytest.mark.skipif(shutil.which("node") is None,
                                reason="Node.js is not installed (it runs the page's script)")


@needs_node
def test_the_pages_sha256_is_sha256_and_its_answer_is_accepted(tmp_path):
    script = tmp_path / "form.js"
    script.write_bytes(message_page.SCRIPT)
    texts = ["", "abc", "a" * 55, "a" * 56, "a" * 64, "jiaoyu.n1.1764900000.0123456789abcdef."
             "18.0123456789abcdef0123456789abcdef:123456", "x" * 300]
    challenge = rules.challenge(SECRET.encode(), "jiaoyu", "n1", bits=12)
    program = (f"const f = require({json.dumps(str(script))});\n"
               "const hex = H => H.map(w => (w >>> 0).toString(16).padStart(8, '0')).join('');\n"
               f"const texts = {json.dumps(texts)};\n"
               "console.log(JSON.stringify(texts.map(t => hex(f.sha256(t)))));\n"
               f"f.solve({json.dumps(challenge)}).then(n => console.log(n));\n")
    out = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    digests, nonce = out.stdout.splitlines()
    assert json.loads(digests) == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert rules.work(challenge, nonce) >= 12
    rules.verify(SECRET.encode(), "jiaoyu", "n1", challenge, nonce)     # raises if not


def _answer(number: str, token: str, publish: bool = True, **change) -> dict:
    return {"number": number, "received": "2026-12-05T02:00:00Z", "subject": "路灯不亮",
            "text": "路口的路灯坏了。", "answer": "已于12月6日修复。\n谢谢。",
            "answered_at": "2026-12-06T03:00:00Z", "publish": publish,
            "token_hash": rules.token_hash(token), **change}


def test_answers_are_listed_searched_and_read_by_their_link_only(node):
    _config(node["config"], {"jiaoyu": "JY"}, [])
    public, private = rules.accept("JY", 1, 1, date(2026, 12, 5)), \
        rules.accept("JY", 1, 2, date(2026, 12, 5))
    many = [_answer(f"JY-20261205-2-{i:06d}", rules.accept("JY", 2, i, date(2026, 12, 5)).token, subject=f"第{i}号 <script>", answered_at=
        f"2026-12-06T03:{i // 60:02d}:{i % 60:02d}Z") for i in range(1, 46)]
    ms.take_answers(node["lay"], "jiaoyu", json.dumps(
        [_answer(public.number, public.token),
         _answer(private.number, private.token, publish=False, subject="不公开的事")] + many,
        ensure_ascii=False).encode())
    status, body, _ = _get(node["sock"], "/list", "jiaoyu")
    page = body.decode()
    assert status == 200 and "共 46 条，第 1/3 页" in page and "不公开的事" not in page
    assert "第45号 &lt;script&gt;" in page and "<script>" not in page   # newest first, escaped
    assert "13800138000" not in page
    status, body, _ = _get(node["sock"], "/list?q=%E4%B8%8D%E4%BA%AE&page=1", "jiaoyu")
    assert "共 1 条" in body.decode() and public.number in body.decode()     # q=不亮
    assert "第 3/3 页" in _get(node["sock"], "/list?page=99", "jiaoyu")[1].decode()
    # the private answer: only by its link
    status, body, _ = _get(node["sock"], f"/reply?t={private.token}", "jiaoyu")
    assert status == 200 and "已于12月6日修复" in body.decode() and "不公开" in body.decode()
    t = public.token          # one character changed to one it is not
    wrong = _get(node["sock"], f"/reply?t={t[:4]}{'x' if t[4] != 'x' else 'y'}{t[5:]}",
                 "jiaoyu")[1].decode()
    assert "没有找到已答复的留言" in wrong and "已于" not in wrong
    assert "没有找到" in _get(node["sock"], "/reply?t=../../etc", "jiaoyu")[1].decode()
    # another unit's page knows nothing of jiaoyu's answers
    _config(node["config"], {"jiaoyu": "JY", "wenlv": "WL"}, [])
    assert "共 0 条" in _get(node["sock"], "/list", "wenlv")[1].decode()
    assert "没有找到" in _get(node["sock"], f"/reply?t={private.token}", "wenlv")[1].decode()


@pytest.mark.parametrize("change,why", [
    ({"answer": "好\u202e的"}, "answer"),
    ({"subject": "a\nb"}, "subject"),
    ({"number": "JY-1; rm -rf /"}, "number"),
    ({"publish": "yes"}, "publish"),
    ({"contact": "13800138000"}, "exactly the answer fields"),
    ({"answered_at": "tomorrow"}, "answered_at"),
])
def test_answers_a_node_would_show_wrongly_are_refused_whole(node, change, why):
    good = _answer("JY-20261205-1-000001", rules.accept("JY", 1, 1, date(2026, 12, 5)).token)
    ms.take_answers(node["lay"], "jiaoyu", json.dumps([good]).encode())
    with pytest.raises(ValueError, match=why):
        ms.take_answers(node["lay"], "jiaoyu", json.dumps([good, {**good, **change}]).encode())
    with open(node["spool"].answers_path("jiaoyu"), encoding="utf-8") as f:
        assert json.load(f) == [good]                     # the last good list stays
    with pytest.raises(ValueError, match="bad unit"):
        ms.take_answers(node["lay"], "../etc", b"[]")


def _lines(*docs: object) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(d, ensure_ascii=False).encode() + b"\n"
                               for d in docs))


def test_many_units_answers_in_one_stream_each_stored_or_refused_alone(node):
    """What a joining or replaced node takes (`answers-many`): a unit refused keeps its last
    good list and does not stop the units after it; a link, a line break in a subject or a
    unit name that climbs out are refused as `answers` refuses them."""
    one = _answer("JY-20261205-1-000001", rules.accept("JY", 1, 1, date(2026, 12, 5)).token)
    two = _answer("WL-20261205-1-000001", rules.accept("WL", 1, 1, date(2026, 12, 5)).token)
    ms.take_answers(node["lay"], "wenlv", json.dumps([two]).encode())
    got = ms.take_many_answers(node["lay"], _lines(
        {"unit": "jiaoyu", "answers": [one]},
        {"unit": "../etc", "answers": []},
        {"unit": "wenlv", "answers": [two, {**two, "subject": "a\u2028b"}]},
        {"unit": "chahe", "answers": "all of them"},
        {"unit": "minzheng", "answers": []}))
    assert got["answers"] == {"jiaoyu": 1, "minzheng": 0}
    assert set(got["refused"]) == {"../etc", "wenlv", "chahe"}
    assert "bad unit" in got["refused"]["../etc"] and "list" in got["refused"]["chahe"]
    for unit, want in (("jiaoyu", [one]), ("wenlv", [two]), ("minzheng", [])):
        with open(node["spool"].answers_path(unit), encoding="utf-8") as f:
            assert json.load(f) == want, unit
    assert not os.path.exists(node["spool"].answers_path("chahe"))
    assert not os.path.exists(os.path.normpath(node["spool"].answers_path("../etc")))


@pytest.mark.parametrize("stream,why", [
    (b'{"unit": "jiaoyu", "answers": []}', "cut short"),                 # no line end
    (b'["jiaoyu", []]\n', "not"),
    (b'{"unit": "jiaoyu", "answers": [], "run": "sh"}\n', "not"),
    (b'{"unit": 7, "answers": []}\n', "not"),
    (b'{"unit": "jiaoyu", "answers": []}\n{"unit": "jiaoyu", "answers": []}\n', "twice"),
    (b'{"unit": "jiaoyu", "answers": [}\n', "Expecting"),
    (b'{"unit": "jiaoyu", "answers": ["' + b"x" * 400 + b'"]}\n', "larger"),
])
def test_a_stream_that_is_not_what_the_control_machine_sends_stops(node, monkeypatch, stream,
                                                                    why):
    monkeypatch.setattr(ms, "MAX_ANSWERS_BYTES", 200)
    with pytest.raises(ValueError, match=why):
        ms.take_many_answers(node["lay"], io.BytesIO(stream))


@pytest.mark.parametrize("path", [
    "/reply?t=abc&from=singlemessage&isappinstalled=0",      # what WeChat adds to a link
    "/list?a=1&b=2&c=3&d=4&e=5&f=6", "/list?page=%C2%B2", "/list?page=%E2%91%A0",
    "/page?from=timeline", "/form.js?v=1", "/list?q=%ff%fe&page=-1", "/reply?t=" + "x" * 9000,
])
def test_ordinary_and_odd_query_strings_get_the_page(node, path):
    _config(node["config"], {"jiaoyu": "JY"}, [])
    status, body, _ = _get(node["sock"], path, "jiaoyu")
    assert status == 200, (path, body[:200])


def test_pages_carry_a_strict_policy_and_the_reading_page_is_never_cached(node):
    _config(node["config"], {"jiaoyu": "JY"}, [])
    for path in ("/page", "/list", "/reply?t=x"):
        conn = UnixConnection(node["sock"])
        conn.request("GET", path, headers={"X-Govhost-Unit": "jiaoyu"})
        r = conn.getresponse()
        r.read()
        conn.close()
        assert "script-src 'self'" in r.getheader("Content-Security-Policy", "")
        if path.startswith("/reply"):
            assert r.getheader("Cache-Control") == "no-store, private"
            assert r.getheader("Referrer-Policy") == "no-referrer"


def test_a_request_sent_a_byte_at_a_time_is_cut_at_its_deadline(node, monkeypatch):
    """The per-read limit alone let a client holding a slot send one byte every few seconds
    for hours (found by the attack review: 64 of them stopped every box's copies)."""
    import socket as socketlib
    import time
    monkeypatch.setattr(ms, "REQUEST_SECONDS", 2)
    _config(node["config"], {"jiaoyu": "JY"}, [])
    s = socketlib.create_connection(("127.0.0.1", node["peers_port"]), timeout=10)
    started = time.monotonic()
    closed_after = None
    try:
        for ch in b"POST /replica HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            s.sendall(bytes([ch]))
            time.sleep(0.5)
            if time.monotonic() - started > 8:
                break
    except OSError:
        closed_after = time.monotonic() - started
    s.close()
    assert closed_after is not None and closed_after < 6, closed_after


def test_a_made_up_token_does_not_read_the_spool_again(node, monkeypatch):
    _config(node["config"], {"jiaoyu": "JY"}, [])
    rec = {"number": "JY-20261205-1-000001", "unit": "jiaoyu", "node": "n1",
           "received": "2026-12-05T02:00:00Z", "subject": "路灯", "text": "路口的路灯坏了一周了。", "name": "",
           "contact": "13800138000", "token_hash": rules.token_hash("t" * 32), "source": ""}
    node["spool"].write("own", rec)
    assert "正在办理" in _get(node["sock"], "/reply?t=" + "t" * 32, "jiaoyu")[1].decode()
    reads = []
    real = Spool.records
    monkeypatch.setattr(Spool, "records", lambda self, *a: reads.append(a) or real(self, *a))
    for i in range(5):
        page = _get(node["sock"], "/reply?t=" + f"{i}" * 32, "jiaoyu")[1].decode()
        assert "没有找到" in page
    assert reads == []                       # the spool did not change: no read


def test_a_replaced_node_keeps_the_copies_it_is_given_and_refuses_a_forged_one(node):
    rec = {"number": "JY-20261205-2-000007", "unit": "jiaoyu", "node": "n2",
           "received": "2026-12-05T02:00:00Z", "subject": "路灯", "text": "路口的路灯坏了一周了。",
           "name": "", "contact": "13800138000", "token_hash": rules.token_hash("k" * 32),
           "source": ""}
    line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
    assert ms.keep_copies(node["lay"], line + line) == 2          # given twice: kept once
    assert [r["number"] for r in node["spool"].records("copies")] == [rec["number"]]
    with pytest.raises(ValueError):
        ms.keep_copies(node["lay"], (json.dumps({**rec, "number": "JY-20261205-2-000008",
                                                 "subject": "a\u2028b"}) + "\n").encode())
    with pytest.raises(FileExistsError):                          # another text, same number
        ms.keep_copies(node["lay"], (json.dumps({**rec, "text": "改过的路灯留言内容。"})
                                     + "\n").encode())
    assert len(list(node["spool"].records("copies"))) == 1


def test_contacts_past_the_retention_are_forgotten_on_disk_and_nothing_else(tmp_path):
    """`govhost-messages forget --before T`: names and contacts of older messages emptied
    by one rename each; newer ones, texts and numbers untouched; a forgotten record is
    still a valid copy (a replaced node takes it back), a half-forgotten one is not."""
    from govhost_node.message_spool import check_record
    spool = Spool(Layout.under(str(tmp_path / "n1")))

    def record(number, received):
        return {"number": number, "unit": "jiaoyu", "node": "n1", "received": received,
                "subject": "路灯", "text": "青水路的路灯坏了一周。", "name": "张先生",
                "contact": "13800138000", "token_hash": "0" * 64, "source": "a" * 64}
    old = record("JY-20250105-1-000001", "2025-01-05T02:00:00Z")
    new = record("JY-20261205-1-000002", "2026-12-05T02:00:00Z")
    spool.write("own", old)
    spool.write("copies", new)
    assert spool.forget_contacts("2026-01-01T00:00:00Z") == 1
    assert spool.forget_contacts("2026-01-01T00:00:00Z") == 0           # once
    held = {r["number"]: r for kind in ("own", "copies") for r in spool.records(kind)}
    assert held[old["number"]] == {**old, "name": "", "contact": ""}
    assert held[new["number"]] == new
    raw = b"".join(p.read_bytes() for p in (tmp_path / "n1").rglob("*.json"))
    assert "13800138000".encode() in raw and raw.count("13800138000".encode()) == 1
    check_record(held[old["number"]])
    for half in ({**old, "contact": ""}, {**old, "name": "", "contact": " "}):
        with pytest.raises(ValueError):
            check_record(half)
    # the command as the control machine runs it
    with pytest.raises(SystemExit):
        ms.main(["forget", "--before", "2026-01-01; rm -rf /"])


def test_a_recent_message_cannot_be_forgotten_nor_replaced_by_a_forgotten_copy(tmp_path):
    """Found by the second review: a signed peer (or a control machine whose clock ran
    ahead) could blank a recent contact. Now a record without name and contact must be at
    least 100 days old, `forget` refuses a later time, and a copy of a number the node
    holds as its own must be the same."""
    from govhost_node.message_spool import check_record, forget_limit
    spool = Spool(Layout.under(str(tmp_path / "n1")))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mine = {"number": f"JY-{now[:10].replace('-', '')}-1-000009", "unit": "jiaoyu",
            "node": "n1", "received": now, "subject": "路灯", "text": "青水路的路灯坏了一周。",
            "name": "张先生", "contact": "13800138000", "token_hash": "0" * 64,
            "source": "a" * 64}
    spool.write("own", mine)
    with pytest.raises(ValueError, match="older than 100 days"):
        check_record({**mine, "name": "", "contact": ""})
    with pytest.raises(FileExistsError):
        spool.write("copies", {**mine, "contact": "13900000000"})
    spool.write("copies", mine)                 # the same record as a copy: harmless
    for before in ("9999-12-31T23:59:59Z", now, "2026-99-99T99:99:99Z"):
        with pytest.raises(ValueError):
            spool.forget_contacts(before)
    assert spool.forget_contacts(forget_limit()) == 0
    assert next(spool.records("own"))["contact"] == "13800138000"


def test_dump_of_one_number_reads_that_message_only(tmp_path, capsys, monkeypatch):
    """Before stop 66 every page, answer and forward of one message dumped every message
    each node holds (1.8 s a node at 40,000). `dump --number` reads the one message's own
    copy and peer's copy, found by a stat in each unit's folder; a number that could name
    a path is refused before anything is read."""
    from types import SimpleNamespace

    from controlplane.messages import collect
    from govhost_node import message_spool
    monkeypatch.setattr(ms, "NODE", Layout.under(str(tmp_path / "n1")))
    spool = Spool(ms.NODE)
    for i in range(1, 31):
        unit = ("jiaoyu", "wenlv", "caizheng")[i % 3]
        spool.write("own" if i % 2 else "copies", {
            "number": f"JY-20261205-1-{i:06d}", "unit": unit, "node": "n1",
            "received": "2026-12-05T02:00:00Z", "subject": f"路灯 {i}", "text": "青水路的路灯坏了一周。",
            "name": "张先生", "contact": "13800138000", "token_hash": "0" * 64,
            "source": "a" * 64})
    wanted = "JY-20261205-1-000007"
    with open(os.path.join(spool.root, "own", "wenlv", wanted + ".json"), "rb") as f:
        record = json.load(f)
    spool.write("copies", record)              # held as both, as a node may
    forged = {**record, "unit": "caizheng", "subject": "伪造"}   # a copy misfiled or forged
    spool.write("copies", forged)
    loads = []
    real = message_spool.json.load
    monkeypatch.setattr(message_spool.json, "load", lambda f: loads.append(f.name) or real(f))
    capsys.readouterr()
    ms.main(["dump", "--number", wanted])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["number"], x["unit"], x["held_as"]) for x in lines] == [
        (wanted, "wenlv", "own"), (wanted, "caizheng", "copies"), (wanted, "wenlv", "copies")]
    assert len(loads) == 3
    merged = collect.merge({"n1": "\n".join(json.dumps(x) for x in lines)})
    assert [(m.number, m.differs) for m in merged] == [(wanted, True)]    # shown, flagged
    ms.main(["dump", "--number", "JY-20261205-1-000099"])
    assert capsys.readouterr().out == ""
    ms.main(["dump"])
    assert len(capsys.readouterr().out.splitlines()) == 32
    # a unit's list: its own folder in both spools, and a number forwarded to it
    loads.clear()
    ms.main(["dump", "--unit", "jiaoyu", "--number", wanted, "--number", wanted])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    mine = sorted(f"JY-20261205-1-{i:06d}" for i in range(3, 31, 3))
    assert sorted(x["number"] for x in lines if x["unit"] == "jiaoyu") == mine
    assert sorted((x["unit"], x["held_as"]) for x in lines if x["number"] == wanted) == [
        ("caizheng", "copies"), ("wenlv", "copies"), ("wenlv", "own")]
    assert len(loads) == len(lines) == len(mine) + 3          # nothing else read
    for hostile_unit in ("../own", "jiaoyu/..", "JIAOYU", "jiaoyu\u2028"):
        with pytest.raises(SystemExit) as exc:
            ms.main(["dump", "--unit", hostile_unit])
        assert exc.value.code == 2 and capsys.readouterr().out == ""
    for hostile in ("../own/wenlv/" + wanted, wanted + "/../../x", wanted + "\u2028",
                    "*", "JY-20261205-1-00000?"):
        loads.clear()
        with pytest.raises(SystemExit) as exc:
            ms.main(["dump", "--number", hostile])
        assert exc.value.code == 2 and loads == []
        assert capsys.readouterr().out == ""
        # the control machine refuses it before it opens a connection to a node
        county = SimpleNamespace(inv=SimpleNamespace(hosts=SimpleNamespace(nodes=[])))
        with pytest.raises(collect.MessagesError, match="no message"):
            collect.collect(county, hostile)


@pytest.fixture
def real_nodes(tmp_path, monkeypatch, capsys):
    """The example county whose nodes run govhost-messages' own main() on a spool each, as
    SSH would run it (SSH stands in): (county, node -> layout, the runs (node, args, stdin
    bytes), the nodes that act as an older govhost: argparse's refusal of an option)."""
    import io
    import sys

    from controlplane.core.county import County
    from controlplane.sites.content_sync import Link, SyncError
    from tests.helpers import example_inventory
    county = County(example_inventory(tmp_path / "inventory"))
    lays = {n.name: Layout.under(str(tmp_path / n.name)) for n in county.inv.hosts.nodes}
    runs, older = [], set()

    def run_each(self, names, *args, data=None, timeout=600, tool=""):
        out = {}
        for name in names:
            runs.append((name, args, len(data or b"")))
            if name in older and len(args) > 1:
                out[name] = SyncError(f"{args[0]} on {name}: usage: govhost-messages "
                                      f"[-h] ... error: unrecognized arguments: {args[1]}")
                continue
            monkeypatch.setattr(ms, "NODE", lays[name])
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data or b"")))
            capsys.readouterr()
            ms.main(list(args))
            out[name] = capsys.readouterr().out
        return out
    monkeypatch.setattr(Link, "run_each", run_each)
    return county, lays, runs, older


def test_a_units_list_and_a_page_are_read_through_the_nodes_real_command(real_nodes):
    """The control machine's collect() builds the command and its stdin; each node's is
    govhost-messages itself on a spool of its own (SSH stands in). A unit's list: its folder
    and the messages forwarded to it, named on stdin (thousands fit, past a command line's
    limit); a page: every copy of the number, a forged one in another folder shown as
    differing; a unit name no node could have a folder for asks nothing."""
    from controlplane.messages import collect
    county, lays, runs, _ = real_nodes
    spool = Spool(lays["n1"])

    def put(i, unit, kind="own", **change):
        record = {"number": f"JY-20261205-1-{i:06d}", "unit": unit, "node": "n1",
                  "received": "2026-12-05T02:00:00Z", "subject": f"路灯 {i}",
                  "text": "青水路的路灯坏了一周。", "name": "张先生", "contact": "13800138000",
                  "token_hash": "0" * 64, "source": "a" * 64, **change}
        spool.write(kind, record)
        return record["number"]
    mine = [put(i, "jiaoyu") for i in range(1, 6)]
    theirs = [put(i, "wenlv") for i in range(6, 12)]
    forwarded = theirs[:2]
    found, failed = collect.collect(county, unit="jiaoyu",
                                    placed=[("wenlv", n) for n in forwarded])
    assert failed == {} and sorted(m.number for m in found) == sorted(mine + forwarded)
    many = [("wenlv", f"JY-20261205-1-{i:06d}") for i in range(100, 6100)]
    found, _ = collect.collect(county, unit="chahe", placed=many + [("wenlv", theirs[3])])
    assert [m.number for m in found] == [theirs[3]]
    assert max(len(" ".join(args)) for _, args, _ in runs) < 200 and runs[-1][2] > 100_000
    # a forged copy of a jiaoyu message filed under caizheng, naming jiaoyu: shown, differing
    with open(os.path.join(spool.root, "own", "jiaoyu", mine[0] + ".json"), "rb") as f:
        record = json.load(f)
    d = os.path.join(spool.root, "copies", "caizheng")
    os.makedirs(d, mode=0o700)
    with open(os.path.join(d, mine[0] + ".json"), "w") as f:
        json.dump({**record, "subject": "伪造的主题"}, f, ensure_ascii=False)
    found, _ = collect.collect(county, number=mine[0])
    assert [(m.number, m.differs) for m in found] == [(mine[0], True)]
    runs.clear()
    assert collect.collect(county, unit="1zhong") == ([], {}) and runs == []


def _message(i: int, unit: str, day: str, **change) -> dict:
    return {"number": f"JY-{day.replace('-', '')}-1-{i:06d}", "unit": unit, "node": "n1",
            "received": f"{day}T02:00:00Z", "subject": f"路灯 {i}",
            "text": "青水路的路灯坏了一周。", "name": "张先生", "contact": "13800138000",
            "token_hash": "0" * 64, "source": "a" * 64, **change}


def test_the_hourly_read_and_forget_open_only_the_days_they_need(tmp_path, capsys, monkeypatch):
    """Found by the hunt (stop 66): the hourly reminder dumped, and the hourly `forget` read,
    every message a node holds (0.9 s and 0.63 s a node at 40,000, growing with spools never
    pruned). `dump --since DAY` opens the files of that day or later by the day in their
    names; `forget` reads the days from its last whole run's `before` (less two days) to the
    new one's (plus two). An old copy kept later with its contact makes the next run read everything."""
    from datetime import datetime, timedelta, timezone

    from govhost_node import message_spool
    monkeypatch.setattr(ms, "NODE", Layout.under(str(tmp_path / "n1")))
    spool = Spool(ms.NODE)
    today = datetime.now(timezone.utc).date()
    days = [(today - timedelta(days=d)).isoformat() for d in (400, 300, 200, 150, 10, 2, 0)]
    for i, day in enumerate(days, 1):
        spool.write("own", _message(i, ("jiaoyu", "wenlv")[i % 2], day))
    loads = []
    real = message_spool.json.load
    monkeypatch.setattr(message_spool.json, "load", lambda f: loads.append(f.name) or real(f))
    since = (today - timedelta(days=3)).strftime("%Y%m%d")
    capsys.readouterr()
    ms.main(["dump", "--since", since])
    got = [json.loads(x)["number"] for x in capsys.readouterr().out.splitlines()]
    assert sorted(got) == sorted(_message(i, "x", days[i - 1])["number"] for i in (6, 7))
    assert len(loads) == 2
    for hostile in ("2026120", "../../x", "20261205\u2028", "*"):
        with pytest.raises(SystemExit) as exc:
            ms.main(["dump", "--since", hostile])
        assert exc.value.code == 2 and capsys.readouterr().out == ""

    def before(days_ago):
        t = datetime.now(timezone.utc) - timedelta(days=days_ago)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    loads.clear()
    assert spool.forget_contacts(before(250)) == 2                 # 400 and 300 days
    assert len(loads) == 2          # no mark: every message up to two days past `before`
    loads.clear()
    assert spool.forget_contacts(before(180)) == 1                 # 200 days
    assert [os.path.basename(p)[3:11] for p in loads] == \
        [days[2].replace("-", "")]                                  # 250..178 days ago only
    loads.clear()
    assert spool.forget_contacts(before(180)) == 0 and loads == []   # the hour after
    # a peer's copy of a 350-day-old message, its contact not yet forgotten there
    late = _message(8, "wenlv", (today - timedelta(days=350)).isoformat())
    spool.write("copies", late)
    loads.clear()
    assert spool.forget_contacts(before(180)) == 1 and len(loads) == 4    # 400..200, 350
    held = [r for kind in ("own", "copies") for r in spool.records(kind)]
    assert sorted(r["number"] for r in held if r["contact"]) == sorted(
        _message(i, "x", days[i - 1])["number"] for i in (4, 5, 6, 7))
    # a damaged mark reads every message again, as with none
    with open(os.path.join(spool.root, "forgotten-before"), "w") as f:
        f.write("9999; rm -rf /")
    loads.clear()
    assert spool.forget_contacts(before(180)) == 0 and len(loads) == 4


def test_an_old_copy_written_during_a_forget_is_not_hidden_by_its_mark(tmp_path, monkeypatch):
    """The kept copy's write waits for a running `forget` (its lock) before it takes the mark
    away: a run that listed the folders before the copy came cannot leave its mark after,
    which would skip the copy's contact for good. The copy is written while the run is in
    its folders (held there until the writer is seen waiting or has finished)."""
    from datetime import datetime, timedelta, timezone
    spool = Spool(Layout.under(str(tmp_path / "n1")))
    today = datetime.now(timezone.utc).date()
    spool.write("own", _message(1, "jiaoyu", (today - timedelta(days=300)).isoformat()))
    cutoff = (datetime.now(timezone.utc) - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert spool.forget_contacts(cutoff) == 1                     # the mark is set
    later = (datetime.now(timezone.utc) - timedelta(days=150)).strftime("%Y-%m-%dT%H:%M:%SZ")
    late = _message(2, "wenlv", (today - timedelta(days=250)).isoformat())
    writer = threading.Thread(target=spool.write, args=("copies", late), daemon=True)
    real = Spool._forget_between
    blocked = []

    def between(self, *a):
        n = real(self, *a)                  # listed and read: the copy is not there yet
        writer.start()
        writer.join(2)
        blocked.append(writer.is_alive())   # waiting for this run's lock
        return n
    monkeypatch.setattr(Spool, "_forget_between", between)
    assert spool.forget_contacts(later) == 0          # the run moves its mark on, to `later`
    monkeypatch.undo()
    writer.join(30)
    assert blocked == [True] and not writer.is_alive()
    assert spool.forget_contacts(later) == 1                      # the copy, forgotten
    assert all(not r["contact"] for r in spool.records("copies"))


def test_a_mark_planted_ahead_or_a_copy_kept_again_after_a_crash_stops_nothing(tmp_path,
                                                                             monkeypatch):
    """Found by review: a well-formed mark later than any `forget` may name (planted, or set
    while the clock ran ahead) emptied every later run's window for good; and a crash
    between a kept copy's write and the mark's removal left the copy's contact for good, a
    retried `keep` (the same bytes) changing nothing. Now such a mark counts as none, and
    the mark goes before the copy is written, also when the same copy is there already."""
    from datetime import datetime, timedelta, timezone
    spool = Spool(Layout.under(str(tmp_path / "n1")))
    today = datetime.now(timezone.utc).date()
    old = _message(1, "jiaoyu", (today - timedelta(days=300)).isoformat())
    spool.write("own", old)
    cutoff = (datetime.now(timezone.utc) - timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    mark = os.path.join(spool.root, "forgotten-before")
    with open(mark, "w") as f:
        f.write("2099-01-01T00:00:00Z")
    assert spool.forget_contacts(cutoff) == 1
    assert open(mark).read() == cutoff
    # the crash: the copy on disk with its contact, the mark still there
    late = _message(2, "wenlv", (today - timedelta(days=250)).isoformat())
    real = Spool._forgotten_mark
    monkeypatch.setattr(Spool, "_forgotten_mark", lambda self, strict=True: "")
    spool.write("copies", late)                    # written as if no mark had to go
    monkeypatch.setattr(Spool, "_forgotten_mark", real)
    assert os.path.exists(mark)
    spool.write("copies", late)                    # `keep` tried again: the same bytes
    assert not os.path.exists(mark)
    assert spool.forget_contacts(cutoff) == 1


def test_a_message_taken_late_in_the_utc_day_is_forgotten_by_its_county_day(tmp_path):
    """A message's number carries the county's day (UTC+8): taken at 19:00 UTC it is the
    next day's. A `forget` whose `before` is 20:00 UTC that day must still open it (the
    window reaches past `before`'s day), and a record whose number's day is not that of
    its time is refused (the window finds messages by it)."""
    from datetime import datetime, timedelta, timezone

    from govhost_node.message_spool import check_record
    spool = Spool(Layout.under(str(tmp_path / "n1")))
    day = datetime.now(timezone.utc).date() - timedelta(days=300)
    taken = _message(1, "jiaoyu", day.isoformat())
    taken = {**taken, "received": f"{day.isoformat()}T19:00:00Z",
             "number": f"JY-{(day + timedelta(days=1)):%Y%m%d}-1-000001"}
    spool.write("own", taken)
    assert spool.forget_contacts(f"{day.isoformat()}T20:00:00Z") == 1
    for wrong in (day + timedelta(days=2), day - timedelta(days=2), day.replace(year=2020)):
        with pytest.raises(ValueError, match="not of the day"):
            check_record({**taken, "number": f"JY-{wrong:%Y%m%d}-1-000001"})


def test_the_reminders_read_and_an_older_node_through_the_real_command(real_nodes):
    """collect(since=DAY) sends `dump --since DAY` and each node gives the messages of those
    days; a node on an older govhost refuses the option and is read whole, narrowed on the
    control machine, for a day's read as for a page and a unit's list."""
    from controlplane.messages import collect
    county, lays, runs, older = real_nodes
    spool = Spool(lays["n1"])
    for i, day in enumerate(("2026-11-01", "2026-12-03", "2026-12-05"), 1):
        spool.write("own", _message(i, ("jiaoyu", "wenlv")[i % 2], day))
    wanted = sorted(_message(i, "x", d)["number"] for i, d in ((2, "2026-12-03"),
                                                               (3, "2026-12-05")))
    found, failed = collect.collect(county, since="20261202")
    assert failed == {} and sorted(m.number for m in found) == wanted
    assert {args for _, args, _ in runs} == {("dump", "--since", "20261202")}
    older.add("n1")
    runs.clear()
    found, failed = collect.collect(county, since="20261202")
    assert failed == {} and sorted(m.number for m in found) == wanted
    assert ("n1", ("dump",), 0) in runs
    number = _message(1, "x", "2026-11-01")["number"]
    assert [m.number for m in collect.collect(county, number=number)[0]] == [number]
    assert sorted(m.number for m in collect.collect(county, unit="wenlv")[0]) == \
        sorted([number, wanted[1]])
    assert [m.number for m in collect.collect(county, unit="chahe", placed=[
        ("jiaoyu", wanted[0]), ("wenlv", wanted[0])])[0]] == [wanted[0]]
    for bad in ("2026120", "20261202; x"):
        with pytest.raises(ValueError):
            collect.collect(county, since=bad)
