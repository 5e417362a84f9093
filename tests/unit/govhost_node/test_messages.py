"""The rules a node applies to a citizen's message (issue 38, first part): what a stranger
may put in the form, the proof of work, numbers and deadlines."""
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govhost_node import messages as m

SECRET = b"county message secret"
GOOD = {"subject": "路灯不亮", "text": "青水路与南街路口的路灯已经坏了一周，请尽快修复。",
        "contact": "13800138000", "name": "张先生"}

BREAKS = ["\r", "\n", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_a_good_message_is_taken_as_written():
    d = m.check(GOOD)
    assert (d.subject, d.contact, d.name) == ("路灯不亮", "13800138000", "张先生")
    assert m.check({**GOOD, "contact": "wang.fang@example.cn"}).contact == "wang.fang@example.cn"
    assert m.check({k: v for k, v in GOOD.items() if k != "name"}).name == ""


@pytest.mark.parametrize("brk", BREAKS)
@pytest.mark.parametrize("key", ["subject", "contact", "name"])
def test_a_line_break_of_any_kind_in_a_one_line_field_is_refused(key, brk):
    with pytest.raises(m.Refused) as e:
        m.check({**GOOD, key: "abc" + brk + "X-Injected: 1"})
    assert key in e.value.problems


@pytest.mark.parametrize("brk", BREAKS)
def test_every_line_break_in_the_text_becomes_a_newline(brk):
    d = m.check({**GOOD, "text": f"第一行的内容很长{brk}第二行的内容也长"})
    assert d.text == "第一行的内容很长\n第二行的内容也长"


@pytest.mark.parametrize("ch", ["\u202e", "\u2066", "\x00", "\x1b", "\ud800", "\ue000", "\u061c",
                                "\u200b", "\ufeff", "\U000e0069", "\u3164"])
def test_bidi_overrides_controls_and_private_characters_are_refused(ch):
    for key in ("subject", "text"):
        with pytest.raises(m.Refused) as e:
            m.check({**GOOD, key: GOOD[key] + ch + "abc"})
        assert "U+" in e.value.problems[key]


def test_sizes_and_missing_fields_are_named():
    with pytest.raises(m.Refused) as e:
        m.check({"subject": "x" * (m.SUBJECT_MAX + 1), "text": "短", "contact": "",
                 "name": ["not", "text"]})
    assert set(e.value.problems) == {"subject", "text", "contact", "name"}
    assert "longer than 80" in e.value.problems["subject"]
    assert "at least 10" in e.value.problems["text"]
    assert e.value.problems["contact"] == "is required"
    assert e.value.problems["name"] == "must be text"


@pytest.mark.parametrize("contact", ["12345", "call me", "a@b", "1" * 30, "<a@b.cn>",
                                     "x@y.cn\nBcc: z@w.cn", "-@-.-", "１３８００１３８０００"])
def test_a_contact_must_be_a_phone_number_or_a_mail_address(contact):
    with pytest.raises(m.Refused) as e:
        m.check({**GOOD, "contact": contact})
    assert "contact" in e.value.problems


def test_invisible_text_is_refused_and_a_tab_is_a_space():
    with pytest.raises(m.Refused) as e:
        m.check({**GOOD, "subject": "   ——   ", "text": "。。。。。。。。。。。"})
    assert e.value.problems == {"subject": "has no letter or digit",
                                "text": "has no letter or digit"}
    assert m.check({**GOOD, "text": "第一栏\t第二栏\t第三栏的内容"}).text == "第一栏 第二栏 第三栏的内容"
    # the joiners some scripts need may stand inside a text, not in a one-line field
    assert "\u200d" in m.check({**GOOD, "text": GOOD["text"] + "\u200d字"}).text
    with pytest.raises(m.Refused):
        m.check({**GOOD, "name": "张\u200d三"})


def test_fields_the_form_does_not_have_are_not_kept():
    d = m.check({**GOOD, "number": "JY-1", "published": "yes"})
    assert not hasattr(d, "number") and not hasattr(d, "published")


@given(st.text(max_size=200))
def test_whatever_a_one_line_field_holds_it_comes_back_as_one_line_or_is_refused(s):
    try:
        out = m.clean(s)
    except ValueError:
        return
    assert out.splitlines() in ([out], [])
    assert not any(c in out for c in "\u202e\u2066\x00")


@given(st.text(max_size=300))
def test_whatever_the_text_holds_its_only_line_break_is_a_newline(s):
    try:
        out = m.clean(s, multiline=True)
    except ValueError:
        return
    assert out.splitlines() == out.split("\n") or out == ""


# ------------------------------------------------------------------ proof of work

def test_a_solved_challenge_passes_and_anything_else_is_refused():
    now = 1_800_000_000
    c = m.challenge(SECRET, "jiaoyu", "n1", now=now, bits=10)
    nonce = m.solve(c)
    m.verify(SECRET, "jiaoyu", "n1", c, nonce, now=now + 5)
    wrong = next(str(i) for i in range(10_000) if m.work(c, str(i)) < 10)
    cases = {
        "another secret": (b"other", "jiaoyu", "n1", c, nonce, now),
        "another unit": (SECRET, "renshe", "n1", c, nonce, now),
        "another node": (SECRET, "jiaoyu", "n2", c, nonce, now),
        "expired": (SECRET, "jiaoyu", "n1", c, nonce, now + m.CHALLENGE_SECONDS + 1),
        "from the future": (SECRET, "jiaoyu", "n1", c, nonce, now - 3600),
        "wrong answer": (SECRET, "jiaoyu", "n1", c, wrong, now),
        "fewer bits asked": (SECRET, "jiaoyu", "n1", c.replace(".10.", ".1."), nonce, now),
        "malformed": (SECRET, "jiaoyu", "n1", "abc", nonce, now),
        "long nonce": (SECRET, "jiaoyu", "n1", c, "1" * 33, now),
        "non-ASCII mac": (SECRET, "jiaoyu", "n1", c[:-1] + "é", nonce, now),
        "not a number": (SECRET, "jiaoyu", "n1", c, "１２", now),
    }
    for why, (secret, unit, node, chal, n, at) in cases.items():
        with pytest.raises(m.Refused):
            m.verify(secret, unit, node, chal, n, now=at)
            pytest.fail(why)


def test_the_default_work_is_what_the_docs_say():
    # 18 zero bits: about 262,000 hashes on average, a second or so in a phone's browser
    assert m.WORK_BITS == 18
    assert m.leading_zero_bits(bytes([0, 0, 0b00100000]) + bytes(29)) == 18


def test_a_unit_name_that_is_not_one_cannot_make_a_challenge():
    with pytest.raises(ValueError):
        m.challenge(SECRET, "jiao.yu", "n1")


# ------------------------------------------------------------------ numbers and deadlines

def test_numbers_are_made_here_and_tokens_are_kept_only_as_hashes():
    a = m.accept("JY", 1, 42, date(2026, 12, 5))
    b = m.accept("JY", 1, 43, date(2026, 12, 5))
    assert a.number == "JY-20261205-1-000042"
    assert a.token != b.token and m.valid_token(a.token)
    assert a.token_hash == m.token_hash(a.token) and a.token not in repr(a)
    for bad in ("jy", "J-Y", ""):
        with pytest.raises(ValueError):
            m.accept(bad, 1, 1, date(2026, 12, 5))
    assert not m.valid_token("../../etc/passwd") and not m.valid_token(None)


def test_due_dates_count_working_days_and_the_county_calendar():
    friday = date(2026, 12, 4)
    assert m.due(friday, 5) == date(2026, 12, 11)
    # a holiday on the Monday pushes it a day; a Saturday made a working day pulls it back
    assert m.due(friday, 5, holidays=frozenset({date(2026, 12, 7)})) == date(2026, 12, 14)
    assert m.due(friday, 5, workdays=frozenset({date(2026, 12, 5)})) == date(2026, 12, 10)


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 1, 1)),
       st.integers(min_value=1, max_value=60))
def test_a_due_date_is_the_nth_working_day_after(received, n):
    d = m.due(received, n)
    days = [received + timedelta(days=i) for i in range(1, (d - received).days + 1)]
    assert sum(x.weekday() < 5 for x in days) == n and d.weekday() < 5


@given(st.integers(min_value=0, max_value=12), st.binary(min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_solve_gives_the_smallest_nonce_that_does_the_work(bits, seed):
    """`solve` compares bytes of a copied hash; it must answer what `work`, the server's own
    check, calls the first good nonce."""
    c = m.challenge(seed * 4, "jiaoyu", "n1", bits=bits)
    nonce = m.solve(c)
    assert m.work(c, nonce) >= bits
    assert all(m.work(c, str(i)) < bits for i in range(int(nonce)))
