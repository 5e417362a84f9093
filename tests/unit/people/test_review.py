"""The review chain (pure): order of levels, who may decide each, four eyes."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.people.review import (
    COMMENT_MAX,
    TIES_DAYS,
    Chain,
    ReviewError,
    clean_comment,
    makers,
    tie_window,
)

UNIT, COUNTY = frozenset({"unit"}), frozenset({"county"})


def test_two_levels_go_live_only_after_both_in_order():
    c = Chain(("unit", "county"), "wangfang")
    assert c.next_level == 0 and not c.approved
    assert "the unit's reviewers" in (c.refusal("zhao", COUNTY) or "")
    c, step = c.decide("lisi", UNIT, "approved", 1.0, "内容无误")
    assert (step.level, step.kind, step.by, step.comment) == (0, "unit", "lisi", "内容无误")
    assert c.next_level == 1 and not c.approved
    assert "a county operator" in (c.refusal("lisi2", UNIT) or "")
    c, _ = c.decide("zhao", COUNTY, "approved", 2.0)
    assert c.approved and c.next_level is None
    assert "approved at every level" in (c.refusal("x", UNIT | COUNTY) or "")


def test_a_rejection_at_any_level_ends_the_chain():
    c = Chain(("unit", "unit", "county"), "wangfang")
    c, _ = c.decide("lisi", UNIT, "approved", 1.0)
    c, step = c.decide("zhangsan", UNIT, "rejected", 2.0, "标题有误")
    assert c.rejected and not c.approved and c.next_level is None and step.level == 1
    with pytest.raises(ReviewError, match="rejected"):
        c.decide("zhao", COUNTY, "approved", 3.0)


def test_four_eyes_publisher_and_one_person_per_level():
    c = Chain(("unit", "unit"), "wangfang")
    assert "you published" in (c.refusal("wangfang", UNIT) or "")
    c, _ = c.decide("lisi", UNIT, "approved", 1.0)
    with pytest.raises(ReviewError, match="different person"):
        c.decide("lisi", UNIT, "approved", 2.0)
    # the county's operators at the control machine are not held to it
    c2, _ = c.decide("lisi", UNIT, "approved", 2.0, four_eyes=False)
    assert c2.approved


def test_comments_are_kept_clean_and_bounded():
    assert clean_comment(" 请修改\r\n第二段\x1b[31m \x00") == "请修改\n第二段[31m"
    assert clean_comment("<script>alert(1)</script>") == "<script>alert(1)</script>"
    with pytest.raises(ReviewError, match=f"at most {COMMENT_MAX}"):
        clean_comment("字" * (COMMENT_MAX + 1))


people = st.sampled_from(["a", "b", "c", "d", "pub"])
kinds = st.sampled_from([UNIT, COUNTY, UNIT | COUNTY])


@given(levels=st.lists(st.sampled_from(["unit", "county"]), min_size=1, max_size=3),
       tries=st.lists(st.tuples(people, kinds, st.booleans()), max_size=8))
def test_any_sequence_of_attempts_respects_the_chain(levels, tries):
    """Whatever people try: a release is approved only when every level was approved in
    order, each by a different person who may decide that level and is not the publisher."""
    c = Chain(tuple(levels), "pub")
    for who, may, approve in tries:
        try:
            c, _ = c.decide(who, may, "approved" if approve else "rejected", 0.0)
        except ReviewError:
            pass
    if c.approved:
        assert [s.level for s in c.steps] == list(range(len(levels)))
        assert all(s.decision == "approved" and s.kind == levels[s.level] for s in c.steps)
        assert len({s.by for s in c.steps}) == len(levels) and "pub" not in {s.by for s in c.steps}
    assert sum(s.decision == "rejected" for s in c.steps) <= 1


def test_an_account_the_publisher_made_or_reset_is_not_a_second_person():
    """A unit admin acting alone: publish as the admin (or an editor), approve as a reviewer
    the admin created or reset. With four eyes the tie is refused in either direction and
    against every earlier decider; operators at the CLI (no four eyes) are not bound."""
    chain = Chain(("unit", "county"), "zhoujie")
    unit = frozenset({"unit"})
    made = frozenset({("zhoujie", "newreviewer")})
    why = chain.refusal("newreviewer", unit, True, made)
    assert why and "zhoujie" in why and "created or reset your account" in why
    with pytest.raises(ReviewError):
        chain.decide("newreviewer", unit, "approved", 1.0, four_eyes=True, ties=made)
    assert chain.refusal("newreviewer", unit, False, made) is None
    assert chain.refusal("lisi", unit, True, made) is None
    reverse = frozenset({("lisi", "zhoujie")})          # the reviewer made the publisher
    assert "you created or reset" in chain.refusal("lisi", unit, True, reverse)
    after, _ = chain.decide("lisi", unit, "approved", 1.0)
    tied = frozenset({("lisi", "op2")})                   # level 1's decider made op2
    assert "lisi" in after.refusal("op2", frozenset({"county"}), True, tied)
    assert after.refusal("op1", frozenset({"county"}), True, tied) is None
    both = frozenset({("admin7", "pen"), ("admin7", "sock")})   # one admin made both
    chain = Chain(("unit",), "pen")
    assert "admin7 created or reset both" in chain.refusal("sock", unit, True, both)


def test_account_ties_come_from_the_audit_log_within_the_window(tmp_path):
    from controlplane.core.state import State
    st = State(tmp_path / "state.db")
    with st.tx() as db:
        for name, unit in (("zhoujie", "jiaoyu"), ("operator", None)):
            db.execute("INSERT INTO people (name, display, unit, roles, email, password, "
                       "created_at, password_at) VALUES (?, ?, ?, '[]', '', '', 0, 0)",
                       (name, name, unit))
    st.audit("user.add", "newreviewer", {}, who="zhoujie")
    st.audit("user.reset", "lisi", {}, who="zhoujie")
    st.audit("user.add", "zhoujie", {}, who="operator")
    st.audit("content.publish", "lisi", {}, who="zhoujie")
    assert st.account_ties({"zhoujie", "newreviewer", "lisi"}, 0) == {
        ("zhoujie", "newreviewer"), ("zhoujie", "lisi")}      # an operator's add: no tie
    assert st.account_ties({"newreviewer"}, 0) == {("zhoujie", "newreviewer")}
    assert st.account_ties({"zhoujie", "newreviewer"}, 10**12) == frozenset()
    assert st.account_ties(set(), 0) == frozenset()


DAY = 86400.0
NOW = 1_900_000_000.0


def test_the_tie_window_covers_30_days_and_the_whole_wait():
    """Ties count over the last 30 days before the decision, and over the whole time the
    release has waited when that is longer."""
    assert tie_window(None, NOW) == NOW - TIES_DAYS * DAY
    assert tie_window(NOW - DAY, NOW) == NOW - TIES_DAYS * DAY
    assert tie_window(NOW - 45 * DAY, NOW) == NOW - 45 * DAY


def test_makers_follow_accounts_made_by_accounts():
    ties = frozenset({("admin7", "admin8"), ("admin8", "sock"), ("op", "admin7"),
                      ("sock", "sock")})
    assert makers("sock", ties) == {"sock": ("sock",), "admin8": ("admin8", "sock"),
                                    "admin7": ("admin7", "admin8", "sock"),
                                    "op": ("op", "admin7", "admin8", "sock")}
    assert makers("pen", ties) == {"pen": ("pen",)}
    cycle = frozenset({("a", "b"), ("b", "a")})           # reset each other: still ends
    assert makers("a", cycle) == {"a": ("a",), "b": ("b", "a")}


def test_a_second_admin_in_between_does_not_make_a_second_person():
    """The admin makes a second admin, who makes the reviewer; the admin's editor publishes
    and the reviewer approves: refused, naming the way. The same in every direction."""
    unit = frozenset({"unit"})
    ties = frozenset({("admin7", "pen"), ("admin7", "admin8"), ("admin8", "sock")})
    why = Chain(("unit",), "pen").refusal("sock", unit, True, ties)
    assert why and "admin7 created or reset both" in why
    assert "admin7 → admin8 → sock" in why
    why = Chain(("unit",), "admin7x").refusal(
        "sock", unit, True, ties | {("admin7", "admin7x")})
    assert why and "admin7 → admin8 → sock" in why
    # the publisher holds the approver's account through another account
    why = Chain(("unit",), "admin7").refusal("sock", unit, True, ties)
    assert why and "admin7, who took part in this release, created or reset your account" in why
    # the approver holds the publisher's account through another account
    why = Chain(("unit",), "sock").refusal("admin7", unit, True, ties)
    assert why and "you created or reset the account of sock" in why
    assert Chain(("unit",), "pen").refusal("lisi", unit, True, ties) is None


people_ = st.sampled_from(["adm", "adm2", "pen", "rev", "lisi"])


@given(ties=st.frozensets(st.tuples(people_, people_), max_size=8))
def test_whoever_holds_the_publishers_account_never_holds_the_approvers(ties):
    """Whatever accounts made which: an approval with four eyes goes through only when no
    one (the two themselves included) holds, through any chain of accounts made or reset,
    both the publisher's account and the approver's."""
    chain = Chain(("unit",), "pen")

    def holders(account):
        found, todo = {account}, [account]
        while todo:
            a = todo.pop()
            for m, t in ties:
                if t == a and m not in found:
                    found.add(m)
                    todo.append(m)
        return found
    allowed = chain.refusal("rev", frozenset({"unit"}), True, ties) is None
    assert allowed == (not holders("pen") & holders("rev"))
    more = ties | {("adm", "rev"), ("adm", "pen")}
    assert chain.refusal("rev", frozenset({"unit"}), True, more) is not None


def test_ties_come_from_the_audit_log_up_the_makers_within_the_window(tmp_path):
    """The shell's side: chains.ties reads the audit log up the makers (an admin's admin),
    counting what was made in the last 30 days or since the release was submitted."""
    from controlplane.core.state import State
    from controlplane.people import chains
    st = State(tmp_path / "state.db")
    with st.tx() as db:
        for name in ("admin7", "admin8", "pen", "sock"):
            db.execute("INSERT INTO people (name, display, unit, roles, email, password, "
                       "created_at, password_at) VALUES (?, ?, 'caizheng', '[]', '', '', 0, "
                       "0)", (name, name))
        for ts, actor, target in ((NOW - 40 * DAY, "admin7", "admin8"),
                                  (NOW - 2 * DAY, "admin8", "sock"),
                                  (NOW - 3 * DAY, "admin7", "pen")):
            db.execute("INSERT INTO audit (ts, actor, action, target, detail) VALUES "
                       "(?, ?, 'user.add', ?, '{}')", (ts, actor, target))
    unit = frozenset({"unit"})
    # Submitted 5 days ago: admin7 made admin8 40 days ago, before the window: no tie.
    fresh = Chain(("unit",), "pen", (), NOW - 5 * DAY)
    got = chains.ties(st, fresh, "sock", NOW)
    assert got == {("admin8", "sock"), ("admin7", "pen")}
    assert fresh.refusal("sock", unit, True, got) is None
    # Submitted 50 days ago and still waiting: admin8 was made meanwhile, by admin7.
    old = Chain(("unit",), "pen", (), NOW - 50 * DAY)
    got = chains.ties(st, old, "sock", NOW)
    assert got == {("admin8", "sock"), ("admin7", "pen"), ("admin7", "admin8")}
    why = old.refusal("sock", unit, True, got)
    assert why and "admin7 created or reset both" in why and "since this release was" in why
    st.close()
