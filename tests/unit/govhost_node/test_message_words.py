"""The county's word lists on citizens' messages (issue 38): a `block` word refuses the
message with the reason and keeps nothing; a `review` word holds it for the unit, on both
copies. The node matches without the control machine's automaton and OpenCC, so a property
test holds the two matchers to the same answers, evasions included (separators, full-width
letters, traditional characters, upper case)."""
import json
from dataclasses import replace

import opencc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import wordlists
from controlplane.core.inventory import load
from controlplane.core.wordlists import WordList
from controlplane.sites import render
from controlplane.wording.match import Matcher
from govhost_node import message_server as ms
from govhost_node.message_spool import HELD, check_record
from govhost_node.words import Screen
from tests.helpers import REPO, example_inventory
from tests.unit.govhost_node.test_message_server import GOOD, Node

LISTS = {
    "forbidden.yaml": WordList.model_validate({
        "severity": "block", "traditional": True,
        "entries": [{"word": "代开发票"}, {"word": "网上博彩", "note": "赌博广告"},
                    {"word": "ABC发票"}]}),
    "names.yaml": WordList.model_validate({
        "severity": "review", "traditional": True,
        "entries": [{"word": "国家工商行政管理总局", "right": "国家市场监督管理总局"},
                    {"word": "茶河乡", "right": "茶河镇", "except_in": ["茶河乡村振兴"]}]}),
    "plain.yaml": WordList.model_validate({
        "severity": "review",
        "entries": [{"word": "开发区管委会"}, {"word": "样板", "severity": "note"}]}),
}
SPEC = wordlists.for_messages(LISTS)
_S2T = opencc.OpenCC("s2t")


def _serious(text: str) -> set[str]:
    return {h.rule.word for h in Matcher(LISTS).find(text) if h.rule.severity != "note"}


def test_the_node_finds_what_the_control_machine_finds_through_the_evasions():
    screen = Screen(SPEC)
    for text, words in [
            ("我想办理代 开，发票业务", {"代开发票"}),
            ("代\n开\u3000发\u2028票", {"代开发票"}),
            ("ａｂｃ发票，abc发票", {"ABC发票"}),
            ("國家工商行政管理總局的网站", {"国家工商行政管理总局"}),
            ("茶河乡村振兴很好", set()),                       # the list's except_in
            ("茶河乡的路，茶河乡村振兴", {"茶河乡"}),
            ("開發區管委會", set()),                          # not a traditional list
            ("开发区管委会的样板", {"开发区管委会"}),          # a note neither refuses nor holds
            ("普通的留言内容", set())]:
        assert {f.word for f in screen.find(text)} == words == _serious(text), text


_PIECES = ["代开发票", "网上博彩", "abc发票", "ＡＢＣ发票", "国家工商行政管理总局", "茶河乡",
           "茶河乡村振兴", "开发区管委会", "样板", "路灯", "青水", "，", " ", "\n", "。", "X"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(_PIECES), max_size=12), st.booleans(), st.data())
def test_both_sides_agree_on_any_text_made_of_words_noise_and_traditional_forms(
        pieces, traditional, data):
    text = "".join(pieces)
    if traditional:
        text = _S2T.convert(text)
    cut = data.draw(st.integers(0, len(text)))
    text = text[:cut] + data.draw(st.sampled_from(["", "、", "\u3000", "Z"])) + text[cut:]
    assert {f.word for f in Screen(SPEC).find(text)} == _serious(text), text


def test_the_spec_holds_only_what_a_message_needs_and_an_empty_list_finds_nothing():
    rules = {w for w, _, _ in SPEC["rules"]}
    assert "样板" not in rules and "代开发票" in rules            # notes are left out
    assert set(SPEC["t2s"].values()) <= set("".join(SPEC["traditional"]))
    assert "發" in SPEC["t2s"] and len(json.dumps(SPEC, ensure_ascii=False)) < 2000
    assert wordlists.for_messages({}) == {} and not Screen({}) and Screen(None).find("代开发票") == []


