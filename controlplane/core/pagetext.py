"""The text a reader sees in a published file: HTML pages, plain text, PDF and Word files.

The wording check and the county search read the same text, so both find the same words in
the same places. Each piece of text keeps where it came from (line of the HTML source, page of
a PDF, paragraph of a Word file) so a finding can say where to fix it.

Pure: bytes in, text out. Chinese sites are often in GB 18030 rather than UTF-8; both are read.
"""
from __future__ import annotations

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

_SKIP = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "title", "td",
          "section", "article", "header", "footer", "nav", "ul", "ol", "table", "dd", "dt"}
_DATE = re.compile(r"(20\d\d|19\d\d)\s*(?:[-/.年])\s*(\d{1,2})\s*(?:[-/.月])\s*(\d{1,2})\s*日?")


@dataclass(frozen=True)
class Page:
    kind: str                               # html, text, pdf, word
    title: str
    chunks: tuple[tuple[int, str], ...]     # (line, page or paragraph number, text)
    date: str | None = None                 # the page's own date (meta PubDate), if it says

    @property
    def where(self) -> str:
        return {"pdf": "page", "word": "paragraph"}.get(self.kind, "line")

    def text(self) -> str:
        return "\n".join(t for _, t in self.chunks)

    def line_of(self, offset: int) -> int:
        """The line (page, paragraph) of a character offset into `text()`."""
        pos = 0
        for line, t in self.chunks:
            end = pos + len(t)
            if offset <= end:
                return line + t.count("\n", 0, max(0, offset - pos))
            pos = end + 1
        return self.chunks[-1][0] if self.chunks else 1


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


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[tuple[int, str]] = []
        self.title: list[str] = []
        self.date: str | None = None
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag == "meta":
            a = {k.lower(): v or "" for k, v in attrs}
            if a.get("name", "").lower() in ("pubdate", "publishdate", "date", "firstpublishedtime"):
                self.date = self.date or first_date(a.get("content", ""))
        elif tag in _SKIP:
            self._skip += 1
        if tag in _BLOCK and self.chunks and self.chunks[-1][1] != "":
            self.chunks.append((self.getpos()[0], ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
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
    return Page("html", title, chunks, date)


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
