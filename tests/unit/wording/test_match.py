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


def test_html_findings_say_the_line_and_skip_scripts():
    html = ("<html><head><title>通知</title><script>var a='代开发票';</script></head>\n"
            "<body>\n<p>第一段</p>\n<p>原<b>国家工商</b>行政管理总局的通知</p>\n</body></html>")
    page = extract("news/a.html", html.encode())
    assert page is not None and page.title == "通知"
    found = findings(M, page)
    assert [(f["word"], f["line"], f["where"]) for f in found] == [
        ("国家工商行政管理总局", 4, "line")]
    assert found[0]["right"] == "国家市场监督管理总局" and found[0]["before"].endswith("原")


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
