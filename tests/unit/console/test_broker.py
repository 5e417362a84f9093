"""The console's broker (the privileged half): every request checked again, whoever sends it.
The real socket and the web process as its own account: tests/integration/test_console_split.py."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.console import broker as broker_mod
from controlplane.console.broker import OPS, Broker, Refused
from controlplane.console.transport import Local, answer
from controlplane.core.county import County
from controlplane.people.store import IDLE_MINUTES, SESSION_HOURS, People
from tests.helpers import example_inventory

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    dest = tmp_path_factory.mktemp("broker") / "inventory"
    example_inventory(dest)
    c = County(dest)
    p = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    units = frozenset(t.name for t in c.inv.tenants)
    c.first = p.add("xinren", "新人", "jiaoyu", ["editor"], units).password   # must change
    p.add("bianji", "编辑", "jiaoyu", ["editor"], units)
    p.change_password("bianji", p.reset("bianji").password, "bianji-password-12")
    p.st.close()
    return c


def _login(link: Local, name: str, password: str) -> dict:
    return link.call("login", name=name, password=password, code="", source="10.1.2.3",
                     device="")


def test_a_first_password_must_be_changed_before_anything_else(county):
    link = Local(Broker(county, unit_view=lambda c, n: {"unit": n}))
    got = _login(link, "xinren", county.first)
    assert got["ok"] and got["must_change"]
    sid = got["sid"]
    with pytest.raises(Refused) as exc:
        link.call("unit", sid=sid, unit="jiaoyu")
    assert exc.value.kind == "password"
    assert link.call("whoami_any", sid=sid)["must_change"] is True
    link.call("password", sid=sid, old=county.first, new="xinren-password-12",
              source="10.1.2.3")
    assert link.call("unit", sid=sid, unit="jiaoyu")["u"] == {"unit": "jiaoyu"}


def test_sessions_end_when_idle_or_old_and_only_their_hash_is_kept(county):
    p = People(county.open_state(), county.inv.secret, county.inv.cluster.name)
    try:
        t0 = time.time() + 10           # after the password was set (it ends older sessions)
        sid = p.open_session("bianji", False, now=t0)
        assert p.session(sid, now=t0 + IDLE_MINUTES * 60 - 1)[0].name == "bianji"
        assert p.session(sid, now=t0 + IDLE_MINUTES * 60 * 2) is None          # idle
        sid = p.open_session("bianji", False, now=t0)
        for t in range(0, SESSION_HOURS * 3600, 1200):
            assert p.session(sid, now=t0 + t) is not None                       # kept busy
        assert p.session(sid, now=t0 + SESSION_HOURS * 3600 + 1) is None       # too old
        stored = [r[0] for r in p.st.db.execute("SELECT id FROM console_sessions")]
        assert sid not in stored
        sid = p.open_session("bianji", False)
        p.end_sessions("bianji")                                 # logout, reset, disable
        assert p.session(sid) is None
    finally:
        p.st.close()


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(sorted(OPS)),
       args=st.dictionaries(st.sampled_from(["unit", "release", "rid", "sid", "name", "x"]),
                            st.one_of(st.text(max_size=5), st.integers(), st.booleans(),
                                      st.lists(st.text(max_size=3), max_size=2)),
                            max_size=4))
def test_whatever_the_web_side_sends_without_a_session_changes_nothing(county, op, args):
    """Any request, any arguments, a session id nobody was given: an answer, never a change
    and never a crash (a refusal, or what anyone may see: the login form's own requests)."""
    b = Broker(county, unit_view=lambda c, n: {"unit": n})
    args = {k: v for k, v in args.items() if k != "sid"}
    if OPS[op].needs is not None:
        args["sid"] = "forged-session-id"
    with county.state() as st_:
        before = st_.db.execute("SELECT count(*) FROM audit").fetchone()[0]
    doc = answer(b, {"op": op, "args": args}, [])
    if OPS[op].needs is not None:
        assert doc["ok"] is False and doc["kind"] in ("bad", "login"), doc
    with county.state() as st_:
        assert st_.db.execute("SELECT count(*) FROM audit").fetchone()[0] == before


def test_every_request_declares_what_it_needs():
    needs = {o.needs for o in OPS.values()}
    assert needs <= {None, "person", "password", *broker_mod.roles.ACTIONS}
    anyone = sorted(o.name for o in OPS.values() if o.needs is None)
    # What a stranger may ask: the login form, the site request form and its status link,
    # the enrolment link, and the facts the pages are drawn with.
    assert anyone == ["enrol", "enrolment", "facts", "login", "request_status",
                      "request_submit"]


def test_a_login_that_checked_a_password_changed_meanwhile_opens_no_session(county,
                                                                           monkeypatch):
    """The race the review found: a login reads the old password, the owner changes it (or
    the county resets it) before the login records itself; the login gets no session."""
    from controlplane.people import store
    p = People(county.open_state(), county.inv.secret, county.inv.cluster.name)
    other = People(county.open_state(), county.inv.secret, county.inv.cluster.name)
    real = store._hasher
    fired = []

    class Racing:
        """The real hasher; its first check lets the owner's change commit meanwhile."""

        def __getattr__(self, name):
            return getattr(real, name)

        def verify(self, stored, password):
            real.verify(stored, password)
            if not fired:
                fired.append("changing")
                other.change_password("bianji", "bianji-password-12", "bianji-password-13")
            return True
    try:
        monkeypatch.setattr(store, "_hasher", Racing())
        got = p.login("bianji", "bianji-password-12", "", "10.9.9.9", session=True)
        assert fired and not got.ok and got.session is None
        monkeypatch.setattr(store, "_hasher", real)
        # a session renewed after a password change does not outlive a later reset
        sid = p.login("bianji", "bianji-password-13", "", "10.9.9.9", session=True).session
        changed = p.change_password("bianji", "bianji-password-13", "bianji-password-14")
        other.reset("bianji")
        p.session_renewed(sid, "bianji", changed)
        assert p.session(sid) is None
    finally:
        p.st.close()
        other.st.close()
