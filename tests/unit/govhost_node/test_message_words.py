"""The county's word lists on citizens' messages (issue 38): a `block` word refuses the
message with the reason and keeps nothing; a `review` word holds it for the unit, on both
copies. The node matches without the control machine's automaton and OpenCC, so a property
test holds the two matchers to the same answers, evasions included (separators, full-width
letters, traditional characters, upper case)."""
import json
from dataclasses import replace
from urllib.parse import urlencode

import opencc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import wordlists
from controlplane.core.errors import ManifestError
from controlplane.core.inventory import load
from controlplane.core.wordlists import WordList
from controlplane.sites import render
from controlplane.wording.match import Matcher
from govhost_node import message_server as ms
from govhost_node import messages as rules
from govhost_node.message_spool import HELD, check_record
from govhost_node.words import Screen, simplified
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
                    {"word": "国家卫生和计划生育委员会"}, {"word": "干部于是"},
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
            ("國家衛生和計畫生育委員會", {"国家卫生和计划生育委员会"}),   # 計畫: a phrase
            ("國家衛生和計 畫生育委員會，計\n畫", {"国家卫生和计划生育委员会"}),  # split by a space
            ("代\u115f开发票，代\uffa0开发票", {"代开发票"}),          # invisible fillers
            ("茶河乡村振兴很好", set()),                       # the list's except_in
            ("茶河乡的路，茶河乡村振兴", {"茶河乡"}),
            ("開發區管委會", set()),                          # not a traditional list
            ("开发区管委会的样板", {"开发区管委会"}),          # a note neither refuses nor holds
            ("普通的留言内容", set())]:
        assert {f.word for f in screen.find(text)} == words == _serious(text), text


_PIECES = ["代开发票", "网上博彩", "abc发票", "ＡＢＣ发票", "国家工商行政管理总局", "茶河乡",
           "茶河乡村振兴", "开发区管委会", "样板", "路灯", "青水", "，", " ", "\n", "。", "X",
           # traditional phrases OpenCC converts as a whole (計畫 is 计划, 乾隆 keeps 乾)
           "國家衛生和計畫生育委員會", "計畫", "乾部於是", "乾隆", "於", "\u1160"]


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
    assert SPEC["t2s"]["發"] == "发" and SPEC["t2s_phrases"]["計畫"] == "计划"
    assert SPEC["t2s"]["\U0002005e"] == "\U0002003e"            # beyond the BMP: 𠁞 is 𠀾
    assert SPEC["t2s"]["\U00030ede"] == "\U00030edd"            # and beyond plane 2: 𰻞
    assert SPEC["t2s_phrases"]["慰藉"] == "慰藉"     # a phrase kept as it is still cuts the text
    assert wordlists.for_messages({}) == {} and not Screen({}) and Screen(None).find("代开发票") == []
    plain = {"p.yaml": WordList.model_validate({"entries": [{"word": "代开发票"}]})}
    assert "t2s" not in wordlists.for_messages(plain)          # no traditional list, no tables


def test_the_node_converts_traditional_text_as_opencc_does():
    """The node has OpenCC's tables, not OpenCC: its conversion is held to OpenCC's over
    texts made of every phrase OpenCC converts as a whole and many single characters."""
    import random
    chars, phrases = SPEC["t2s"], SPEC["t2s_phrases"]
    pool = list(phrases) + list(chars)[::7]
    rnd = random.Random(38)
    for _ in range(2000):
        text = "".join(rnd.choice(pool) for _ in range(rnd.randint(1, 9)))
        assert simplified(text, chars, phrases) == wordlists.simplified(text), text
    for text, want in (("慰藉着", "慰藉着"), ("乾斷食", "干断食"), ("計畫", "计划")):
        assert simplified(text, chars, phrases) == wordlists.simplified(text) == want


def test_a_list_word_a_record_could_not_carry_is_refused_with_its_file():
    for bad, why in (("代开 ", "space"), ("代\u200b开", "format"), ("e\u0301", "NFC"),
                     ("代\x85开", "control"), ("C++", "too short"), ("U.S.", "too short")):
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


