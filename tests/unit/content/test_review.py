"""The review chain (pure): order of levels, who may decide each, four eyes."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.content.review import COMMENT_MAX, Chain, ReviewError, clean_comment

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
