"""govhost-search: the county's site search, answered by every node from its own index.

The index is SQLite with FTS5 over text segmented into words (jieba, with the county's own
place and institution names in its dictionary), so 青水县 and 茶河镇 are found as words and a
two-character word is found as a word, not as any two characters. The control plane reads
the published pages, segments them and sends each node the pages that changed; a node applies
a change only on top of the release it was computed from, and says what it holds so the
control plane can send a whole unit again when a node missed a change (it was down).

    govhost-search apply          JSON lines on stdin (changes); prints what it holds
    govhost-search load           the master index whole on stdin (a node that lacks
                                  most units: a new or replaced one); prints what it holds
    govhost-search state          prints what it holds: {unit: live release}
    govhost-search serve --listen ADDR:PORT [--workers N]
                                  answers /search?q=...&sort=date|relevance&page=N; nginx sets
                                  X-Govhost-Unit on a unit's site so its search is its own

The same `Index` class is the control plane's master copy (it is imported from there), so the
two cannot differ in schema or in how a query is read. Only the standard library and jieba
(Debian's python3-jieba), which only `serve` needs.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import html
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

from govhost_node.files import sweep
from govhost_node.layout import NODE
from govhost_node.system import end_with_parent

DB = f"{NODE.state}/search/index.db"
PER_PAGE = 10
MAX_PAGE = 100
# What one query may cost, whatever it asks: its matches are counted up to COUNTED, and
# ranked (or sorted by date) among the WINDOW most recently indexed pages that match, which
# is every result a visitor can page to. A rare word's matches are all inside both, so its
# answer is exact; a word on half the county's pages cost ranking every one of them (about
# 2 µs a page: a second of CPU per query on a county of 60,000 pages under load) and now costs
# ranking a thousand.
COUNTED = 10_000
WINDOW = PER_PAGE * MAX_PAGE
MAX_QUERY = 100
MMAP_BYTES = 1 << 30
EXCERPT = 70
# What an answer reads of a page: its title up to TITLE_READ characters, and BODY_READ
# characters of its text from just before the first of the query's words (SQLite finds it),
# for the excerpt. A unit may publish pages of megabytes (a 5 MiB title, a body of one
# line); read whole, ten of them made one answer of 95 MiB and a second of work in the
# worker's line (a reviewer, stop 62).
TITLE_READ = 200
BODY_READ = 1_000

# Bumped when the tables change: an index of another version is dropped and rebuilt (the node
# then reports holding nothing, and the next sync sends every unit whole).
VERSION = 4
# The segmented text is kept once, in `pages` (the full-text index's external content).
# (detail=column would make the index a third smaller but ranking 15 to 20 times slower.)
SCHEMA = """
CREATE TABLE IF NOT EXISTS units (tenant TEXT PRIMARY KEY, release TEXT, title TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, path TEXT NOT NULL, digest TEXT NOT NULL,
    url TEXT NOT NULL, title TEXT NOT NULL, date TEXT, body TEXT NOT NULL,
    seg_title TEXT NOT NULL, seg_body TEXT NOT NULL, unit_tok TEXT NOT NULL,
    UNIQUE (tenant, path));
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(seg_title, seg_body, unit_tok, date UNINDEXED,
    content='pages', content_rowid='id', tokenize='unicode61');
CREATE TABLE IF NOT EXISTS words (word TEXT PRIMARY KEY);
"""
_FTS_COLS = "seg_title, seg_body, unit_tok, date"
_SPACE = re.compile(r"\s+")


def segment(text: str) -> str:
    """Words separated by spaces, as FTS5's unicode61 tokenizer then reads them."""
    import jieba
    return " ".join(w for w in jieba.cut_for_search(text) if w.strip())


