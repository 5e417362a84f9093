"""People as the control plane stores them, and logging in.

Passwords are hashed with argon2id (argon2-cffi, its default parameters); a hash made with
older parameters is replaced at the next login. Second factors are TOTP (RFC 6238, pyotp):
the secret is kept encrypted (AES-GCM, a key derived from the cluster secret), so a copy of
the state database alone gives no second factor; a code is taken once (the time step of the
last code taken is kept, so a code seen over a shoulder cannot be replayed). Every change of
a person and every lockout goes to the audit log; every attempt is kept in `logins`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Iterable

import argon2
import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controlplane.core.state import State
from controlplane.people import roles, throttle
from controlplane.people.roles import PeopleError, Person

# Easy to read aloud and type: no 0/O, 1/l/I.
_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 16
MIN_PASSWORD = 12
_hasher = argon2.PasswordHasher()
_CODE = re.compile(r"[0-9]{6}")          # ASCII digits only: str.isdigit takes any script
# Attempts refused by the throttle were never checked: they are not failures, so hammering
# a name while it waits does not make the wait longer.
_UNCHECKED = "('throttled', 'locked')"
ENROL_HOURS = 72        # how long an enrolment link works
DEVICE_DAYS = 90        # a browser a person logged in from is known this long
SESSION_HOURS = 8       # a console session ends this long after its login,
IDLE_MINUTES = 30       # or this long after its last request


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))


def _key(cluster_secret: bytes) -> bytes:
    if not cluster_secret:
        raise PeopleError("no cluster secret loaded")
    return hmac.new(cluster_secret, b"govhost people totp", hashlib.sha256).digest()


def seal(cluster_secret: bytes, totp_secret: str, name: str) -> str:
    nonce = os.urandom(12)
    box = AESGCM(_key(cluster_secret)).encrypt(nonce, totp_secret.encode(), name.encode())
    return base64.b64encode(nonce + box).decode()


def unseal(cluster_secret: bytes, sealed: str, name: str) -> str:
    raw = base64.b64decode(sealed)
    return AESGCM(_key(cluster_secret)).decrypt(raw[:12], raw[12:], name.encode()).decode()


@dataclass(frozen=True)
class Issued:
    """What a new or reset person is told once: the password and the second factor."""
    person: Person
    password: str
    totp_secret: str | None
    totp_uri: str | None


@dataclass(frozen=True)
class Login:
    ok: bool
    person: Person | None = None
    why: str = ""                 # for the person: never which of name or password was wrong
    wait: float = 0.0
    must_change: bool = False
    code: str = ""                # "wrong", "throttled" or "locked", for a translated message
    session: str | None = None    # a console session's id (login(..., session=True))
    device: str | None = None     # a new device cookie for this browser (with session=True)


_COLUMNS = "name, display, unit, roles, email, disabled"


def _person(row: Iterable[Any]) -> Person:
    name, display, unit, rls, email, disabled = row
    return Person(name, display, unit, frozenset(json.loads(rls)), email, bool(disabled))


class People:
    """The people of one county, in its state store. `secret`: the cluster secret."""

    def __init__(self, state: State, secret: bytes, issuer: str,
                 policy: throttle.Policy = throttle.Policy()):
        self.st, self.secret, self.issuer, self.policy = state, secret, issuer, policy

    # ------------------------------------------------------------------ reading
    def get(self, name: str) -> Person | None:
        row = self.st.db.execute(f"SELECT {_COLUMNS} FROM people WHERE name = ?",
                                 (name,)).fetchone()
        return _person(row) if row else None

    def all(self) -> list[Person]:
        return [_person(r) for r in self.st.db.execute(
            f"SELECT {_COLUMNS} FROM people ORDER BY unit IS NOT NULL, unit, name")]

    def of_unit(self, unit: str) -> list[Person]:
        """A unit's people, as `all()` lists them (a unit's page built every person of the
        county: 48 ms at 15,000)."""
        return [_person(r) for r in self.st.db.execute(
            f"SELECT {_COLUMNS} FROM people WHERE unit = ? ORDER BY name", (unit,))]

    def sessions_after(self, name: str) -> float:
        """Sessions begun before this time are over (logout, reset, disable end them all)."""
        row = self.st.db.execute("SELECT sessions_after FROM people WHERE name = ?",
                                 (name,)).fetchone()
        return row[0] if row else float("inf")

    def end_sessions(self, name: str) -> None:
        with self.st.tx() as db:
            db.execute("UPDATE people SET sessions_after = ? WHERE name = ?",
                       (time.time(), name))
            db.execute("DELETE FROM console_sessions WHERE name = ?", (name,))

    def open_session(self, name: str, must_change: bool, now: float | None = None) -> str:
        """A console session for `name` (login(..., session=True) opens one with the login):
        its id, for the cookie."""
        with self.st.tx() as db:
            return self._open_session(db, name, must_change,
                                      time.time() if now is None else now)

    @staticmethod
    def _open_session(db: Any, name: str, must_change: bool, now: float) -> str:
        """Only the id's hash is kept; sessions that ended by themselves are dropped here."""
        sid = secrets.token_urlsafe(32)
        db.execute("DELETE FROM console_sessions WHERE since < ? OR seen < ?",
                   (now - SESSION_HOURS * 3600, now - IDLE_MINUTES * 60))
        db.execute("INSERT INTO console_sessions VALUES (?, ?, ?, ?, ?)",
                   (_token_hash(sid), name, now, now, int(must_change)))
        return sid

    def session(self, sid: str, now: float | None = None) -> tuple[Person, bool] | None:
        """The person of a live session and whether they must change their password first;
        None when it ended: too old, idle too long, logged out, the password changed or reset
        elsewhere, the person disabled or gone."""
        now = time.time() if now is None else now
        row = self.st.db.execute("SELECT name, since, seen, must_change FROM console_sessions "
                                 "WHERE id = ?", (_token_hash(sid),)).fetchone()
        if row is None:
            return None
        name, since, seen, must_change = row
        person = self.get(name)
        if person is None or person.disabled or now - since > SESSION_HOURS * 3600 \
                or now - seen > IDLE_MINUTES * 60 or self.sessions_after(name) > since:
            with self.st.tx() as db:
                db.execute("DELETE FROM console_sessions WHERE id = ?", (_token_hash(sid),))
            return None
        if now - seen > 30:           # idle time to the half minute: no write per request
            with self.st.tx() as db:
                db.execute("UPDATE console_sessions SET seen = ? WHERE id = ?",
                           (now, _token_hash(sid)))
        return person, bool(must_change)

    def session_renewed(self, sid: str, name: str, changed_at: float) -> None:
        """The session's person changed their password in it (at `changed_at`, which ended
        every session begun before): it goes on, unless something ended the person's
        sessions again since (a reset, a disable)."""
        with self.st.tx() as db:
            db.execute("UPDATE console_sessions SET since = ?, seen = ?, must_change = 0 "
                       "WHERE id = ? AND name = ? AND (SELECT sessions_after FROM people "
                       "WHERE name = ?) <= ?", (changed_at, time.time(), _token_hash(sid),
                                                name, name, changed_at))

    def status(self, name: str, now: float | None = None) -> dict[str, Any]:
        """Second factor set, last login, locked: what `user list` shows."""
        now = now or time.time()
        totp, must = self.st.db.execute("SELECT totp, must_change FROM people WHERE name = ?",
                                        (name,)).fetchone()
        last = self.st.db.execute("SELECT MAX(at) FROM logins WHERE name = ? AND ok = 1",
                                  (name,)).fetchone()[0]
        d = throttle.decide(self._failures("name", name, now), now, self.policy)
        return {"second_factor": totp is not None, "last_login": last,
                "wait": round(d.wait, 1),
                "under_attack": self._attempts(name, now) >= self.policy.alert_after,
                "must_change_password": bool(must)}

    # ------------------------------------------------------------------ changing
    def add(self, name: str, display: str, unit: str | None, role_names: Iterable[str],
            units: frozenset[str], email: str = "", by: str | None = None) -> Issued:
        rls = frozenset(role_names)
        roles.check(name, unit, rls, units)
        if not display.strip():
            raise PeopleError(f"{name}: give the person's name (--display)")
        if self.get(name) is not None:
            raise PeopleError(f"{name} exists already; `govhost user reset {name}` gives a "
                              "new password")
        person = Person(name, display.strip(), unit, rls, email)
        password, totp = new_password(), pyotp.random_base32()
        now = time.time()
        with self.st.tx() as db:
            db.execute("INSERT INTO people (name, display, unit, roles, email, password, totp, "
                       "created_at, password_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (name, person.display, unit, json.dumps(sorted(rls)), email,
                        _hasher.hash(password),
                        seal(self.secret, totp, name) if person.needs_second_factor else None,
                        now, now))
            State.audit_in(db, "user.add", name, {"unit": unit, "roles": sorted(rls)}, who=by)
        return self._issued(person, password, totp)

    def reset(self, name: str, by: str | None = None) -> Issued:
        """A new password (to be changed at the next login) and a new second factor; the
        person's sessions and unused enrolment links end (a link mailed before the reset,
        perhaps to an address someone else held, must not undo it)."""
        person = self._existing(name)
        password, totp = new_password(), pyotp.random_base32()
        hashed = _hasher.hash(password)
        with self.st.tx() as db:
            db.execute("UPDATE enrolments SET used = ? WHERE name = ? AND used IS NULL",
                       (time.time(), name))
            db.execute("DELETE FROM devices WHERE name = ?", (name,))
            db.execute("UPDATE people SET password = ?, totp = ?, totp_step = 0, "
                       "must_change = 1, password_at = ?, sessions_after = ? WHERE name = ?",
                       (hashed, seal(self.secret, totp, name)
                        if person.needs_second_factor else None, time.time(), time.time(),
                        name))
            db.execute("INSERT INTO logins (name, address, at, ok, why) VALUES "
                       "(?, '-', ?, 1, 'reset')", (name, time.time()))
            State.audit_in(db, "user.reset", name, {}, who=by)
        return self._issued(person, password, totp)

    def set_disabled(self, name: str, disabled: bool, by: str | None = None) -> Person:
        self._existing(name)
        with self.st.tx() as db:
            db.execute("UPDATE people SET disabled = ?, sessions_after = ? WHERE name = ?",
                       (int(disabled), time.time(), name))
            State.audit_in(db, "user.disable" if disabled else "user.enable", name, {},
                           who=by)
        return self._existing(name)

    def change_password(self, name: str, old: str, new: str, address: str = "-",
                        now: float | None = None) -> float:
        """A new password, given the current one: guessing the current one here is throttled
        as a login is (a stolen session must not become a password oracle). Every other
        session of the person ends; the caller starts the current one anew. When they
        ended (the change's commit)."""
        now = now or time.time()
        self._existing(name)
        d = throttle.decide(self._failures("name", name, now), now, self.policy)
        if not d.allowed:
            self._attempt(name, address, now, False, "throttled")
            raise PeopleError(f"too many failed attempts: wait {d.wait:.0f} s")
        if len(new) < MIN_PASSWORD:
            raise PeopleError(f"the new password needs at least {MIN_PASSWORD} characters")
        stored = self.st.db.execute("SELECT password FROM people WHERE name = ?",
                                    (name,)).fetchone()[0]
        try:
            _hasher.verify(stored, old)
        except argon2.exceptions.VerificationError:
            self._failed(name, address, now, "password change")
            raise PeopleError("the current password is not right") from None
        hashed = _hasher.hash(new)
        with self.st.tx() as db:
            # Sessions end as of this commit, not as of the request: a login that read the
            # old password meanwhile must not outlive the change.
            ended = max(now, time.time())
            db.execute("UPDATE people SET password = ?, must_change = 0, password_at = ?, "
                       "sessions_after = ? WHERE name = ?", (hashed, now, ended, name))
            db.execute("INSERT INTO logins (name, address, at, ok, why) VALUES "
                       "(?, ?, ?, 1, 'password changed')", (name, address, now))
            State.audit_in(db, "user.password", name, {}, who=name)
        return ended

    # ------------------------------------------------------------------ logging in
    def login(self, name: str, password: str, code: str, address: str,
              now: float | None = None, session: bool = False, device: str = "") -> Login:
        """Check a login attempt, throttled per account and per source address; record it.
        The answer never says whether the name exists. `session`: open a console session in
        the same transaction that records the login, and only if the password checked is
        still the person's (a change or reset that committed meanwhile ends the attempt; one
        that commits later ends the session). `device`: the browser's device cookie; one
        this person logged in from before skips the wait that guessing at the name from
        elsewhere put on it (a stranger can slow a name down, not its owner)."""
        now = now or time.time()
        known = bool(device) and self._known_device(name, device, now)
        for kind, key in ((("address", address),) if known else
                          (("name", name), ("address", address))):
            d = throttle.decide(self._failures(kind, key, now), now, self.policy)
            if not d.allowed:
                self._failed(name, address, now, "throttled")
                return Login(False, why=f"too many failed logins: wait {d.wait:.0f} s",
                             wait=d.wait, code="throttled")
        row = self.st.db.execute(
            f"SELECT {_COLUMNS}, password, totp, totp_step, must_change FROM people "
            "WHERE name = ?", (name,)).fetchone()
        if row is None:
            _hasher.hash(password)           # the same time as a real check: no name oracle
            return self._failed(name, address, now, "no such person")
        person = _person(row[:6])
        stored, sealed, last_step, must = row[6:]
        try:
            _hasher.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return self._failed(name, address, now, "password")
        if person.disabled:
            return self._failed(name, address, now, "disabled")
        step = 0
        if sealed is not None:
            code = code.strip()
            if not _CODE.fullmatch(code):        # Arabic-Indic or fullwidth digits, letters
                return self._failed(name, address, now, "second factor malformed")
            totp = pyotp.TOTP(unseal(self.secret, sealed, name))
            step = next((s for s in (int(now // 30) + d for d in (0, -1, 1))
                         if hmac.compare_digest(totp.at(s * 30).encode(), code.encode())), 0)
            if not step:
                return self._failed(name, address, now, "second factor")
            if step <= last_step:
                return self._failed(name, address, now, "second factor used before")
        rehashed = _hasher.hash(password) if _hasher.check_needs_rehash(stored) else None
        sid = None
        with self.st.tx() as db:
            current = db.execute("SELECT password, disabled FROM people WHERE name = ?",
                                 (name,)).fetchone()
            if current is None or current[0] != stored or current[1]:
                changed = True
            else:
                changed = False
                if rehashed:
                    db.execute("UPDATE people SET password = ? WHERE name = ?",
                               (rehashed, name))
                if step:
                    db.execute("UPDATE people SET totp_step = ? WHERE name = ?", (step, name))
                db.execute("INSERT INTO logins (name, address, at, ok, why) VALUES "
                           "(?, ?, ?, 1, '')", (name, address, now))
                State.audit_in(db, "user.login", name, {"address": address}, who=name)
                new_device = None
                if session:
                    sid = self._open_session(db, name, bool(must), time.time())
                    if not known:
                        new_device = secrets.token_urlsafe(32)
                        db.execute("DELETE FROM devices WHERE expires < ?", (now,))
                        db.execute("INSERT INTO devices VALUES (?, ?, ?, ?)",
                                   (_token_hash(new_device), name, now,
                                    now + DEVICE_DAYS * 86400))
        if changed:          # changed, reset or disabled while this attempt was checked
            return self._failed(name, address, now, "password changed meanwhile")
        return Login(True, person, must_change=bool(must), session=sid, device=new_device)

    def _known_device(self, name: str, device: str, now: float) -> bool:
        return self.st.db.execute("SELECT 1 FROM devices WHERE token = ? AND name = ? AND "
                                  "expires > ?", (_token_hash(device), name, now)
                                  ).fetchone() is not None

    # ------------------------------------------------------------------ inside
    def _failed(self, name: str, address: str, now: float, why: str) -> Login:
        """A failed attempt (checked, or refused while the name waits). The one that makes
        a burst against the name is audited as `user.attacked` (the exporter and an alert
        tell the county)."""
        self._attempt(name, address, now, False, why,
                      audit=self._attempts(name, now) + 1 == self.policy.alert_after)
        return Login(False, why="wrong name, password or code", code="wrong")

    def _attempts(self, name: str, now: float) -> int:
        """Failed attempts at `name` over the window, refused ones included: the burst."""
        return self.st.db.execute("SELECT COUNT(*) FROM logins WHERE name = ? AND ok = 0 AND "
                                  "at > ?", (name, now - self.policy.window)).fetchone()[0]

    def _attempt(self, name: str, address: str, now: float, ok: bool, why: str,
                 audit: bool = False) -> None:
        with self.st.tx() as db:
            db.execute("INSERT INTO logins (name, address, at, ok, why) VALUES (?, ?, ?, ?, ?)",
                       (name, address, now, int(ok), why))
            if audit:
                State.audit_in(db, "user.attacked", name,
                               {"address": address, "why": why,
                                "failures": self.policy.alert_after,
                                "minutes": int(self.policy.window // 60)}, who="-")

    def _failures(self, kind: str, key: str, now: float) -> list[float]:
        """Failed attempts of an account since its last success (or reset); of an address
        over the window, whatever succeeded from it (a person's own login must not clear
        the way for guessing at others)."""
        since = now - 2 * self.policy.window
        if kind == "name":
            last_ok = self.st.db.execute("SELECT MAX(at) FROM logins WHERE name = ? AND ok = 1",
                                         (key,)).fetchone()[0] or 0.0
            return [t for (t,) in self.st.db.execute(
                f"SELECT at FROM logins WHERE name = ? AND ok = 0 AND at > ? AND at > ? "
                f"AND why NOT IN {_UNCHECKED}", (key, last_ok, since))]
        mine = throttle.source(key)
        if "/" not in mine:           # an IPv4 address (or no address): the index finds it
            return [t for (t,) in self.st.db.execute(
                f"SELECT at FROM logins WHERE address = ? AND ok = 0 AND at > ? AND why NOT "
                f"IN {_UNCHECKED}", (key, since))]
        # An IPv6 /64: the window's IPv6 failures, compared by network.
        return [t for (t, a) in self.st.db.execute(
            f"SELECT at, address FROM logins WHERE ok = 0 AND at > ? AND address LIKE '%:%' "
            f"AND why NOT IN {_UNCHECKED}", (since,)) if throttle.source(a) == mine]

    def _existing(self, name: str) -> Person:
        p = self.get(name)
        if p is None:
            raise PeopleError(f"no person named {name!r}; `govhost user list` shows them")
        return p

    # ------------------------------------------------------------------ enrolment
    def enrolment_link(self, name: str, by: str, now: float | None = None) -> str:
        """A one-time secret for `name` to set their own password and take their second
        factor (console adds and resets: the first credentials reach their owner only).
        Earlier links of the person end; the store keeps only the secret's hash."""
        now = now or time.time()
        self._existing(name)
        token = secrets.token_urlsafe(32)
        with self.st.tx() as db:
            db.execute("UPDATE enrolments SET used = ? WHERE name = ? AND used IS NULL",
                       (now, name))
            db.execute("INSERT INTO enrolments (token, name, made_by, made_at, expires) "
                       "VALUES (?, ?, ?, ?, ?)", (_token_hash(token), name, by, now,
                                                  now + ENROL_HOURS * 3600))
        return token

    def enrolment(self, token: str, now: float | None = None) -> Issued | None:
        """Who the link is for and their second factor (key and otpauth address), while the
        link is unused and unexpired; None otherwise (the same for every bad link)."""
        now = now or time.time()
        row = self.st.db.execute("SELECT name FROM enrolments WHERE token = ? AND used IS "
                                 "NULL AND expires > ?", (_token_hash(token), now)).fetchone()
        person = row and self.get(row[0])
        if not person or person.disabled:
            return None
        sealed = self.st.db.execute("SELECT totp FROM people WHERE name = ?",
                                    (person.name,)).fetchone()[0]
        totp = unseal(self.secret, sealed, person.name) if sealed else ""
        return self._issued(person, "", totp)

    def enrol(self, token: str, new: str, now: float | None = None) -> str:
        """The person behind the link sets their password; the link is spent, their other
        sessions end. PeopleError for a bad link or a short password."""
        now = now or time.time()
        issued = self.enrolment(token, now)
        if issued is None:
            raise PeopleError("this link has been used, has expired or was never given; "
                              "ask your unit's admin for a new one")
        if len(new) < MIN_PASSWORD:
            raise PeopleError(f"the new password needs at least {MIN_PASSWORD} characters")
        name = issued.person.name
        hashed = _hasher.hash(new)
        with self.st.tx() as db:
            # Spent in the same transaction that sets the password: of two answers racing
            # on one link, one sets it.
            spent = db.execute("UPDATE enrolments SET used = ? WHERE token = ? AND used IS "
                               "NULL AND expires > ?", (now, _token_hash(token), now))
            if spent.rowcount != 1:
                raise PeopleError("this link has been used, has expired or was never given; "
                                  "ask your unit's admin for a new one")
            db.execute("UPDATE people SET password = ?, must_change = 0, password_at = ?, "
                       "sessions_after = ? WHERE name = ?",
                       (hashed, now, max(now, time.time()), name))
            State.audit_in(db, "user.enrolled", name, {}, who=name)
        return name

    def _issued(self, person: Person, password: str, totp: str) -> Issued:
        if not person.needs_second_factor:
            return Issued(person, password, None, None)
        uri = pyotp.TOTP(totp).provisioning_uri(name=person.name, issuer_name=self.issuer)
        return Issued(person, password, totp, uri)


def login_pressure(st: State, now: float | None = None,
                   policy: throttle.Policy = throttle.Policy()) -> dict[str, int]:
    """Failed logins (checked or refused while waiting) over the last window per name, for
    the names with at least `alert_after` of them (the ones under attack); for the
    exporter's alert."""
    now = now or time.time()
    return {name: n for name, n in st.db.execute(
        "SELECT name, COUNT(*) FROM logins WHERE ok = 0 AND at > ? "
        "GROUP BY name HAVING COUNT(*) >= ?",
        (now - policy.window, policy.alert_after))}


def failed_logins(st: State, now: float | None = None,
                  policy: throttle.Policy = throttle.Policy()) -> int:
    """Checked failed logins over the last window, every name together."""
    now = now or time.time()
    return st.db.execute(f"SELECT COUNT(*) FROM logins WHERE ok = 0 AND at > ? AND why NOT "
                         f"IN {_UNCHECKED}", (now - policy.window,)).fetchone()[0]
