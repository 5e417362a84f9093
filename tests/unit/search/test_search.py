"""The county search without a server: the county's words, page records, and the index the
nodes answer from (the same class), with real jieba and SQLite FTS5."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.core import inventory
from controlplane.search import dictionary, pages
from govhost_node import search as node_search

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    return inventory.load(REPO / "inventory", tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def words(inv):
    w = dictionary.words(inv)
    node_search.load_words(w)
    return w


def page(title: str, body: str, date: str | None = None) -> bytes:
    meta = f'<meta name="PubDate" content="{date}">' if date else ""
    return (f"<html><head><title>{title}</title>{meta}</head><body><h1>{title}</h1>"
            f"<p>{body}</p><script>var hidden = '不应被索引';</script></body></html>").encode()


@pytest.fixture
def index(tmp_path, words):
    idx = node_search.Index(str(tmp_path / "index.db"))
    idx.apply({"words": words})

    def put(unit, path, data, release="r1", base=None):
        rec = pages.record(f"{unit}.qingshui.gov.cn", path, f"d-{path}-{release}", data,
                           node_search.segment)
        return idx.apply({"tenant": unit, "title": unit, "release": release, "base": base,
                          "drop": [], "put": [rec]})
    idx.put = put
    yield idx
    idx.close()


def test_the_countys_names_and_places_are_words(words):
    assert {"青水县", "茶河镇", "青水县教育局", "茶河镇人民政府"} <= set(words)
    assert "教育局" in words                          # the institution without the place


def test_page_records_take_title_date_and_visible_text():
    rec = pages.record("jiaoyu.qingshui.gov.cn", "news/index.html", "abc",
                       page("通知", "2026年11月3日 全县会议", None), node_search.segment)
    assert rec["url"] == "//jiaoyu.qingshui.gov.cn/news/"
    assert rec["title"] == "通知" and rec["date"] == "2026-11-03"
    assert "不应被索引" not in rec["body"]
    assert pages.record("x", "a.pdf", "d", b"%PDF", node_search.segment) is None


def test_words_not_characters(index):
    index.put("jiaoyu", "a.html", page("经验交流", "茶河镇中心小学介绍经验"))
    assert index.search("茶河镇")["total"] == 1
    assert index.search("镇中")["total"] == 0           # characters across two words
    assert index.search("中心小学")["total"] == 1


def test_a_units_search_is_its_own_and_dates_sort(index):
    index.put("jiaoyu", "a.html", page("教育通知", "茶河镇学校开学", "2026-09-01"))
    index.put("chahe", "b.html", page("镇政府通知", "茶河镇秋收", "2026-11-01"))
    assert {r["unit"] for r in index.search("茶河镇")["results"]} == {"jiaoyu", "chahe"}
    assert [r["unit"] for r in index.search("茶河镇", "jiaoyu")["results"]] == ["jiaoyu"]
    assert [r["date"] for r in index.search("茶河镇", sort="date")["results"]] == [
        "2026-11-01", "2026-09-01"]


def test_highlights_are_escaped(index):
    index.put("jiaoyu", "x.html", page("通知", "关于 &lt;script&gt;alert(1)&lt;/script&gt; 茶河镇"))
    [r] = index.search("茶河镇")["results"]
    assert "<mark>茶河镇</mark>" in r["excerpt_html"]
    assert "script>" not in r["excerpt_html"].replace("script&gt;", "")
    assert "&lt;/script&gt;" in r["excerpt_html"]
    html = node_search.render(index.search("<script>茶河镇"), "全县", "relevance")
    assert "<script>茶河镇" not in html


def test_changes_apply_only_on_their_base_and_a_unit_can_be_sent_whole(index, tmp_path):
    assert index.put("jiaoyu", "a.html", page("通知", "第一版 茶河镇"), "r1", None)
    assert not index.put("jiaoyu", "a.html", page("通知", "第三版"), "r3", "r2")   # missed r2
    assert index.releases() == {"jiaoyu": "r1"}
    whole = index.export("jiaoyu")
    other = node_search.Index(str(tmp_path / "node.db"))
    assert other.apply(whole) and other.releases() == {"jiaoyu": "r1"}
    assert other.search("茶河镇")["total"] == 1
    assert other.apply({"tenant": "jiaoyu", "remove": True})
    assert other.search("茶河镇")["total"] == 0 and other.releases() == {}
    other.close()


def test_queries_cannot_inject_fts_syntax(index):
    index.put("jiaoyu", "a.html", page("通知", "茶河镇"))
    for q in ['"', 'NEAR(a b)', "茶河镇 OR *", "a:b", "'; DROP TABLE pages; --", "(((", ""]:
        res = index.search(q)
        assert res["total"] >= 0
    assert index.search("茶河镇")["total"] == 1


def test_the_server_follows_a_replaced_index_file(index, tmp_path):
    index.put("jiaoyu", "a.html", page("通知", "茶河镇"))
    served = node_search.Served(str(tmp_path / "index.db"))
    with served.get() as a, served.get() as b:      # two requests at once: two connections
        assert a is not b and a.search("茶河镇")["total"] == 1 == b.search("茶河镇")["total"]
    with served.get() as again:
        assert again in (a, b)                      # reused, not opened per request
    for f in tmp_path.glob("index.db*"):
        f.unlink()                                  # the node's index is lost
    with served.get() as fresh:
        assert fresh not in (a, b)
        assert fresh.search("茶河镇")["total"] == 0 and fresh.releases() == {}


def test_an_index_of_another_version_is_rebuilt_empty(tmp_path):
    import sqlite3
    db = sqlite3.connect(str(tmp_path / "old.db"))
    db.executescript("CREATE TABLE units (tenant TEXT, release TEXT, title TEXT); "
                     "INSERT INTO units VALUES ('jiaoyu', 'r1', 'x'); PRAGMA user_version = 1;")
    db.close()
    idx = node_search.Index(str(tmp_path / "old.db"))
    assert idx.releases() == {}                     # so the next sync sends every unit whole
    idx.close()


def test_answers_are_cached_until_the_index_changes(index, tmp_path):
    index.put("jiaoyu", "a.html", page("通知", "茶河镇"), "r1", None)
    served = node_search.Served(str(tmp_path / "index.db"))
    first, _ = served.answer("茶河镇", None, "relevance", 1)
    again, _ = served.answer("茶河镇", None, "relevance", 1)
    assert first is again and first["total"] == 1                  # from the cache
    index.put("jiaoyu", "b.html", page("通知二", "茶河镇"), "r2", "r1")
    changed, _ = served.answer("茶河镇", None, "relevance", 1)
    assert changed["total"] == 2                                     # the index changed


def test_a_word_on_many_pages_is_counted_and_ranked_within_bounds(index, monkeypatch):
    """What one query costs is bounded (issue 37): matches are counted up to COUNTED and
    ordered among the WINDOW most recently indexed matching pages, every result a visitor can
    page to; a word on fewer pages than that is answered exactly, as before."""
    monkeypatch.setattr(node_search, "PER_PAGE", 2)
    monkeypatch.setattr(node_search, "MAX_PAGE", 3)
    monkeypatch.setattr(node_search, "WINDOW", 6)
    monkeypatch.setattr(node_search, "COUNTED", 12)
    release = None
    for i in range(15):              # indexed one after another: page 14 is the newest
        words = "通知 " * (15 - i)   # the oldest pages have the word most often
        rec_release = f"r{i}"
        index.put("jiaoyu", f"p{i}.html", page(f"第{i}号", words + ("茶河镇" if i < 3 else "")),
                  rec_release, release)
        release = rec_release
    res = index.search("通知")
    assert res["total"] == 12 and res["more"] and res["ranked"] == 6
    seen = [r["url"] for p in (1, 2, 3) for r in index.search("通知", page=p)["results"]]
    newest = {f"//jiaoyu.qingshui.gov.cn/p{i}.html" for i in range(9, 15)}
    assert set(seen) == newest and len(seen) == 6
    assert index.search("通知", page=4)["results"] == index.search("通知", page=3)["results"]
    # ranked among those six: the one with the word most often first
    assert seen[0] == "//jiaoyu.qingshui.gov.cn/p9.html"
    # by date, among the COUNTED most recently indexed: a unit sent whole again (its old pages
    # indexed anew) does not push a newer page out of reach
    by_date = index.search("通知", sort="date")
    assert by_date["ranked"] == 12 and [r["url"] for r in by_date["results"]] == \
        ["//jiaoyu.qingshui.gov.cn/p14.html", "//jiaoyu.qingshui.gov.cn/p13.html"]
    html_page = node_search.render(res, "全县", "relevance")
    assert "超过 12" in html_page and "最近收录的 6 条" in html_page
    rare = index.search("茶河镇")                         # on 3 old pages only: exact
    assert rare["total"] == 3 and not rare["more"] and rare["ranked"] == 3
    assert {r["url"] for p in (1, 2) for r in index.search("茶河镇", page=p)["results"]} == \
        {f"//jiaoyu.qingshui.gov.cn/p{i}.html" for i in range(3)}
    last = node_search.render(index.search("通知", page=3), "全县", "relevance")
    assert "下一页" not in last                            # no page past the window


def test_the_same_query_asked_at_once_is_computed_once(index, tmp_path, monkeypatch):
    import threading
    import time

    index.put("jiaoyu", "a.html", page("通知", "茶河镇"), "r1", None)
    served = node_search.Served(str(tmp_path / "index.db"))
    calls = []
    real = node_search.Index.rank

    def slow(self, *args, **kw):
        calls.append(args)
        time.sleep(0.3)              # a common word's ranking, long enough for all to ask
        return real(self, *args, **kw)

    monkeypatch.setattr(node_search.Index, "rank", slow)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        served.answer("茶河镇", None, "relevance", 1)[0])) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(answers) == 8
    assert all(a is answers[0] and a["total"] == 1 for a in answers)
    assert served.running == {}
    # a query whose computation failed leaves nothing waiting, and is computed again
    monkeypatch.setattr(node_search.Index, "rank", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        served.answer("别的", None, "relevance", 1)
    assert served.running == {}


def test_by_date_a_newer_page_is_not_pushed_out_by_old_pages_indexed_after_it(index,
                                                                               monkeypatch):
    """The review's case: a unit sent whole again puts its old pages on top of the index; by
    date, the newest page must still come first."""
    monkeypatch.setattr(node_search, "PER_PAGE", 2)
    monkeypatch.setattr(node_search, "WINDOW", 3)
    monkeypatch.setattr(node_search, "COUNTED", 10)
    index.put("jiaoyu", "new.html", page("新通知", "通知", "2026-12-05"), "r0", None)
    base = "r0"
    for i in range(6):
        index.put("jiaoyu", f"old{i}.html", page(f"旧{i}", "通知", f"2020-01-0{i + 1}"),
                  f"r{i + 1}", base)
        base = f"r{i + 1}"
    first = index.search("通知", sort="date")["results"][0]
    assert first["url"] == "//jiaoyu.qingshui.gov.cn/new.html" and first["date"] == "2026-12-05"


def test_one_answer_serves_every_spelling_of_a_query(index, tmp_path, monkeypatch):
    index.put("jiaoyu", "a.html", page("通知", "茶河镇"), "r1", None)
    served = node_search.Served(str(tmp_path / "index.db"))
    calls = []
    real = node_search.Index.rank
    monkeypatch.setattr(node_search.Index, "rank",
                        lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    one, _ = served.answer("茶河镇", None, "relevance", 1)
    other, _ = served.answer("  茶河镇! ", None, "relevance", 1)
    assert len(calls) == 1 and other["total"] == one["total"] == 1
    assert one["query"] == "茶河镇" and other["query"] == "  茶河镇! "
    assert "  茶河镇! " in node_search.render(other, "全县", "relevance").replace("&#x27;", "'")


def test_every_page_of_a_query_is_a_slice_of_one_ranking(index, tmp_path, monkeypatch):
    """Paging on costs no second ranking: the server ranks a query once and answers each of
    its pages from that order, the same pages in the same order as ranking each page on its
    own, none twice and none left out, by relevance and by date."""
    monkeypatch.setattr(node_search, "PER_PAGE", 3)
    for i in range(11):
        index.put(f"u{i}", "a.html", page(f"通知 {i}", "通知 " * (i + 1), f"2026-01-{i + 10}"),
                  "r1", None)
    served = node_search.Served(str(tmp_path / "index.db"))
    calls = []
    real = node_search.Index.rank
    monkeypatch.setattr(node_search.Index, "rank",
                        lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    for sort in ("relevance", "date"):
        pages = [served.answer("通知", None, sort, n)[0] for n in range(1, 6)]
        urls = [r["url"] for p in pages for r in p["results"]]
        assert len(urls) == len(set(urls)) == 11
        order = ("ORDER BY f.rank" if sort == "relevance"
                 else "ORDER BY p.date IS NULL, p.date DESC, p.id DESC")
        every = [u for (u,) in index.db.execute(
            "SELECT p.url FROM fts f JOIN pages p ON p.id = f.rowid WHERE fts MATCH "
            f"'{{seg_title seg_body}} : (\"通知\")' {order}")]
        assert urls == every
        assert all(p["total"] == 11 for p in pages)
    assert len(calls) == 2               # one ranking for each order, five pages each
    dates = [r["date"] for n in range(1, 5)
             for r in served.answer("通知", None, "date", n)[0]["results"]]
    assert dates == sorted(dates, reverse=True)


def _server(db: Path, workers: int):
    """The real `govhost-search serve` on a free loopback port, with `workers` processes:
    (process, port). The caller ends it."""
    import os
    import subprocess
    import sys

    from tests.helpers import free_port
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "govhost_node" / "search.py"), "serve", "--listen",
         f"127.0.0.1:{port}", "--db", str(db), "--workers", str(workers)],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    return proc, port


def _connected(port: int):
    """A socket to the server once it answers (jieba's dictionary first: up to 30 s)."""
    import socket
    import time
    for _ in range(300):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the search server never answered")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_server_answers_in_workers_over_kept_connections_and_ends_with_its_parent(
        index, tmp_path):
    """The real server, two worker processes on one socket: searches on one connection kept
    open, each answered (with its length, so the next can follow), from either worker; and
    stopping the service's main process stops the other worker with it (no orphan left
    answering from an old index)."""
    import http.client
    import signal
    import time
    from urllib.parse import quote

    index.put("jiaoyu", "a.html", page("茶河镇通知", "茶河镇"))
    proc, port = _server(tmp_path / "index.db", 2)
    try:
        _connected(port).close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/search?format=json&q=" + quote("茶河镇"))
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("Content-Length")
        assert json.loads(first.read())["total"] == 1
        sock = conn.sock
        for q in ("通知", "茶河镇", "没有的词"):           # the same connection, kept open
            conn.request("GET", "/search?format=json&q=" + quote(q))
            r = conn.getresponse()
            assert r.status == 200 and "total" in json.loads(r.read())
        assert conn.sock is sock
        conn.close()
        workers = _children(proc.pid)
        assert len(workers) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        for _ in range(100):
            if not any(_running(w) for w in workers):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker {workers} outlived its parent")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_body_sent_with_a_search_is_never_read_as_the_next_request(index, tmp_path):
    """The reviewer's attack: a GET whose body is the start of a second request (another
    unit, another query). On a connection kept open it would be answered as a request of
    its own, and its answer given to the next visitor whose search nginx sends on that
    connection. The server refuses a search with a body and closes the connection."""
    from urllib.parse import quote

    index.put("jiaoyu", "a.html", page("茶河镇通知", "茶河镇"))
    index.put("secret", "b.html", page("内部通知", "内部"))
    proc, port = _server(tmp_path / "index.db", 1)
    try:
        smuggled = (f"GET /search?format=json&q={quote('内部')} HTTP/1.1\r\nHost: x\r\n"
                    "X-Govhost-Unit: secret\r\nX-Pad: ").encode()
        first = (f"GET /search?format=json&q={quote('茶河镇')} HTTP/1.1\r\nHost: x\r\n"
                 f"X-Govhost-Unit: jiaoyu\r\nContent-Length: {len(smuggled)}\r\n\r\n").encode()
        s = _connected(port)
        s.sendall(first + smuggled)
        # the next visitor's search, on the same connection
        s.sendall(f"GET /search?format=json&q={quote('茶河镇')} HTTP/1.1\r\nHost: x\r\n"
                  "X-Govhost-Unit: jiaoyu\r\n\r\n".encode())
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
        assert got.startswith(b"HTTP/1.1 400") and got.count(b"HTTP/1.1 ") == 1
        assert "内部".encode() not in got and b"secret" not in got
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_units_search_never_shows_a_page_its_ranking_did_not_hold(index):
    """Between a ranking and a page of it an apply may remove a unit's page and give its id
    to another unit's new page: the unit's search leaves it out."""
    index.put("old-unit", "a.html", page("通知 一", "通知"))
    ranking = index.rank("通知", "old-unit")
    assert len(ranking.ids) == 1
    index.apply({"tenant": "old-unit", "remove": True})
    index.put("other", "z.html", page("通知 三", "other unit"))
    assert index.db.execute("SELECT tenant FROM pages WHERE id = ?",
                            (ranking.ids[0],)).fetchone() == ("other",)   # the id reused
    assert index.page_of(ranking, 1)["results"] == []


