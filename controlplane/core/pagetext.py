"""The text a reader sees in a published file: HTML pages, plain text, PDF and Word files.

The wording check and the county search read the same body text, so both find the same words
in the same places. Each piece of text keeps where it came from (line of the HTML source,
page of a PDF, paragraph of a Word file) so a finding can say where to fix it.

Beyond the body, an HTML page has text that a search engine or a visitor reads elsewhere, and
where defacers and spammers put their words (search-engine poisoning): the `<title>`, meta
keywords and description, Open Graph and Twitter card tags, `alt`, `title` and `aria-label`
attributes, strings that inline scripts write into the page (JavaScript escapes such as
`\u4ee3` decoded), comments and CSS `content`. These are `Page.elsewhere`, each with its
place and line, read by the wording check (not by the search, whose results show the body).
Not read: the pixels of images (no OCR here), scripts loaded from files, text a script builds
from pieces at run time.

Pure: bytes in, text out. Chinese sites are often in GB 18030 rather than UTF-8; both are read.
"""
from __future__ import annotations

import bisect
import functools
import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from xml.etree import ElementTree

HTML = (".html", ".htm", ".shtml", ".xhtml")
TEXT = (".txt",)
PDF = (".pdf",)
WORD = (".docx",)
# Beyond these a file is not read for text (a 200 MB scanned PDF is an image, not words).
MAX_BYTES = {"html": 5 << 20, "text": 5 << 20, "pdf": 30 << 20, "word": 30 << 20}

_SKIP = {"script", "style", "template", "svg", "head"}
# Bump when what is read changes: findings cached under an older reader are read again.
READER = 2
# Meta tags whose content search engines show or read (name= or property=).
_META = re.compile(r"^(keywords|description|og:.+|twitter:.+|article:tag|subject|abstract)$")
_TEXT_ATTRS = {"alt": "alt", "title": "attribute", "aria-label": "attribute",
               "placeholder": "attribute"}
# A JavaScript string literal ('…', "…" or `…` without ${}), and the escapes in it.
_JS_STRING = re.compile(r"""(?s)'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)"|`((?:[^`\\$]|\\.)*)`""")
_JS_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.S)
_JS_SIMPLE = {"n": "\n", "t": "\t", "r": "", "b": "", "f": "", "v": "", "0": ""}
# CSS `content: "…"` (in <style> and style=""), and CSS escapes (\4ee3 and an optional space).
_CSS_CONTENT = re.compile(r"""content\s*:\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""",
                          re.I | re.S)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.S)
_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "title", "td",
          "section", "article", "header", "footer", "nav", "ul", "ol", "table", "dd", "dt"}
_DATE = re.compile(r"(20\d\d|19\d\d)\s*(?:[-/.年])\s*(\d{1,2})\s*(?:[-/.月])\s*(\d{1,2})\s*日?")


@dataclass(frozen=True)
class Page:
    kind: str                               # html, text, pdf, word
    title: str
    chunks: tuple[tuple[int, str], ...]     # (line, page or paragraph number, text)
    date: str | None = None                 # the page's own date (meta PubDate), if it says
    # Text outside the body (HTML): (line, place, text); place is title, meta, alt,
    # attribute, script, comment or css.
    elsewhere: tuple[tuple[int, str, str], ...] = ()

    @property
    def where(self) -> str:
        return {"pdf": "page", "word": "paragraph"}.get(self.kind, "line")

    def text(self) -> str:
        return "\n".join(t for _, t in self.chunks)

    def line_of(self, offset: int) -> int:
        """The line (page, paragraph) of a character offset into `text()`: its chunk's
        line, and the newlines in the chunk before it (found by bisection: a page of 20,000
        findings walked every chunk from the first for each, 8.9 s)."""
        if not self.chunks:
            return 1
        starts, newlines = self._offsets
        i = bisect.bisect_right(starts, offset) - 1
        if i < 0:
            return self.chunks[0][0]
        line, t = self.chunks[i]
        if offset > starts[i] + len(t):
            return self.chunks[-1][0]
        return line + bisect.bisect_left(newlines, offset) - \
            bisect.bisect_left(newlines, starts[i])

    @functools.cached_property
    def _offsets(self) -> tuple[list[int], list[int]]:
        """Where each chunk begins in `text()`, and where its newlines are."""
        starts, pos = [], 0
        for _, t in self.chunks:
            starts.append(pos)
            pos += len(t) + 1
        return starts, newline_offsets(self.text())