def test_a_refused_message_spends_its_proof_of_work(screened):
    """One proof of work buys one check of the words (found by the attack review: the
    check ran before the challenge was spent, so one challenge bought any number)."""
    n1, _ = screened
    _, c = n1.request("GET", "/challenge", headers={"X-Govhost-Unit": "jiaoyu"})
    form = urlencode({**GOOD, "text": "代开发票，联系我。" * 3, "challenge": c["challenge"],
                      "nonce": rules.solve(c["challenge"])}).encode()
    headers = {"X-Govhost-Unit": "jiaoyu", "X-Real-IP": "203.0.113.9",
               "Content-Type": "application/x-www-form-urlencoded"}
    status, res = n1.request("POST", "/message", form, headers)
    assert status == 400 and "代开发票" in res["problems"]["text"]
    status, res = n1.request("POST", "/message", form, headers)
    assert status == 400 and "already used" in res["problems"]["challenge"]


def test_a_long_text_of_excused_forms_is_read_once_through():
    """`茶河乡村振兴` excuses `茶河乡` (its except_in) a thousand times over; the listed word
    at the end is still found, and the one inside each excused form is not."""
    text = "茶河乡村振兴" * 830 + "茶河乡"
    assert [f.word for f in Screen(SPEC).find(text)] == ["茶河乡"] == sorted(_serious(text))
    assert Screen(SPEC).find("茶河乡村振兴" * 830) == []


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


def test_the_proof_of_work_is_the_countys_setting_and_its_challenges_ask_that_much(tmp_path):
    """A node's challenges carry the county's `work_bits` (default the rules' 18); the bits
    are under the challenge's MAC, so a sender cannot ask for less."""
    from controlplane.core import manifest
    assert manifest.MessagesSettings().work_bits == rules.WORK_BITS == 18
    inv = example_inventory(tmp_path / "inventory")
    with open(inv / "cluster.yaml", "a") as f:
        f.write("\nmessages:\n  work_bits: 13\n")
    doc = json.loads(render._messages(load(inv, state=tmp_path / "state"), "n1"))
    assert doc["work_bits"] == 13
    config = tmp_path / "messages.json"
    config.write_text(json.dumps(doc))
    live = ms.Live(str(config)).current()
    assert live.work_bits == 13
    secret = live.secret
    text = rules.challenge(secret, "jiaoyu", "n1", bits=live.work_bits)
    assert text.split(".")[4] == "13"
    rules.verify(secret, "jiaoyu", "n1", text, rules.solve(text))
    lowered = text.split(".")
    lowered[4] = "1"
    with pytest.raises(rules.Refused):
        rules.verify(secret, "jiaoyu", "n1", ".".join(lowered), "0")
    # an older node file without the key asks the rules' default
    del doc["work_bits"]
    config.write_text(json.dumps(doc))
    assert ms.Live(str(config)).current().work_bits == 18


def test_work_bits_outside_12_to_24_is_refused_naming_the_field(tmp_path):
    inv = example_inventory(tmp_path / "inventory")
    with open(inv / "cluster.yaml", "a") as f:
        f.write("\nmessages:\n  work_bits: 8\n")
    with pytest.raises(ManifestError) as e:
        load(inv, state=tmp_path / "state")
    assert "work_bits" in str(e.value) and "cluster.yaml" in str(e.value)


def test_invisible_fillers_are_refused_in_a_field():
    for filler in ("\u115f", "\u1160", "\u3164", "\uffa0"):
        with pytest.raises(ValueError, match="not allowed"):
            rules.clean(f"代{filler}开发票")


def test_an_errors_text_is_printed_as_text_never_as_markup(capsys):
    """Review words reach `messages answer`'s refusal; a word such as `[link=…]…[/link]`
    became a live link in the operator's terminal, and `[/x]` crashed the command."""
    import typer

    from commands import output
    from controlplane.core.errors import GovhostError
    with pytest.raises(typer.Exit):
        output.fail(GovhostError("held for ([link=https://evil.example]茶河乡[/link]、[/x])"
                                 "\x1b]8;;https://evil.example\x1b\\\x1b[2J"))
    said = capsys.readouterr().err
    assert "[link=https://evil.example]茶河乡[/link]、[/x]" in said and "\x1b" not in said
