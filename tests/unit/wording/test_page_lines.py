"""Where on a page a word was found, read in time that grows with the page, not its square
(stop 66: a page of 20,000 findings took 8.9 s, an inline script of 60,000 literals 11 s:
a unit could spend minutes of the control machine's cores with one uploaded page). Property
tests against the definitions as they stood, and a page of that size read whole."""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import pagetext
from controlplane.core.pagetext import Page
from controlplane.wording.match import findings

text = st.text(alphabet="ab\n茶河乡'\"\\ ;", max_size=60)


def old_line_of(page: Page, offset: int) -> int:
    pos = 0
    for line, t in page.chunks:
        end = pos + len(t)
        if offset <= end:
            return line + t.count("\n", 0, max(0, offset - pos))
        pos = end + 1
    return page.chunks[-1][0] if page.chunks else 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 500), text), max_size=8), st.data())
def test_line_of_is_the_walk_it_replaced(chunks, data):
    page = Page(kind="html", title="", chunks=tuple(chunks))
    n = len(page.text())
    for offset in data.draw(st.lists(st.integers(0, n + 3), max_size=12)):
        assert page.line_of(offset) == old_line_of(page, offset)


def old_js_strings(code: str) -> list[tuple[int, str]]:
    out = []
    for m in pagetext._JS_STRING.finditer(code):
        raw = next(g for g in m.groups() if g is not None)
        if raw.strip():
            out.append((code.count("\n", 0, m.start()),
                        pagetext._JS_ESCAPE.sub(pagetext._js_escape, raw)))
    return out


def old_css_contents(css: str) -> list[tuple[int, str]]:
    out = []
    for m in pagetext._CSS_CONTENT.finditer(css):
        raw = m.group(1) if m.group(1) is not None else m.group(2)
        t = pagetext._CSS_ESCAPE.sub(pagetext._css_escape, raw)
        if t.strip():
            out.append((css.count("\n", 0, m.start()), t))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(['"a"', "'b\\n'", '" "', "\n", "x=", ";", '"茶河乡"',
                                 "content: '乡'", 'content:"a\\\nb"', "\\'", "{", "}"]),
                max_size=30))
def test_script_and_css_lines_are_the_counts_they_replaced(parts):
    code = "".join(parts)
    assert pagetext.js_strings(code) == old_js_strings(code)
    assert pagetext.css_contents(code) == old_css_contents(code)


def test_a_page_of_thousands_of_findings_names_each_ones_line():
    from tests.unit.wording.test_match import M as matcher  # the county's example lists
    n = 20_000
    rows = "\n".join(f"<li>茶河乡第{i}期</li>" for i in range(n))
    script = "\n".join(f'"茶河乡{i}",' for i in range(n))
    page = pagetext.extract("a.html", (f"<html><body><ul>\n{rows}\n</ul><script>\nvar r = [\n"
                                       f"{script}\n];\n</script></body></html>").encode())
    found = findings(matcher, page)
    body = [f["line"] for f in found if f["place"] == "body"]
    in_script = [f["line"] for f in found if f["place"] == "script"]
    assert body == list(range(2, n + 2)) and in_script == list(range(n + 4, 2 * n + 4))
    assert all(re.fullmatch(r"茶河乡\d*", f["found"]) for f in found)
