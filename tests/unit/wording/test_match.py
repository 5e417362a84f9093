"""The wording matcher and the page text it reads: evasions, traditional forms, exceptions,
where a finding is, and lists refused with the file and field."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import inventory
from controlplane.core.errors import ManifestError
from controlplane.core.pagetext import extract
from controlplane.core.wordlists import WordList, digest
from controlplane.wording.match import Matcher, findings, normalise

LISTS = {
    "names.yaml": WordList.model_validate({
        "severity": "review", "traditional": True,
        "entries": [{"word": "国家工商行政管理总局", "right": "国家市场监督管理总局"},
                    {"word": "茶河乡", "right": "茶河镇", "except_in": ["茶河乡村"]}]}),
    "forbidden.yaml": WordList.model_validate({
        "severity": "block", "entries": [{"word": "代开发票"}, {"word": "ABC123"}]}),
    "ads.yaml": WordList.model_validate({"severity": "note", "entries": [{"word": "最佳"}]}),
}
M = Matcher(LISTS)


def words(text: str) -> list[tuple[str, str]]:
    return [(h.rule.word, text[h.start:h.end]) for h in M.find(text)]


def test_plain_words_of_every_severity_are_found():
    found = M.find("本站代开发票。原国家工商行政管理总局发布，服务最佳")
    assert sorted((h.rule.word, h.rule.severity) for h in found) == [
        ("代开发票", "block"), ("国家工商行政管理总局", "review"), ("最佳", "note")]


def test_full_width_letters_and_case_are_folded():
    assert words("联系 ａｂｃ１２３ 咨询") == [("ABC123", "ａｂｃ１２３")]
    assert words("abc123") == [("ABC123", "abc123")]


def test_traditional_forms_are_found_only_where_the_list_asks():
    assert words("原國家工商行政管理總局") == [("国家工商行政管理总局", "國家工商行政管理總局")]
    # forbidden.yaml does not ask for traditional forms: 代開發票 is not 代开发票 to it
    assert words("代開發票") == []


def test_except_in_keeps_the_right_longer_form():
    assert words("茶河乡村振兴") == []
    assert words("茶河乡人民政府") == [("茶河乡", "茶河乡")]


def test_unrelated_text_has_no_findings():
    assert words("青水县茶河镇人民政府 2026年11月30日 通知公告") == []


SEPARATORS = st.sampled_from([" ", "\u3000", "，", "。", "\n", "·", "-", "*", "  ", "\t"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(""), SEPARATORS), min_size=3, max_size=3),
       st.text(alphabet="的是了在和有人这中大为上个国", max_size=8),
       st.text(alphabet="的是了在和有人这中大为上个国", max_size=8))
def test_separators_inside_a_word_do_not_hide_it(seps, before, after):
    word = "代开发票"
    spread = "".join(c + s for c, s in zip(word, seps + [""]))
    text = before + "：" + spread + "。" + after
    hits = M.find(text)
    assert [h.rule.word for h in hits] == ["代开发票"]
    h = hits[0]
    assert text[h.start] == "代" and text[h.end - 1] == "票"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_offsets_map_back_into_the_original_text(text):
    norm, norm_at, orig_at = normalise(text)
    for i in range(len(norm_at)):
        assert 0 <= orig_at[i] < len(text)
    for h in M.find(text):
        assert 0 <= h.start < h.end <= len(text)


def test_html_findings_say_the_line_and_the_place():
    html = ("<html><head><title>通知</title><script>var a='代开发票';</script></head>\n"
            "<body>\n<p>第一段</p>\n<p>原<b>国家工商</b>行政管理总局的通知</p>\n</body></html>")
    page = extract("news/a.html", html.encode())
    assert page is not None and page.title == "通知"
    found = findings(M, page)
    assert [(f["word"], f["line"], f["place"], f["severity"]) for f in found] == [
        ("国家工商行政管理总局", 4, "body", "review"), ("代开发票", 1, "script", "block")]
    assert found[0]["right"] == "国家市场监督管理总局" and found[0]["before"].endswith("原")


# Issue 34: where search-engine poisoning puts its words, one page of each.
SPAM = """<html><head>
<title>县政府 代开发票</title>
<meta name="keywords" content="政务公开,代开发票">
<meta name="Description" content="本站代开发票">
<meta property="og:title" content="代开发票">
<meta name="twitter:description" content="代开发票">
<script>document.write("\\u4ee3\\u5f00\\u53d1\\u7968");</script>
<script type="text/javascript">var s = '\\x41BC123';</script>
<style>.ad::after { content: "\\4ee3\\5f00\\53d1\\7968"; }</style>
</head><body>
<p>正文</p>
<!-- 代开发票 -->
<img src="a.png" alt="代开发票">
<a href="/" title="代开发票">首页</a>
<button aria-label="代开发票">x</button>
<script src="/ad.js">var ignored = "代开发票";</script>
<script type="application/ld+json">{"x": "代开发票 in data, not run"}</script>
</body></html>"""


@pytest.mark.parametrize("place,line,severity", [
    ("title", 2, "block"), ("meta", 3, "block"), ("meta", 4, "block"), ("meta", 5, "block"),
    ("meta", 6, "block"), ("script", 7, "block"), ("script", 8, "block"),
    ("css", 9, "review"), ("comment", 12, "review"), ("alt", 13, "block"),
    ("attribute", 14, "block"), ("attribute", 15, "block")])
def test_words_where_spammers_put_them_are_found_with_place_and_line(place, line, severity):
    found = findings(M, extract("spam.html", SPAM.encode()))
    assert not [f for f in found if f["place"] == "body"]
    got = {(f["place"], f["line"], f["severity"]) for f in found}
    assert (place, line, severity) in got, sorted(got)
    # scripts from a file (src) and data blocks are not read as page text
    assert not [f for f in found if f["line"] in (16, 17)]


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
               min_size=1, max_size=12))
def test_any_text_written_with_javascript_escapes_is_read_as_written(text):
    """`document.write("\\uXXXX…")` of any text is read back as that text."""
    escaped = "".join(f"\\u{{{ord(c):x}}}" if ord(c) > 0xFFFF else f"\\u{ord(c):04x}"
                      for c in text)
    page = extract("a.html", f'<script>document.write("{escaped}")</script>'.encode())
    assert [t for _, place, t in page.elsewhere if place == "script"] == (
        [text] if text.strip() else [])


def test_gb18030_pages_are_read():
    page = extract("a.htm", "<p>代开发票</p>".encode("gb18030"))
    assert [f["word"] for f in findings(M, page)] == ["代开发票"]


def test_word_documents_are_read_by_paragraph():
    body = ('<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            '<w:body><w:p><w:r><w:t>第一段</w:t></w:r></w:p><w:p><w:r><w:t>代开</w:t></w:r>'
            '<w:r><w:t>发票</w:t></w:r></w:p></w:body></w:document>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("word/document.xml", body)
    found = findings(M, extract("doc.docx", buf.getvalue()))
    assert [(f["word"], f["where"], f["line"]) for f in found] == [("代开发票", "paragraph", 2)]


def test_unreadable_files_have_no_text():
    assert extract("logo.png", b"\x89PNG") is None
    assert extract("broken.pdf", b"%PDF-1.4 not really") is None
    assert extract("broken.docx", b"not a zip") is None


def test_the_lists_digest_changes_with_the_lists():
    changed = dict(LISTS)
    changed["ads.yaml"] = WordList.model_validate({"severity": "note",
                                                  "entries": [{"word": "顶级"}]})
    assert digest(LISTS) != digest(changed) and digest(LISTS) == digest(dict(LISTS))


def _inventory(tmp_path: Path, wording: str) -> Path:
    root = tmp_path / "inventory"
    src = Path(__file__).resolve().parents[3] / "inventory"
    for name in ("cluster.yaml", "hosts.yaml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text((src / name).read_text())
    (root / "tenants").mkdir()
    (root / "wording").mkdir()
    (root / "wording" / "bad.yaml").write_text(wording)
    return root


@pytest.mark.parametrize("body, field, says", [
    ("entries: [{word: 代开发票, severity: fatal}]", "entries[0].severity", "block"),
    ("entries: [{word: '  '}]", "entries[0].word", "must not be empty"),
    ("entries: [{word: '。，'}]", "entries[0].word", "would match everywhere"),
    ("entries: []", "entries", "at least 1"),
    ("entries: [{word: 代开发票, colour: red}]", "entries[0].colour", "unknown field"),
    ("entries: [{word: \"代开\\n发票\"}]", "entries[0].word", "line break"),
])
def test_bad_lists_are_refused_naming_the_file_and_field(tmp_path, body, field, says):
    root = _inventory(tmp_path, body)
    with pytest.raises(ManifestError) as exc:
        inventory.load(root, tmp_path / "state")
    text = str(exc.value)
    assert "inventory/wording/bad.yaml" in text and field in text and says in text


def test_the_example_county_ships_lists_of_every_severity(tmp_path):
    root = Path(__file__).resolve().parents[3] / "inventory"
    m = Matcher(inventory.load(root, tmp_path / "state").wording)
    assert {r.severity for r in m.rules} == {"block", "review", "note"}
