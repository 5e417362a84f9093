"""People: who may do what (every role, action and unit), throttling at and around its
limits, and the store with real argon2 hashes and real TOTP codes."""
import time

import pyotp
import pytest
from hypothesis import given, settings
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
    "editor": {"view_unit", "upload", "submit", "propose_rollback", "read_messages",
               "answer_messages", "forward_messages"},
    "reviewer": {"view_unit", "review_unit", "confirm_rollback", "read_messages"},
    "admin": {"view_unit", "manage_people"},        # no citizen's contact for an admin
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
    unit_ok = {"view_unit", "review_county", "confirm_rollback", "read_messages",
               "forward_messages"}                  # they route messages, never answer
    assert all(roles.may(op, action, u) is (action in unit_ok) for u in UNITS)
    assert roles.may(op, action, None) is (action in {"view_county", "decide_requests",
                                                      "route_messages"})


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


@pytest.mark.parametrize("n,allowed,attacked", [(0, True, False), (2, True, False),
                                                (9, False, False), (10, False, True)])
def test_throttle_at_and_around_its_limits(n, allowed, attacked):
    now = 10_000.0
    d = throttle.decide([now - 1] * n, now)
    assert (d.allowed, d.under_attack) == (allowed, attacked)
    if n == 9:                      # the 7th wait: 2^6 s
        assert d.wait == pytest.approx(63)


def test_failures_past_the_window_do_not_count():
    now = 10_000.0
    assert throttle.decide([now - 901] * 20, now).allowed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=5000), max_size=300),
       st.floats(min_value=0, max_value=5000))
def test_the_wait_is_bounded_and_ends_by_itself(failures, now):
    """However many failures, and whenever they were: nobody waits longer than max_wait,
    and once the wait is over the next attempt is taken (there is no lockout)."""
    policy = throttle.Policy()
    failures = [t for t in failures if t <= now]
    d = throttle.decide(failures, now, policy)
    assert 0 <= d.wait <= policy.max_wait
    assert throttle.decide(failures, now + d.wait, policy).allowed


@pytest.mark.parametrize("address,source", [
    ("203.0.113.9", "203.0.113.9"), ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.9", "203.0.113.9"), ("-", "-")])
def test_ipv6_sources_are_throttled_per_64(address, source):
    assert throttle.source(address) == source


def _people(tmp_path) -> People:
    return People(State(tmp_path / "state.db"), SECRET, "青水县",
                  throttle.Policy(window=900, slow_after=3, max_wait=8, alert_after=5))


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


def test_guessing_is_slowed_never_locked_and_a_burst_is_audited(tmp_path):
    """Wrong passwords from anywhere slow a name down, and hammering it while it waits does
    not stretch the wait: its owner logs in once the wait is over, with no operator."""
    people = _people(tmp_path)
    ed = people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    base = time.time() - 1000
    t = base
    checked = 0
    for i in range(40):               # an attacker hammering from many addresses
        a = people.login("wangfang", f"guess{i}", "", f"127.0.9.{i + 1}", t)
        assert not a.ok
        checked += a.code == "wrong"
        t += 0.5
    assert checked < 10               # most were refused unchecked (throttled)
    log = [e["action"] for e in people.st.audit_log(50)]
    assert log.count("user.attacked") == 1
    assert people.status("wangfang", t)["under_attack"]
    wait = people.status("wangfang", t)["wait"]
    assert 0 < wait <= 8
    assert not people.login("wangfang", ed.password, "", "127.0.9.99", t).ok
    assert people.login("wangfang", ed.password, "", "127.0.9.99", t + wait + 0.1).ok


def test_a_browser_its_owner_logged_in_from_is_not_slowed_by_strangers_guessing(tmp_path):
    """Guessing at a name from many addresses slows the name down for strangers, but the
    owner's own browser (its device cookie, from an earlier login) gets in at once; a cookie
    of another person, a forged one or one from before a reset does not."""
    people = _people(tmp_path)
    ed = people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    people.add("lisi", "李四", "jiaoyu", ["editor"], UNITS)
    t = time.time() - 1000
    first = people.login("wangfang", ed.password, "", "10.1.1.1", t, session=True)
    assert first.ok and first.device
    theirs = people.login("lisi", "x" * 12, "", "10.1.1.2", t)     # a failure, no cookie
    assert not theirs.ok and theirs.device is None
    for i in range(40):                       # strangers hammer the name
        people.login("wangfang", f"guess{i}", "", f"127.0.9.{i + 1}", t + 1 + i * 0.5)
    t = next(x for x in (t + 20.6 + k * 0.1 for k in range(100))
             if people.status("wangfang", x)["wait"] > 1)       # while the name waits
    assert not people.login("wangfang", ed.password, "", "10.1.1.1", t).ok   # no cookie
    for device in ("forged-" + "x" * 30, people.login(
            "lisi", "y" * 12, "", "10.1.1.2", t).device or "none"):
        assert not people.login("wangfang", ed.password, "", "10.1.1.1", t,
                                device=device).ok
    again = people.login("wangfang", ed.password, "", "10.1.1.1", t, session=True,
                         device=first.device)
    assert again.ok and again.device is None               # known: no new cookie
    people.reset("wangfang")                               # a reset forgets the browsers
    assert not people._known_device("wangfang", first.device, t)


def test_a_malformed_second_factor_is_an_ordinary_refusal_and_recorded(tmp_path):
    people = _people(tmp_path)
    rv = people.add("lisi", "李四", "jiaoyu", ["reviewer"], UNITS)
    now = time.time()
    good = _code(rv, now)
    arabic = good.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    fullwidth = good.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    for i, code in enumerate((arabic, fullwidth, "12345", "1234567", "abcdef", "\u2028",
                              good + "\n1")):
        at = now + 10 * i                  # past each wait: every one is checked
        a = people.login("lisi", rv.password, code, "127.0.9.3", at)
        assert not a.ok and a.why == "wrong name, password or code", code
    rows = people.st.db.execute("SELECT why FROM logins WHERE name = 'lisi' AND ok = 0"
                                ).fetchall()
    assert ("second factor malformed",) in rows


def test_changing_the_password_is_throttled_and_ends_other_sessions(tmp_path):
    people = _people(tmp_path)
    ed = people.add("wangfang", "王芳", "jiaoyu", ["editor"], UNITS)
    now = time.time()
    for i in range(3):
        with pytest.raises(PeopleError, match="not right"):
            people.change_password("wangfang", f"guess{i}", "a-new-password-1", "x", now + i)
    with pytest.raises(PeopleError, match="wait"):
        people.change_password("wangfang", ed.password, "a-new-password-1", "x", now + 2.5)
    people.change_password("wangfang", ed.password, "a-new-password-1", "x", now + 20)
    assert people.sessions_after("wangfang") == now + 20


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


def test_a_units_people_are_those_all_lists_for_it(tmp_path):
    """A unit's people page reads the unit's people only (it built every person of the
    county: 48 ms at 15,000, the hunt of stop 67); the same people, in the same order."""
    people = _people(tmp_path)
    units = sorted(UNITS)
    for i in range(30):
        people.add(f"p{(i * 7) % 30:02d}", "某人", units[i % len(units)], ["editor"], UNITS)
    people.add("ops", "运维", None, ["operator"], UNITS)
    for unit in [*units, "nobody"]:
        assert people.of_unit(unit) == [q for q in people.all() if q.unit == unit], unit
    assert people.of_unit(units[0])