def test_answers_are_taken_in_turn_in_the_order_asked():
    """The server's threads take their turn first come, first answered (the interpreter's
    own lock goes to whichever thread is woken: a search could lose that draw many times
    over). Ten threads queued one after another behind a held turn enter in that order; a
    failure inside the turn passes it on."""
    import threading
    import time

    turn = node_search.Turn()
    entered: list[int] = []

    def ask(i: int) -> None:
        with turn:
            entered.append(i)
            if i == 3:
                raise RuntimeError("an answer that failed")

    def run(i: int) -> None:
        try:
            ask(i)
        except RuntimeError:
            pass

    threads = []
    with turn:
        for i in range(10):
            t = threading.Thread(target=run, args=(i,), daemon=True)
            t.start()
            threads.append(t)
            deadline = time.monotonic() + 10
            while len(turn._waiting) < i + 1:          # this one waits before the next asks
                assert time.monotonic() < deadline, f"thread {i} never queued"
                time.sleep(0.001)
        assert entered == []                           # nobody enters while it is held
    for t in threads:
        t.join(10)
    assert entered == list(range(10))
    with turn:                                         # free again after the last
        pass
    assert turn._held is False and not turn._waiting


def test_a_costly_ranking_steps_out_of_the_line_and_back_in_at_its_end():
    """A thread ranking a query goes `aside`: the thread queued behind it answers meanwhile,
    and the ranking thread comes back at the end of the line, behind whoever queued while it
    was away and ahead of whoever came after it. A caller that never took the turn (the
    tests, the console) goes aside without touching it."""
    import threading
    import time

    turn = node_search.Turn()
    order: list[str] = []
    away, c_holds, d_go = threading.Event(), threading.Event(), threading.Event()

    def wait_queued(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(turn._waiting) < n:
            assert time.monotonic() < deadline, f"never {n} queued"
            time.sleep(0.001)

    def costly() -> None:
        with turn:
            order.append("costly asks")
            with turn.aside():
                away.set()
                assert c_holds.wait(10)
                order.append("costly ranked")
            order.append("costly answers")

    def c() -> None:
        assert away.wait(10)
        with turn:                           # took the line while the ranking was away
            order.append("c answers")
            c_holds.set()
            wait_queued(1)                   # the ranking is back, behind c
            d_go.set()
            wait_queued(2)                   # d behind the ranking

    def d() -> None:
        assert d_go.wait(10)
        with turn:
            order.append("d answers")

    threads = [threading.Thread(target=f, daemon=True) for f in (costly, c, d)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["costly asks", "c answers", "costly ranked", "costly answers",
                     "d answers"]
    with turn.aside():                     # not in the line: nothing to step out of
        assert turn._held is False


def test_the_servers_threads_in_turn_wait_for_a_ranking_out_of_the_line(index, tmp_path,
                                                                          monkeypatch):
    """As the server runs it: every thread answers inside the turn. Four ask the same
    uncached word whose ranking is slow (one ranks, three wait for it) and one asks a cached
    word meanwhile. The cached answer is not held up by the ranking, and nobody waits the 30
    seconds a thread waiting in the line for a ranking that needs the line would cost."""
    import threading
    import time

    index.put("jiaoyu", "a.html", page("通知", "茶河镇 龙潭镇"), "r1", None)
    served = node_search.Served(str(tmp_path / "index.db"))
    served.answer("龙潭镇", None, "relevance", 1)                   # cached
    real = node_search.Index.rank
    ranking = threading.Event()

    def slow(self, *args, **kw):
        ranking.set()
        time.sleep(1.0)
        return real(self, *args, **kw)

    monkeypatch.setattr(node_search.Index, "rank", slow)
    done: dict[str, float] = {}
    t0 = time.monotonic()

    def ask(name: str, q: str) -> None:
        with served.turn:
            served.answer(q, None, "relevance", 1)
        done[name] = time.monotonic() - t0

    slow_ones = [threading.Thread(target=ask, args=(f"slow{i}", "茶河镇"), daemon=True)
                 for i in range(4)]
    for t in slow_ones:
        t.start()
    assert ranking.wait(10)
    cheap = threading.Thread(target=ask, args=("cheap", "龙潭镇"), daemon=True)
    cheap.start()
    for t in [*slow_ones, cheap]:
        t.join(15)
    assert len(done) == 5, done
    assert done["cheap"] < min(done[f"slow{i}"] for i in range(4)), done
    assert max(done.values()) < 10, done                # not a 30 s stall


def test_an_answer_reads_a_bounded_part_of_pages_of_megabytes(index, tmp_path):
    """A unit may publish pages of megabytes (a title of 0.6 MB, a body of 3 MB): an answer
    reads TITLE_READ characters of the title and BODY_READ of the text, so ten such pages
    make a small answer, and a word near the top still gets its excerpt."""
    import json

    recs = [pages.record("jiaoyu.qingshui.gov.cn", f"big{i}.html", f"d{i}",
                         page("茶河镇" + "标" * 200_000, "茶河镇 开头 " + "字" * 1_000_000),
                         # jieba would take a minute over 40 MB: the index needs the words
                         lambda text: "茶河镇 开头") for i in range(10)]
    assert index.apply({"tenant": "jiaoyu", "title": "jiaoyu", "release": "r1", "base": None,
                        "drop": [], "put": recs})
    served = node_search.Served(str(tmp_path / "index.db"))
    with served.turn:
        res, _ = served.answer("茶河镇", None, "relevance", 1)
    assert len(res["results"]) == 10
    for r in res["results"]:
        assert len(r["title"]) == node_search.TITLE_READ
        assert "<mark>茶河镇</mark>" in r["title_html"] and "<mark>茶河镇</mark>" in r["excerpt_html"]
    assert len(json.dumps(res, ensure_ascii=False)) < 50_000


def test_a_word_far_into_a_long_page_still_gets_its_excerpt(index, tmp_path):
    """The excerpt is read from just before the first of the query's words, wherever it is
    (a reviewer: cut at the page's start, a word at character 25,000 showed no excerpt),
    with an ellipsis on each side the page goes on; found in any letter case."""
    long_page = "字" * 25_000 + " 茶河镇 召开会议 " + "文" * 5_000
    end_page = "字" * 25_000 + " 茶河镇 结束"
    latin = "字" * 3_000 + " The GDP report "
    recs = [pages.record("jiaoyu.qingshui.gov.cn", path, path, page("标题", text),
                         lambda text: "茶河镇 gdp")
            for path, text in (("long.html", long_page), ("end.html", end_page),
                               ("latin.html", latin))]
    assert index.apply({"tenant": "jiaoyu", "title": "jiaoyu", "release": "r1", "base": None,
                        "drop": [], "put": recs})
    served = node_search.Served(str(tmp_path / "index.db"))
    res, _ = served.answer("茶河镇", None, "relevance", 1)
    by = {r["url"].rsplit("/", 1)[-1]: r["excerpt_html"] for r in res["results"]}
    assert "<mark>茶河镇</mark>" in by["long.html"] and "召开会议" in by["long.html"]
    assert by["long.html"].startswith("…") and by["long.html"].endswith("…")
    assert "<mark>茶河镇</mark> 结束" in by["end.html"] and not by["end.html"].endswith("…")
    res, _ = served.answer("gdp", None, "relevance", 1)
    by = {r["url"].rsplit("/", 1)[-1]: r["excerpt_html"] for r in res["results"]}
    assert "<mark>GDP</mark> report" in by["latin.html"] and by["latin.html"].startswith("…")