def test_a_list_word_a_record_could_not_carry_is_refused_with_its_file():
    for bad, why in (("代开 ", "space"), ("代\u200b开", "format"), ("e\u0301", "NFC")):
        with pytest.raises(ValueError, match=why):
            WordList.model_validate({"entries": [{"word": bad}]})


@pytest.fixture
def screened(tmp_path):
    n1, n2 = Node(tmp_path, "n1", 1), Node(tmp_path, "n2", 2)
    n1.settings.peers, n2.settings.peers = [n2.address], [n1.address]
    n1.settings.words = n2.settings.words = Screen(SPEC)
    yield n1, n2
    for n in (n1, n2):
        n.stop()


def test_a_block_word_refuses_the_message_with_the_word_and_keeps_nothing(screened):
    n1, n2 = screened
    status, res = n1.post({**GOOD, "text": "可以代 开发票，价格从优，联系我。",
                           "subject": "网上 博彩"})
    assert status == 400, res
    assert "代开发票" in res["problems"]["text"]
    assert "网上博彩" in res["problems"]["subject"] and "赌博广告" in res["problems"]["subject"]
    assert list(n1.spool.records("own")) == [] and list(n2.spool.records("copies")) == []


def test_a_review_word_holds_the_message_on_both_copies(screened):
    n1, n2 = screened
    status, res = n1.post({**GOOD, "text": "國家工商行政管理總局的网站打不开，茶河乡也一样。"})
    assert status == 200 and res["held"] is True, res
    own, = n1.spool.records("own")
    copy, = n2.spool.records("copies")
    assert own == copy and own[HELD] == "国家工商行政管理总局\n茶河乡"
    status, res = n1.post(GOOD)
    assert status == 200 and res["held"] is False
    assert HELD not in [r for r in n1.spool.records("own") if r["number"] == res["number"]][0]


def test_a_peers_copy_with_review_words_is_checked_like_the_rest():
    _, good = _record()
    assert check_record({**good, HELD: "茶河乡"})[HELD] == "茶河乡"
    for bad in ("", "茶河乡\n", "a\u2028b", "\n".join(["词"] * 21), "x" * 61, "茶河乡\r"):
        with pytest.raises(ValueError):
            check_record({**good, HELD: bad})
    with pytest.raises(ValueError):
        check_record({**good, "review": "茶河乡"})


def _record() -> tuple[None, dict]:
    return None, {"number": "JY-20261205-1-000001", "unit": "jiaoyu", "node": "n1",
                  "received": "2026-12-05T01:02:03Z", "subject": GOOD["subject"],
                  "text": GOOD["text"], "name": GOOD["name"], "contact": GOOD["contact"],
                  "token_hash": "0" * 64, "source": ""}


def test_the_release_carries_the_lists_and_the_limit_per_unit_and_the_node_reads_them(
        tmp_path):
    inv = load(REPO / "inventory", state=tmp_path / "state")
    doc = json.loads(render._messages(inv, inv.hosts.nodes[0].name))
    assert doc["per_unit"] == [1000, 3600]
    assert {w for w, _, _ in doc["words"]["rules"]} >= {"代开发票", "茶河乡"}
    config = tmp_path / "messages.json"
    config.write_text(json.dumps(doc))
    live = ms.Live(str(config)).current()
    assert live.per_unit == (1000, 3600.0)
    assert [f.word for f in live.words.find("代开发票")] == ["代开发票"]
    # a county without message boxes ships no words: a list's change is no new release
    bare = replace(inv, tenants=tuple(t for t in inv.tenants if t.messages is None))
    assert json.loads(render._messages(bare, bare.hosts.nodes[0].name))["words"] == {}


def test_the_limit_per_unit_is_the_countys_setting(tmp_path):
    inv = example_inventory(tmp_path / "inventory")
    with open(inv / "cluster.yaml", "a") as f:
        f.write("\nmessages:\n  per_unit_hour: 50\n")
    loaded = load(inv, state=tmp_path / "state")
    assert json.loads(render._messages(loaded, "n1"))["per_unit"] == [50, 3600]