class Index:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # Pages read from the file's mapping, not copied into each connection's own cache:
        # every worker and connection shares the system's (the two-word queries, ranked
        # anew each time, ran 1.17x as many a second).
        self.db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        if self.db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
            self.db.executescript("DROP TABLE IF EXISTS fts; DROP TABLE IF EXISTS pages; "
                                  "DROP TABLE IF EXISTS units; DROP TABLE IF EXISTS words;")
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version = {VERSION}")

    def close(self) -> None:
        self.db.close()

    def releases(self) -> dict[str, str | None]:
        return dict(self.db.execute("SELECT tenant, release FROM units"))

    def digests(self, tenant: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, digest FROM pages WHERE tenant = ?",
                                    (tenant,)))

    def words(self) -> list[str]:
        return [w for (w,) in self.db.execute("SELECT word FROM words ORDER BY word")]

    def apply(self, change: dict[str, Any]) -> bool:
        """One change in one transaction; False (nothing done) when it was computed from a
        release this index does not hold (the sender then sends the whole unit)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if "words" in change:
                db.execute("DELETE FROM words")
                db.executemany("INSERT OR IGNORE INTO words VALUES (?)",
                               [(w,) for w in change["words"]])
                db.execute("COMMIT")
                return True
            t = change["tenant"]
            held = db.execute("SELECT release FROM units WHERE tenant = ?", (t,)).fetchone()
            if change.get("full") or change.get("remove"):
                for (rid,) in db.execute("SELECT id FROM pages WHERE tenant = ?", (t,)).fetchall():
                    self._unindex(rid)
                db.execute("DELETE FROM pages WHERE tenant = ?", (t,))
                db.execute("DELETE FROM units WHERE tenant = ?", (t,))
                if change.get("remove"):
                    db.execute("COMMIT")
                    return True
            elif (held[0] if held else None) != change.get("base"):
                db.execute("ROLLBACK")
                return False
            for path in change.get("drop", []):
                self._drop_page(t, path)
            for p in change.get("put", []):
                self._drop_page(t, p["path"])
                cur = db.execute(
                    "INSERT INTO pages (tenant, path, digest, url, title, date, body, seg_title,"
                    " seg_body, unit_tok) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (t, p["path"], p["digest"], p["url"], p["title"], p.get("date"), p["body"],
                     p["seg_title"], p["seg_body"], unit_token(t)))
                db.execute(f"INSERT INTO fts (rowid, {_FTS_COLS}) SELECT id, {_FTS_COLS} "
                           "FROM pages WHERE id = ?", (cur.lastrowid,))
            db.execute("INSERT OR REPLACE INTO units VALUES (?, ?, ?)",
                       (t, change.get("release"), change.get("title", t)))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return True

    def _drop_page(self, tenant: str, path: str) -> None:
        row = self.db.execute("SELECT id FROM pages WHERE tenant = ? AND path = ?",
                              (tenant, path)).fetchone()
        if row:
            self._unindex(row[0])
            self.db.execute("DELETE FROM pages WHERE id = ?", row)

    def _unindex(self, rowid: int) -> None:
        """Take a page out of the full-text index (external content: with the values it was
        indexed with, before its row goes)."""
        self.db.execute(f"INSERT INTO fts (fts, rowid, {_FTS_COLS}) SELECT 'delete', id, "
                        f"{_FTS_COLS} FROM pages WHERE id = ?", (rowid,))

    def export(self, tenant: str) -> dict[str, Any] | None:
        """The whole unit as one change (for a node that missed one)."""
        unit = self.db.execute("SELECT release, title FROM units WHERE tenant = ?",
                               (tenant,)).fetchone()
        if unit is None:
            return None
        put = [{"path": path, "digest": d, "url": url, "title": title, "date": date,
                "body": body, "seg_title": st, "seg_body": sb}
               for path, d, url, title, date, body, st, sb in self.db.execute(
                   "SELECT path, digest, url, title, date, body, seg_title, seg_body "
                   "FROM pages WHERE tenant = ?", (tenant,))]
        return {"tenant": tenant, "release": unit[0], "title": unit[1], "full": True,
                "put": put}

    def search(self, query: str, unit: str | None = None, sort: str = "relevance",
               page: int = 1) -> dict[str, Any]:
        return self.page_of(self.rank(query, unit, sort), page)

    def rank(self, query: str, unit: str | None = None,
             sort: str = "relevance") -> "Ranking":
        """Every result a visitor can page to, in order (at most MAX_PAGE pages): the costly
        part of a query (its matches counted, then ranked or sorted by date), done once for
        all of its pages."""
        terms = query_terms(query)
        # Each term one word (as indexed), quoted: nothing a visitor types is FTS syntax.
        words = [w for t in terms for w in re.split(r"[\W_]+", t) if w]
        if not words:
            return Ranking(query, terms, unit, 0, 0, array("q"))
        match = "{seg_title seg_body} : (" + " AND ".join(f'"{w}"' for w in words) + ")"
        if unit:
            # The unit is a word of its row: the filter is part of the full-text match, not a
            # scan of every page that has the words.
            match = f"({match}) AND unit_tok:{unit_token(unit)}"
        # One read transaction: the count, the window and the order see the same index, even
        # while an apply commits beside them.
        self.db.execute("BEGIN")
        try:
            total = self.db.execute("SELECT count(*) FROM (SELECT rowid FROM fts WHERE fts "
                                    "MATCH ? LIMIT ?)", (match, COUNTED + 1)).fetchone()[0]
            # A page indexed later has a higher rowid (a changed page is a new row). By
            # relevance, the window is the WINDOW most recently indexed matches; by date, the
            # COUNTED most recently indexed, so that a unit sent whole again (its old pages
            # indexed anew) does not push a newer page out of the dates a visitor pages to.
            window = COUNTED if sort == "date" else WINDOW
            floor = 0
            if total > window:
                floor = self.db.execute(
                    "SELECT min(rowid) FROM (SELECT rowid FROM fts WHERE fts MATCH ? "
                    "ORDER BY rowid DESC LIMIT ?)", (match, window)).fetchone()[0]
            # Only rowids and ranks come out of the full-text index (reading a column of it
            # would read each match's whole row); the date is near the start of a page's row.
            if sort == "date":
                ids = self.db.execute(
                    "SELECT id FROM pages WHERE id IN (SELECT rowid FROM fts WHERE fts MATCH ? "
                    "AND rowid >= ?) ORDER BY date IS NULL, date DESC, id DESC LIMIT ?",
                    (match, floor, PER_PAGE * MAX_PAGE)).fetchall()
            else:
                ids = self.db.execute("SELECT rowid FROM fts WHERE fts MATCH ? AND rowid >= ? "
                                      "ORDER BY rank LIMIT ?",
                                      (match, floor, PER_PAGE * MAX_PAGE)).fetchall()
        finally:
            self.db.execute("COMMIT")
        return Ranking(query, terms, unit, total, min(total, window),
                       array("q", (i for (i,) in ids)))

    def page_of(self, ranking: "Ranking", page: int = 1) -> dict[str, Any]:
        """One page of a ranking: its ten pages' rows, with their excerpts."""
        r = ranking
        if not r.terms:
            return {"query": r.query, "terms": [], "total": 0, "results": []}
        page = max(1, min(MAX_PAGE, page))
        order = list(r.ids[(page - 1) * PER_PAGE:page * PER_PAGE])
        # A page gone since the ranking (an apply between the two) is left out; its id may
        # have gone to another unit's new page since, which a unit's search never shows.
        scoped = " AND p.tenant = ?" if r.unit else ""
        terms = r.terms
        # where the text's excerpt begins: a little before the first of the words (as
        # `excerpt` looks for them, in lower case), or at the start where none is found
        never = 1 << 62
        looked_for = (terms * 2)[:max(2, len(terms))]    # two at least: min(x) aggregates
        found = ", ".join([f"coalesce(nullif(instr(lower(p.body), ?), 0), {never})"]
                          * len(looked_for))
        got = {row[0]: row[1:] for row in self.db.execute(
            f"SELECT id, tenant, unit_title, url, title, date, start, "
            f"substr(body, start, {BODY_READ}) FROM ("
            f"SELECT *, CASE WHEN first >= {never} THEN 1 ELSE max(1, first - {EXCERPT}) END "
            "AS start FROM ("
            "SELECT p.id AS id, p.tenant AS tenant, u.title AS unit_title, p.url AS url, "
            f"substr(p.title, 1, {TITLE_READ}) AS title, p.date AS date, p.body AS body, "
            f"min({found}) AS first FROM pages p LEFT JOIN units u ON u.tenant = p.tenant "
            f"WHERE p.id IN ({','.join('?' * len(order))}){scoped}))",
            looked_for + order + ([r.unit] if r.unit else []))} \
            if order else {}
        rows = [got[i] for i in order if i in got]
        return {"query": r.query, "terms": terms, "total": min(r.total, COUNTED),
                "more": r.total > COUNTED, "ranked": r.ranked, "page": page,
                "results": [{"unit": t, "unit_title": ut or t, "url": url, "title": title,
                             "date": date, "title_html": mark(title or url, terms),
                             "excerpt_html": excerpt(body, terms, start > 1,
                                                     len(body) == BODY_READ)}
                            for t, ut, url, title, date, start, body in rows]}