def kind_of(name: str) -> str | None:
    n = name.lower()
    for kind, exts in (("html", HTML), ("text", TEXT), ("pdf", PDF), ("word", WORD)):
        if n.endswith(exts):
            return kind
    return None


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")


def newline_offsets(text: str) -> list[int]:
    """Where `text`'s newlines are: the line of offset k is bisect_left(them, k) (counting
    from the start for each of many offsets grows with the square of the text)."""
    return [m.start() for m in re.finditer("\n", text)]


def js_strings(code: str) -> list[tuple[int, str]]:
    """The string literals of a script, escapes decoded: (line within `code`, text). The
    newlines are counted on from the literal before (from the script's start for each,
    a script of 20,000 literals took 11 s)."""
    out, line, at = [], 0, 0
    for m in _JS_STRING.finditer(code):
        raw = next(g for g in m.groups() if g is not None)
        line += code.count("\n", at, m.start())
        at = m.start()
        if raw.strip():
            out.append((line, _JS_ESCAPE.sub(_js_escape, raw)))
    return out


def _js_escape(m: re.Match[str]) -> str:
    e = m.group(1)
    if e[0] == "u" and len(e) > 1:
        try:
            return chr(int(e[2:-1] if e[1] == "{" else e[1:], 16))
        except ValueError:          # past U+10FFFF: not a character
            return ""
    if e[0] == "x" and len(e) == 3:
        return chr(int(e[1:], 16))
    return _JS_SIMPLE.get(e, e if e != "\n" else "")


def css_contents(css: str) -> list[tuple[int, str]]:
    """The `content:` strings of a stylesheet, escapes decoded: (line within `css`, text)."""
    out, line, at = [], 0, 0
    for m in _CSS_CONTENT.finditer(css):
        raw = m.group(1) if m.group(1) is not None else m.group(2)
        text = _CSS_ESCAPE.sub(_css_escape, raw)
        line += css.count("\n", at, m.start())
        at = m.start()
        if text.strip():
            out.append((line, text))
    return out


