"""Enrolment links (issue 31, item 7): a person added or reset in the console sets their own
password and takes their second factor through a one-time link mailed to them. The store
keeps only the link's hash; the link works once, for 72 hours, ends when another link is
made for the person or the person is reset, and does nothing while the person is
disabled. Real argon2 hashes and real TOTP codes, a real SQLite state store."""
import hashlib
import sqlite3

import pyotp
import pytest

from controlplane.core.state import State
from controlplane.people.roles import PeopleError
from controlplane.people.store import ENROL_HOURS, People

UNITS = frozenset({"jiaoyu"})
SECRET = b"k" * 32
NOW = 1_900_000_000.0


@pytest.fixture
def people(tmp_path):
    p = People(State(tmp_path / "state.db"), SECRET, "青水县")
    p.add("admin", "Admin", "jiaoyu", ["admin"], UNITS, "admin@jiaoyu.example", by="op")
    p.add("rev", "Rev", "jiaoyu", ["reviewer"], UNITS, "rev@jiaoyu.example", by="admin")
    p.add("ed", "Ed", "jiaoyu", ["editor"], UNITS, "ed@jiaoyu.example", by="admin")
    yield p
    p.st.close()


def test_the_store_keeps_only_the_links_hash(people, tmp_path):
    token = people.enrolment_link("rev", "admin", NOW)
    assert len(token) >= 40
    rows = people.st.db.execute("SELECT token, name, made_by FROM enrolments").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), "rev", "admin")]
    people.st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for f in tmp_path.iterdir():             # nowhere in the database's files
        assert token.encode() not in f.read_bytes(), f


def test_the_person_sets_their_password_and_takes_the_second_factor_once(people):
    token = people.enrolment_link("rev", "admin", NOW)
    shown = people.enrolment(token, NOW + 60)
    assert shown is not None and shown.person.name == "rev" and shown.password == ""
    assert shown.totp_uri.startswith("otpauth://totp/") and shown.totp_secret in shown.totp_uri
    assert people.enrol(token, "rev-自己的密码-2026", NOW + 120) == "rev"
    code = pyotp.TOTP(shown.totp_secret).at(NOW + 150)
    ok = people.login("rev", "rev-自己的密码-2026", code, "127.0.0.9", NOW + 150)
    assert ok.ok and not ok.must_change
    assert people.enrolment(token, NOW + 180) is None            # shown no more
    with pytest.raises(PeopleError, match="has been used"):
        people.enrol(token, "another-password-2026", NOW + 180)
    log = [(e["action"], e["actor"]) for e in people.st.audit_log(20)
           if e["target"] == "rev"]
    assert ("user.enrolled", "rev") in log


def test_an_editor_has_no_second_factor_to_take(people):
    token = people.enrolment_link("ed", "admin", NOW)
    shown = people.enrolment(token, NOW)
    assert shown is not None and shown.totp_secret is None and shown.totp_uri is None


def test_a_link_ends_after_72_hours(people):
    token = people.enrolment_link("rev", "admin", NOW)
    assert people.enrolment(token, NOW + ENROL_HOURS * 3600 - 1) is not None
    assert people.enrolment(token, NOW + ENROL_HOURS * 3600 + 1) is None
    with pytest.raises(PeopleError, match="expired"):
        people.enrol(token, "rev-自己的密码-2026", NOW + ENROL_HOURS * 3600 + 1)


def test_a_new_link_or_a_reset_ends_the_earlier_link_and_disabling_blocks_it(people):
    first = people.enrolment_link("rev", "admin", NOW)
    second = people.enrolment_link("rev", "admin", NOW + 1)
    assert people.enrolment(first, NOW + 2) is None
    assert people.enrolment(second, NOW + 2) is not None
    # The county resets the person at the CLI (say the admin gave a mailbox of their own):
    # the link already mailed must not undo it.
    people.reset("rev", by="op")
    assert people.enrolment(second, NOW + 3) is None
    with pytest.raises(PeopleError):
        people.enrol(second, "taken-over-password", NOW + 3)
    third = people.enrolment_link("rev", "admin", NOW + 4)
    people.set_disabled("rev", True, by="op")
    assert people.enrolment(third, NOW + 5) is None


def test_wrong_or_short_answers_leave_the_link_as_it_was(people):
    token = people.enrolment_link("rev", "admin", NOW)
    assert people.enrolment("x" + token, NOW) is None
    assert people.enrolment("", NOW) is None
    with pytest.raises(PeopleError, match="at least 12"):
        people.enrol(token, "short", NOW)
    assert people.enrolment(token, NOW) is not None               # not spent
    assert people.enrol(token, "rev-自己的密码-2026", NOW) == "rev"


def test_an_existing_database_gets_the_enrolments_table(tmp_path):
    """A database from before enrolment links (and before schema versions) opens and works."""
    path = tmp_path / "state.db"
    State(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE enrolments")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    p = People(State(path), SECRET, "青水县")
    try:
        p.add("rev", "Rev", "jiaoyu", ["reviewer"], UNITS, "rev@jiaoyu.example")
        assert p.enrolment(p.enrolment_link("rev", "admin", NOW), NOW) is not None
    finally:
        p.st.close()