@dataclass(frozen=True)
class Ranking:
    """A query's results in order, as ids of `pages`: `total` matches counted (up to
    COUNTED + 1), `ranked` of them ordered, `ids` the ones a visitor can page to; `unit`:
    the unit whose site was searched (None: the county)."""

    query: str
    terms: list[str]
    unit: str | None
    total: int
    ranked: int
    ids: Sequence[int]


def unit_token(unit: str) -> str:
    """A unit's name as one token of the `unit` column (unicode61 would split on its hyphens)."""
    return "u" + unit.encode().hex()


_LOADED: set[str] = set()
_JIEBA_LOCK = threading.Lock()


def initialize() -> None:
    """jieba's dictionary in memory: half a million words unmarshalled, 1-1.5 s of one core.
    Safe beside a segmenting thread: jieba's own lock makes a cut wait for the whole
    dictionary."""
    import jieba
    jieba.setLogLevel(60)
    jieba.initialize()


def load_words(words: Iterable[str]) -> None:
    import jieba
    jieba.setLogLevel(60)
    with _JIEBA_LOCK:
        for w in words:
            if w not in _LOADED:
                jieba.add_word(w, freq=100_000)
                _LOADED.add(w)


def query_terms(query: str) -> list[str]:
    import jieba
    q = _SPACE.sub(" ", query.strip())[:MAX_QUERY]
    out: list[str] = []
    for part in q.split(" "):
        for w in jieba.cut(part):
            w = w.strip().lower()
            if w and re.search(r"\w", w) and w not in out:
                out.append(w)
    return out[:10]