def _css_escape(m: re.Match[str]) -> str:
    if m.group(1):
        code = int(m.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF else ""
    return "" if m.group(2) == "\n" else m.group(2)


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[tuple[int, str]] = []
        self.title: list[str] = []
        self.elsewhere: list[tuple[int, str, str]] = []
        self.date: str | None = None
        self._skip = 0
        self._in_title = False
        self._title_line = 0
        self._code: str | None = None        # "script" or "style" while inside one

    def _else(self, line: int, place: str, text: str) -> None:
        if text.strip():
            self.elsewhere.append((line, place, text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "title":
            self._in_title = True
            self._title_line = line
        elif tag == "meta":
            if a.get("name", "").lower() in ("pubdate", "publishdate", "date", "firstpublishedtime"):
                self.date = self.date or first_date(a.get("content", ""))
            key = (a.get("name") or a.get("property") or a.get("itemprop") or "").lower()
            if _META.match(key):
                self._else(line, "meta", a.get("content", ""))
        elif tag in _SKIP:
            self._skip += 1
        if tag == "script" and not a.get("src") and _is_javascript(a.get("type", "")):
            self._code = "script"
        elif tag == "style":
            self._code = "style"
        for attr, place in _TEXT_ATTRS.items():
            if a.get(attr) and not (tag == "meta" or (attr == "title" and tag == "link")):
                self._else(line, place, a[attr])
        if a.get("style"):
            for _, text in css_contents(a["style"]):
                self._else(line, "css", text)
        if tag in _BLOCK and self.chunks and self.chunks[-1][1] != "":
            self.chunks.append((line, ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIP and self._skip:
            self._skip -= 1
        self._code = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self._skip:
            self._skip -= 1
        if tag in ("script", "style"):
            self._code = None

    def handle_comment(self, data: str) -> None:
        self._else(self.getpos()[0], "comment", data)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
            return
        if self._code == "script":
            line = self.getpos()[0]
            for at, text in js_strings(data):
                self._else(line + at, "script", text)
            return
        if self._code == "style":
            line = self.getpos()[0]
            for at, text in css_contents(data):
                self._else(line + at, "css", text)
            return
        if self._skip or not data.strip():
            return
        line = self.getpos()[0]
        if self.chunks and self.chunks[-1][1] != "" and "\n" not in self.chunks[-1][1]:
            prev_line, prev = self.chunks[-1]
            if prev_line == line:                 # inline markup on one line: one chunk, so
                self.chunks[-1] = (line, prev + data)   # 国家<b>工商</b>总局 reads as one word
                return
        self.chunks.append((line, data))


def _is_javascript(kind: str) -> bool:
    """A script element the browser runs (no type, a JavaScript type, or a module)."""
    kind = kind.strip().lower()
    return kind in ("", "module") or "javascript" in kind or "ecmascript" in kind


def first_date(text: str) -> str | None:
    m = _DATE.search(text)
    if not m:
        return None
    y, mo, d = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return None
    return f"{y:04d}-{mo:02d}-{d:02d}"


def _html(data: bytes) -> Page:
    p = _Visible()
    try:
        p.feed(decode(data))
        p.close()
    except AssertionError:        # html.parser gives up on some broken markup; keep what it read
        pass
    chunks = tuple((line, t) for line, t in p.chunks if t.strip())
    title = " ".join("".join(p.title).split())
    date = p.date or first_date(" ".join(t for _, t in chunks[:200]))
    elsewhere = ((p._title_line, "title", title),) if title else ()
    return Page("html", title, chunks, date, elsewhere + tuple(p.elsewhere))


def _pdf(data: bytes) -> Page:
    from pypdf import PdfReader
    reader = PdfReader(io.BytesIO(data))
    chunks = []
    for i, page in enumerate(reader.pages, 1):
        t = page.extract_text() or ""
        if t.strip():
            chunks.append((i, t))
    meta = reader.metadata
    title = str(meta.title) if meta and meta.title else ""
    return Page("pdf", title, tuple(chunks))


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _word(data: bytes) -> Page:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo("word/document.xml")
        if info.file_size > MAX_BYTES["word"]:
            raise ValueError("word/document.xml is too large to read")
        root = ElementTree.fromstring(z.read(info))
    chunks = []
    for i, para in enumerate(root.iter(_W + "p"), 1):
        t = "".join(el.text or "" for el in para.iter(_W + "t"))
        if t.strip():
            chunks.append((i, t))
    return Page("word", "", tuple(chunks))


def extract(name: str, data: bytes) -> Page | None:
    """The readable text of file `name`, or None when it is not a kind that has text or is
    too large or too broken to read (a broken PDF is a publishing matter, not a wording one)."""
    kind = kind_of(name)
    if kind is None or len(data) > MAX_BYTES[kind]:
        return None
    try:
        if kind == "html":
            return _html(data)
        if kind == "text":
            text = decode(data)
            return Page("text", "", tuple((i, t) for i, t in enumerate(text.split("\n"), 1)
                                          if t.strip()))
        if kind == "pdf":
            return _pdf(data)
        return _word(data)
    except Exception:             # noqa: BLE001 - any broken file: no text, not a crash
        return None
