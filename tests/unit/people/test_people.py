"""People: who may do what (every role, action and unit), throttling at and around its
limits, and the store with real argon2 hashes and real TOTP codes."""
import time

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.core.state import State
from controlplane.people import roles, throttle
from controlplane.people.roles import PeopleError, Person
from controlplane.people.store import People, unseal

UNITS = frozenset({"jiaoyu", "chahe"})
SECRET = b"k" * 32


def _p(unit, *rls, disabled=False):
    return Person("x", "X", unit, frozenset(rls), disabled=disabled)


EXPECTED = {   # role -> actions on its own unit
    "editor": {"view_unit", "upload", "submit", "propose_rollback"},
    "reviewer": {"view_unit", "review_unit", "confirm_rollback"},
    "admin": {"view_unit", "manage_people"},
}


@pytest.mark.parametrize("role", sorted(EXPECTED))
@pytest.mark.parametrize("action", roles.ACTIONS)
def test_unit_roles_act_on_their_own_unit_only(role, action):
    me = _p("jiaoyu", role)
    assert roles.may(me, action, "jiaoyu") is (action in EXPECTED[role])
    assert roles.may(me, action, "chahe") is False
    assert roles.may(me, action, None) is False
    assert roles.may(_p("jiaoyu", role, disabled=True), action, "jiaoyu") is False


@pytest.mark.parametrize("action", roles.ACTIONS)
def test_operators_see_every_unit_and_decide_the_countys_level(action):
    op = _p(None, "operator")
    unit_ok = {"view_unit", "review_county", "confirm_rollback"}
    assert all(roles.may(op, action, u) is (action in unit_ok) for u in UNITS)
    assert roles.may(op, action, None) is (action in {"view_county", "decide_requests"})


@given(st.sampled_from(sorted(UNITS)), st.sets(st.sampled_from(sorted(roles.UNIT_ROLES)),
                                                min_size=1),
       st.sampled_from(roles.ACTIONS), st.text(min_size=1, max_size=20))
def test_nobody_of_one_unit_acts_on_another(unit, rls, action, other):
    if other != unit:
        assert not roles.may(Person("x", "X", unit, frozenset(rls)), action, other)


@pytest.mark.parametrize("name,unit,rls,expect", [
    ("Zhang", "jiaoyu", {"editor"}, "login name"),
    ("zhang", "jiaoyu", set(), "at least one role"),
    ("zhang", "jiaoyu", {"boss"}, "unknown role boss"),
    ("zhang", None, {"editor"}, "give --unit"),
    ("zhang", "nosuch", {"editor"}, "no unit named"),
    ("zhang", "jiaoyu", {"operator"}, "works for the county"),
    ("zhang", None, {"operator", "editor"}, "works for the county"),
])
def test_impossible_people_are_refused(name, unit, rls, expect):
    with pytest.raises(PeopleError, match=expect):
        roles.check(name, unit, frozenset(rls), UNITS)


@pytest.mark.parametrize("n,allowed,locked", [(0, True, False), (2, True, False),
                                              (9, False, False), (10, False, True)])
def test_throttle_at_and_around_its_limits(n, allowed, locked):
    now = 10_000.0
    d = throttle.decide([now - 1] * n, now)
    assert (d.allowed, d.locked) == (allowed, locked)
    if n == 9:                      # the 7th wait: 2^6 s, capped at 60
        assert d.wait == pytest.approx(59)


def test_failures_past_the_window_do_not_count():
    now = 10_000.0
    assert throttle.decide([now - 901] * 20, now).allowed


def _people(tmp_path) -> People:
    return People(State(tmp_path / "state.db"), SECRET, "青水县",
                  throttle.Policy(window=900, slow_after=3, lock_after=5, max_wait=1))


def _code(issued, at):
    return pyotp.TOTP(issued.totp_secret).at(at)


def test_login_with_password_and_a_code_once(tmp_path):
    people = _people(tmp_path)
    ed = people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    rv = people.add("lisi", "李四", "jiaoyu", ["reviewer"], UNITS)
    assert ed.totp_uri is None and rv.totp_uri.startswith("otpauth://totp/")
    assert len(ed.password) == 16
    now = time.time()
    ok = people.login("wangfang", ed.password, "", "127.0.9.1", now)
    assert ok.ok and ok.person.unit == "jiaoyu" and ok.must_change
    assert not people.login("lisi", rv.password, "000000", "127.0.9.1", now).ok
    assert people.login("lisi", rv.password, _code(rv, now), "127.0.9.1", now + 1).ok
    again = people.login("lisi", rv.password, _code(rv, now), "127.0.9.1", now + 2)
    assert not again.ok                           # the same code is not taken twice
    raw = people.st.db.execute("SELECT password, totp FROM people WHERE name = 'lisi'").fetchone()
    assert raw[0].startswith("$argon2id$") and rv.totp_secret not in raw[1]
    assert unseal(SECRET, raw[1], "lisi") == rv.totp_secret


def test_guessing_is_slowed_then_locked_and_audited_and_reset_lifts_it(tmp_path):
    people = _people(tmp_path)
    ed = people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    base = time.time() - 100
    answers = [people.login("wangfang", f"guess{i}", "", "127.0.9.7", base + 2 * i)
               for i in range(6)]
    assert [a.ok for a in answers] == [False] * 6
    assert answers[-1].why.startswith("too many failed logins: locked")
    # locked: even the right password is refused now, from any address
    assert not people.login("wangfang", ed.password, "", "127.0.9.8", base + 20).ok
    assert people.status("wangfang", base + 20)["locked"]
    log = [e["action"] for e in people.st.audit_log(20)]
    assert "user.locked" in log
    new = people.reset("wangfang")
    assert people.login("wangfang", new.password, "", "127.0.9.8").ok
    assert not people.login("wangfang", ed.password, "", "127.0.9.8").ok


def test_an_unknown_name_gets_the_same_answer_as_a_wrong_password(tmp_path):
    people = _people(tmp_path)
    people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    a = people.login("nobody", "x", "", "127.0.9.1")
    b = people.login("wangfang", "x", "", "127.0.9.2")
    assert a.why == b.why == "wrong name, password or code"


def test_disabled_people_cannot_log_in_and_passwords_change(tmp_path):
    people = _people(tmp_path)
    ed = people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    people.set_disabled("wangfang", True)
    assert not people.login("wangfang", ed.password, "", "127.0.9.1").ok
    people.set_disabled("wangfang", False)
    with pytest.raises(PeopleError, match="at least 12"):
        people.change_password("wangfang", ed.password, "short")
    people.change_password("wangfang", ed.password, "a-much-longer-one")
    done = people.login("wangfang", "a-much-longer-one", "", "127.0.9.1")
    assert done.ok and not done.must_change
    with pytest.raises(PeopleError, match="exists already"):
        people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