def mark(text: str, terms: list[str]) -> str:
    """`text` escaped for HTML, with the query's words in <mark>."""
    if not terms:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)),
                         re.IGNORECASE)
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append("<mark>" + html.escape(m.group()) + "</mark>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def excerpt(body: str, terms: list[str], cut_before: bool = False,
            cut_after: bool = False) -> str:
    """About 140 characters of `body` from a little before the first of `terms`; `body` may
    be a piece of the page's text, cut before or after it (an ellipsis says so)."""
    low = body.lower()
    hits = [i for i in (low.find(t) for t in terms) if i >= 0]
    start = max(0, min(hits) - EXCERPT // 3) if hits else 0
    piece = _SPACE.sub(" ", body[start:start + EXCERPT * 2])
    return ("…" if start or cut_before else "") + mark(piece, terms) + \
        ("…" if start + EXCERPT * 2 < len(body) or cut_after else "")


PAGE = """<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:1em auto;padding:0 1em;line-height:1.6}}
mark{{background:#ffe58f}} .r{{margin:1.2em 0}} .m{{color:#555;font-size:.9em}}</style></head>
<body><h1>{heading}</h1>
<form action="/search" method="get" role="search"><label for="q">搜索</label>
<input id="q" name="q" value="{q}" maxlength="{maxq}"> <select name="sort" aria-label="排序">
<option value="relevance"{rel}>按相关度</option><option value="date"{dat}>按日期</option></select>
<button type="submit">搜索</button></form>
<p>{summary}</p>{results}{more}</body></html>
"""


def render(res: dict[str, Any], scope: str, sort: str) -> str:
    items = []
    for r in res["results"]:
        items.append(f'<div class="r"><a href="{html.escape(r["url"])}">{r["title_html"]}</a>'
                     f'<div class="m">{html.escape(r["unit_title"])}'
                     f'{" · " + html.escape(r["date"]) if r["date"] else ""}</div>'
                     f'<div>{r["excerpt_html"]}</div></div>')
    q = res["query"]
    if not q:
        summary = "请输入要搜索的词语。"
    else:
        found = f"超过 {res['total']:,}" if res.get("more") else f"{res['total']:,}"
        summary = f"“{html.escape(q)}”共找到 {found} 条结果。"
        if res.get("more") or res["total"] > res.get("ranked", res["total"]):
            summary += f"排序范围为最近收录的 {res['ranked']:,} 条。"
    more = ""
    page = res.get("page", 1)
    if res.get("ranked", res["total"]) > page * PER_PAGE:
        more = (f'<p><a href="/search?q={html.escape(_quote(q))}&amp;sort={sort}&amp;page='
                f'{page + 1}">下一页</a></p>')
    return PAGE.format(title=html.escape(f"搜索 - {scope}"), heading=html.escape(scope) + " 站内搜索",
                       q=html.escape(q), maxq=MAX_QUERY, rel="" if sort == "date" else " selected",
                       dat=" selected" if sort == "date" else "", summary=summary,
                       results="".join(items), more=more)


def _quote(s: str) -> str:
    from urllib.parse import quote
    return quote(s, safe="")


class Turn:
    """One thread at a time, in the order they asked: first come, first answered.

    Each connection nginx keeps open is a thread, 25 or so a worker under load, and an
    answer is Python work under one interpreter lock, which goes to whichever waiting
    thread the system wakes, not to the one that has waited longest: a search could lose
    that draw many times over. A waiting thread sleeps on its own event and is not in the
    draw at all. What may take long (ranking a query, waiting for another thread's ranking)
    is done `aside`, out of the line, so that one costly query does not hold up the cheap
    answers queued behind it; the thread then takes its place at the end of the line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: collections.deque[threading.Event] = collections.deque()
        self._held = False
        self._owner: int | None = None

    def __enter__(self) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                self._owner = threading.get_ident()
                return
            mine = threading.Event()
            self._waiting.append(mine)
        mine.wait()                 # handed the turn by the thread before (still held)
        self._owner = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._owner = None
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Out of the line for a while, if this thread is in it (a thread that never took
        its turn, as a caller outside the server, just goes on)."""
        if self._owner != threading.get_ident():
            yield
            return
        self.__exit__()
        try:
            yield
        finally:
            self.__enter__()


class Served:
    """The connections the server answers from: a pool, so queries run side by side (each
    request is a thread of its own), opened again when the index file was replaced or removed
    (a node whose index was lost answers from the new one, not from the deleted file)."""

    CACHED = 2048            # answers, each kept as typed and as read (two entries)
    RANKINGS = 512           # rankings (each up to 1,000 ids: 8 KB)

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        self.idle: list[tuple[Index, int]] = []      # (connection, inode of its file)
        # Answers by (index version, query): a county's searches repeat (the same notice
        # looked for by many), and an answer stays right until the index changes.
        self.cache: collections.OrderedDict[tuple, tuple[dict[str, Any], str]] = \
            collections.OrderedDict()
        # Rankings by (index version, words, unit, order): a query's ordered results, of
        # which each page is a slice (each up to MAX_PAGE * PER_PAGE ids).
        self.rankings: collections.OrderedDict[tuple, Ranking] = collections.OrderedDict()
        self.words_read: tuple | None = None     # the index version whose words are loaded
        # Answers and rankings being computed now, by their key (see _once).
        self.running: dict[tuple, threading.Event] = {}
        # the server's threads compute answers in turn (see Turn)
        self.turn = Turn()

    def version(self) -> tuple:
        """Changes whenever the index does: a commit writes the WAL (or the file itself, at
        a checkpoint), and a replaced file has another inode."""
        out: list[Any] = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(self.path + suffix)
                out += [st.st_ino, st.st_size, st.st_mtime_ns]
            except OSError:
                out.append(None)
        return tuple(out)

    def answer(self, q: str, unit: str | None, sort: str,
               page: int) -> tuple[dict[str, Any], str]:
        """Answers are kept by the words a query is read as (so 通知, 通知! and ' 通知 ' are
        one answer, computed once) and the page's own text keeps what this visitor typed."""
        version = self.version()
        page = max(1, min(MAX_PAGE, page))
        asked = (version, "as typed", q, unit, sort, page)
        with self.lock:                          # this very text asked before: no reading
            hit = self._cached(self.cache, asked)
            if hit is not None:
                return hit
        if self.words_read != version:           # the words change only with the index
            with self.turn.aside(), self.get() as index:
                load_words(index.words())
            self.words_read = version
        key = (version, tuple(query_terms(q)), unit, sort, page)
        res, scope = self._answer(key, q, unit, sort, page)
        answer = (res if res.get("query") == q else {**res, "query": q}), scope
        self._keep(self.cache, asked, answer, self.CACHED)
        return answer

    @staticmethod
    def _cached(kept: collections.OrderedDict, key: tuple) -> Any:
        """What `kept` holds for `key`, marked as just used; the caller holds the lock."""
        hit = kept.get(key)
        if hit is not None:
            kept.move_to_end(key)
        return hit

    def _keep(self, kept: collections.OrderedDict, key: tuple, value: Any, bound: int) -> None:
        """`value` kept under `key`, the least recently used dropped beyond `bound`."""
        with self.lock:
            kept[key] = value
            while len(kept) > bound:
                kept.popitem(last=False)

    def _answer(self, key: tuple, q: str, unit: str | None, sort: str,
                page: int) -> tuple[dict[str, Any], str]:
        def compute() -> tuple[dict[str, Any], str]:
            # the ranking without the page: every page of a query is one ranking, computed
            # once (a visitor paging on, or fifty looking at once, cost one ranking)
            ranking = self._once(self.rankings, key[:-1], lambda: self._rank(q, unit, sort),
                                 self.RANKINGS)
            with self.get() as index:
                res = index.page_of(ranking, page)
                scope = (index.db.execute("SELECT title FROM units WHERE tenant = ?",
                                          (unit,)).fetchone() or [unit])[0] if unit else "全县"
            return res, scope
        return self._once(self.cache, key, compute, self.CACHED)

    def _rank(self, q: str, unit: str | None, sort: str) -> Ranking:
        with self.turn.aside(), self.get() as index:
            return index.rank(q, unit, sort)

    def _once(self, kept: collections.OrderedDict, key: tuple, compute: Callable[[], Any],
              bound: int) -> Any:
        """`kept[key]`, computed by one thread only: the same key asked meanwhile (a notice
        fifty people look for at once) waits for that answer instead of computing it again."""
        while True:
            with self.lock:
                hit = self._cached(kept, key)
                if hit is not None:
                    return hit
                running = self.running.get(key)
                if running is None:
                    done = self.running[key] = threading.Event()
                    break
            with self.turn.aside():   # the one computing it may need the line to finish
                running.wait(30)       # then look again; compute it if that one failed
        try:
            value = compute()
            self._keep(kept, key, value, bound)
        finally:
            with self.lock:
                del self.running[key]
            done.set()
        return value

    @contextlib.contextmanager
    def get(self) -> Iterator[Index]:
        try:
            now: int | None = os.stat(self.path).st_ino
        except OSError:
            now = None
        found = None
        with self.lock:
            while self.idle:
                index, inode = self.idle.pop()
                if inode == now:
                    found = (index, inode)
                    break
                index.close()                      # its file was replaced or removed
        if found is None:
            index = Index(self.path)
            found = (index, os.stat(self.path).st_ino)
        try:
            yield found[0]
        finally:
            with self.lock:
                if len(self.idle) < 16:
                    self.idle.append(found)
                else:
                    found[0].close()


class Handler(BaseHTTPRequestHandler):
    served: Served
    server_version = "govhost-search"
    # Keep-alive: a connection answers one search after another (every answer has its
    # length) instead of a new connection and thread for each; one left idle is closed.
    protocol_version = "HTTP/1.1"
    timeout = 30
    # the headers and the body are two writes: without this, the second waits for the
    # client's delayed acknowledgement of the first (40 ms) on a connection kept open
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:      # nginx keeps the access log
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or \
                "Transfer-Encoding" in self.headers or "Expect" in self.headers:
            # A search has no body. On a connection kept open, a body left unread would be
            # read as the next request (with a unit header of the sender's choosing) and its
            # answer given to whoever asks next: refused, and the connection closed unread.
            self.close_connection = True
            self._send(400, "text/plain", b"a search has no body\n")
            return
        url = urlsplit(self.path)
        if url.path != "/search":
            self._send(404, "text/plain", b"not found\n")
            return
        args = parse_qs(url.query)
        q = (args.get("q") or [""])[0][:MAX_QUERY]
        sort = "date" if (args.get("sort") or [""])[0] == "date" else "relevance"
        try:
            page = max(1, min(MAX_PAGE, int((args.get("page") or ["1"])[0])))
        except ValueError:
            page = 1
        # On a unit's site nginx names the unit; the portal searches the whole county.
        unit = self.headers.get("X-Govhost-Unit") or None
        # Answers are made one at a time in the order asked. Reading the request and
        # sending the answer are not in the line: a connection that sends or reads slowly
        # (a unit's PHP can reach this port) holds up nobody but itself.
        with self.served.turn:
            res, scope = self.served.answer(q, unit, sort, page)
            if (args.get("format") or [""])[0] == "json":
                ctype, body = "application/json", json.dumps(res, ensure_ascii=False).encode()
            else:
                ctype, body = "text/html; charset=utf-8", render(res, scope, sort).encode()
        self._send(200, ctype, body)

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Robots-Tag", "noindex")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815 - the http.server API


def serve(listen: str, db: str, workers: int | None = None) -> None:
    """Answer searches on `listen` in `workers` processes (default: one a core, at most 4)
    sharing one listening socket: a Python process answers on one core at a time, and a
    common word asked by fifty people at once queued behind that core. The dictionary is
    loaded before the processes part (they share its memory); each opens its own index
    connections and keeps its own answers. A worker whose parent is gone ends with it."""
    host, _, port = listen.rpartition(":")
    initialize()
    first = Index(db)                   # no SQLite connection may cross a fork
    try:
        load_words(first.words())
    finally:
        first.close()
    server = _Server((host.strip("[]"), int(port)), Handler)
    # every process waits on the socket; the one that is not first to a connection goes
    # back to waiting instead of blocking in accept()
    server.socket.setblocking(False)
    usable = len(os.sched_getaffinity(0))
    count = max(1, min(MAX_WORKERS, workers if workers is not None else min(4, usable)))
    parent = os.getpid()
    import gc
    gc.freeze()                 # what is loaded stays shared: no collection writes to it
    children = []
    for _ in range(count - 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _end_with(parent)
                Handler.served = Served(db)
                server.serve_forever()
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    if children:
        threading.Thread(target=_watch, args=(children,), daemon=True).start()
    Handler.served = Served(db)
    server.serve_forever()


MAX_WORKERS = 16


def _end_with(parent: int) -> None:
    """This worker ends when the process that forked it does, so stopping the service's
    main process stops every worker."""
    if not end_with_parent():
        raise OSError("prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:                                  # it ended before the line above
        os._exit(0)


def _watch(children: list[int]) -> None:
    """A worker that ends ends the service: the main process exits, the other workers
    with it, and the service manager starts it again whole (rather than answering on with
    fewer workers and nothing saying so)."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid in children:
            break
    print(f"govhost-search: worker {pid} ended ({status}); the server stops to be started again",
          file=sys.stderr, flush=True)
    os._exit(1)


class _Server(ThreadingHTTPServer):
    # nginx opens a connection per search it passes on; the library's backlog of 5 dropped
    # the rest of a burst (a notice fifty people look for at once), each retried a second on.
    request_queue_size = 128
    daemon_threads = True


def _empty_wal(index: Index) -> None:
    """The copy went in through the write-ahead log, which grew as big as the index (and
    stays that big after a copy that failed, a full disk): folded into the index and
    emptied once no search is reading. Queries take milliseconds; each try waits 0.1 s at
    most, not the connection's 30, and after 5 s the log is left for SQLite to reuse."""
    index.db.execute("PRAGMA busy_timeout = 100")
    try:
        for _ in range(50):
            try:
                if index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    return
            except sqlite3.OperationalError:
                pass
            time.sleep(0.1)
    finally:
        index.db.execute("PRAGMA busy_timeout = 30000")


def load(db: str, stream: BinaryIO) -> Index:
    """Make this node's index the control machine's master copy, sent whole (the SQLite
    file on stdin). A node that lacks most units (new, replaced, or its index dropped for a
    new VERSION) was sent each unit as a change and indexed every page anew: 60 units of
    200 pages of Chinese text took 16-18 s on a lab node, this 4.7 s (stop 60). The copy is
    checked before anything changes (its version, SQLite's quick_check) and goes in through
    SQLite's backup in one transaction: the search server's readers see the old index or
    the new, never half."""
    folder = os.path.dirname(db)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    sweep(folder, 3600, ".incoming-")    # a load killed (a reboot, the OOM killer) left it
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        src = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
        try:
            version = src.execute("PRAGMA user_version").fetchone()[0]
            if version != VERSION:
                raise ValueError(f"the index sent is of version {version}, this node's "
                                 f"govhost reads {VERSION}: apply first")
            check = src.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise ValueError(f"the index sent is damaged: {check}")
            index = Index(db)
            try:
                src.backup(index.db)
            finally:
                _empty_wal(index)
        finally:
            src.close()
    finally:
        for path in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return index


def main() -> None:
    ap = argparse.ArgumentParser(prog="govhost-search")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("apply")
    sub.add_parser("load")
    sub.add_parser("state")
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True)
    s.add_argument("--workers", type=int, default=None,
                   help="processes answering (default: one a core, at most 4)")
    for p in sub.choices.values():
        p.add_argument("--db", default=DB)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a.listen, a.db, a.workers)
        return
    if a.cmd == "load":
        try:
            index = load(a.db, sys.stdin.buffer)
        except (ValueError, OSError, sqlite3.DatabaseError) as exc:
            sys.exit(f"govhost-search load: nothing changed: {exc}")
        print(json.dumps({"held": index.releases(), "refused": [], "at": time.time()}))
        return
    index = Index(a.db)
    if a.cmd == "apply":
        refused = []
        for line in sys.stdin:
            if line.strip():
                change = json.loads(line)
                if not index.apply(change):
                    refused.append(change["tenant"])
        print(json.dumps({"held": index.releases(), "refused": refused, "at": time.time()}))
    else:
        print(json.dumps({"held": index.releases()}))


if __name__ == "__main__":
    main()
