"""Citizens' messages (留言): the pure rules a node applies to a message before it accepts
it, and the values it hands back. Issue 38; this module is its first part, the rules alone
(docs/messages.md says what is built and what is not).

Why on the node and in the standard library: a message is taken by the node that serves the
unit's site, also while the control machine is down, and the node runs no PyPI package. The
control machine imports the same rules (as it does the digest list's format) so that both
sides agree on what a message is.

What a stranger controls here is every byte of the form and the challenge answer; nothing of
it may reach a header, a log line, a file name or a page as anything but text. So: fields are
checked for length and for characters (no control characters, no Unicode line or paragraph
separators and no bidi overrides in one-line fields; in the text, line breaks of every kind
become "\\n"), a message's id and number are made here, never taken from the form, and its
contact is kept apart from what may ever be published.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta

# Sizes a citizen's message may have (characters, after normalization).
SUBJECT_MAX = 80
TEXT_MIN, TEXT_MAX = 10, 5000
NAME_MAX = 40
CONTACT_MAX = 80
# The proof of work: leading zero bits of sha256(challenge ":" nonce). 18 bits take a
# phone's browser about a second and cost a flood of a thousand messages a thousand seconds
# of CPU; the challenge is good for 30 minutes (a citizen writes slowly).
WORK_BITS = 18
CHALLENGE_SECONDS = 30 * 60

# Line breaks of every kind, as str.splitlines() knows them.
_BREAKS = re.compile("\r\n|[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Format characters (Cf: bidi marks and overrides, zero-width and tag characters, …) can make
# a page show text in another order than it is stored, or hide text; only the joiners that
# some scripts need may stand inside a text.
_JOINERS = frozenset("\u200c\u200d")
# Hangul fillers: letters by their category that show as nothing (an invisible subject, or
# a listed word split without a visible mark)
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")
_PHONE = re.compile(r"\+?[0-9][0-9 \-]{5,18}[0-9]", re.ASCII)
_EMAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9][A-Za-z0-9\-]{0,62}"
                    r"(\.[A-Za-z0-9][A-Za-z0-9\-]{0,62})*\.[A-Za-z]{2,63}", re.ASCII)
_UNIT = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]|[a-z]", re.ASCII)
_NODE = _UNIT                     # node names are labels too (hosts.yaml)
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{32}")


class Refused(ValueError):
    """What was wrong, per field, in words for the citizen."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


def _bad_char(ch: str, multiline: bool) -> bool:
    if ch == "\n":
        return not multiline
    cat = unicodedata.category(ch)
    if cat == "Cf":
        return not (multiline and ch in _JOINERS)
    # Cc: controls; Cs: lone surrogates; Co/Cn: private use and unassigned; Zl/Zp: U+2028/9
    return cat in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp") or ch in _FILLERS


def clean(value: object, multiline: bool = False) -> str:
    """A field as text: NFC, outer spaces stripped; in a multiline field every kind of line
    break becomes "\\n". Raises ValueError for what must not be in it."""
    if not isinstance(value, str):
        raise ValueError("must be text")
    text = unicodedata.normalize("NFC", value).replace("\t", " ")   # pasted from Word
    if multiline:
        text = _BREAKS.sub("\n", text)
    text = text.strip()
    bad = next((ch for ch in text if _bad_char(ch, multiline)), None)
    if bad is not None:
        raise ValueError(f"holds a character that is not allowed (U+{ord(bad):04X})")
    return text


@dataclass(frozen=True)
class Draft:
    """A message as the citizen wrote it, checked. `contact` is never published."""
    subject: str
    text: str
    contact: str
    name: str = ""


def check(form: dict[str, object]) -> Draft:
    """The form's fields (subject, text, contact, name) as a Draft, or Refused naming each
    field that is wrong. Other fields are ignored, never stored."""
    problems: dict[str, str] = {}
    values: dict[str, str] = {}
    rules = (("subject", False, 1, SUBJECT_MAX), ("text", True, TEXT_MIN, TEXT_MAX),
             ("contact", False, 1, CONTACT_MAX), ("name", False, 0, NAME_MAX))
    for key, multiline, least, most in rules:
        raw = form.get(key, "")
        try:
            value = clean(raw if raw is not None else "", multiline)
        except ValueError as e:
            problems[key] = str(e)
            continue
        if len(value) < least:
            problems[key] = "is required" if least == 1 else f"needs at least {least} characters"
        elif key in ("subject", "text") and not any(
                unicodedata.category(ch)[0] in "LN" for ch in value):
            problems[key] = "has no letter or digit"
        elif len(value) > most:
            problems[key] = f"is longer than {most} characters"
        values[key] = value
    contact = values.get("contact", "")
    if "contact" not in problems and not (_PHONE.fullmatch(contact) or
                                          _EMAIL.fullmatch(contact)):
        problems["contact"] = "must be a phone number or a mail address"
    if problems:
        raise Refused(problems)
    return Draft(values["subject"], values["text"], values["contact"], values.get("name", ""))


# ------------------------------------------------------------------ proof of work

def _mac(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]


def challenge(secret: bytes, unit: str, node: str, now: float | None = None,
              bits: int = WORK_BITS) -> str:
    """A challenge for a message to `unit`, answered on `node`, signed with the county's
    message secret (nothing to remember): "unit.node.time.random.bits.mac". Bound to the
    node that issued it, because each node keeps its own list of answered challenges: one
    proof of work is one message, not one per node."""
    if not _UNIT.fullmatch(unit) or not _NODE.fullmatch(node):
        raise ValueError(f"bad unit or node name {unit!r} {node!r}")
    when = int(time.time() if now is None else now)
    body = f"{unit}.{node}.{when}.{secrets.token_hex(8)}.{bits}"
    return f"{body}.{_mac(secret, body)}"


def leading_zero_bits(digest: bytes) -> int:
    n = 0
    for byte in digest:
        if byte == 0:
            n += 8
            continue
        return n + 8 - byte.bit_length()
    return n


def work(challenge_text: str, nonce: str) -> int:
    return leading_zero_bits(hashlib.sha256(f"{challenge_text}:{nonce}".encode()).digest())


def solve(challenge_text: str, limit: int = 1 << 26) -> str:
    """What the page's script does in the citizen's browser (tests and benches use it): the
    smallest nonce whose `work` reaches the challenge's bits. The hash of the common prefix is
    copied rather than recomputed and the zero bits compared as bytes: 1.8 times faster than
    calling `work` (the power-cut test solves 1,000 of them)."""
    bits = int(challenge_text.split(".")[4])
    whole, rest = divmod(bits, 8)
    zeros, below = bytes(whole), 1 << (8 - rest)
    prefix = hashlib.sha256(f"{challenge_text}:".encode())
    for i in range(limit):
        h = prefix.copy()
        h.update(b"%d" % i)
        digest = h.digest()
        if digest[:whole] == zeros and (rest == 0 or digest[whole] < below):
            return str(i)
    raise RuntimeError("no answer within the limit")


_CHALLENGE = re.compile(r"[a-z0-9-]{1,32}\.[a-z0-9-]{1,32}\.[0-9]{1,12}\.[0-9a-f]{16}\.[0-9]{1,2}"
                        r"\.[0-9a-f]{32}", re.ASCII)


def verify(secret: bytes, unit: str, node: str, challenge_text: str, nonce: str,
           now: float | None = None, max_age: int = CHALLENGE_SECONDS) -> None:
    """Raise Refused unless `nonce` answers a challenge this county issued for `unit` on
    `node`, not older than `max_age`. (That a challenge is used once is the spool's job: it
    keeps the answered ones until they expire.)"""
    if not isinstance(challenge_text, str) or not _CHALLENGE.fullmatch(challenge_text) or \
            not isinstance(nonce, str) or not re.fullmatch(r"[0-9a-zA-Z]{1,32}", nonce):
        raise Refused({"challenge": "missing or malformed; reload the page"})
    parts = challenge_text.split(".")
    who, where, issued, _, bits, mac = parts
    if not hmac.compare_digest(_mac(secret, ".".join(parts[:5])), mac):
        raise Refused({"challenge": "not issued here; reload the page"})
    now = time.time() if now is None else now
    if who != unit:
        raise Refused({"challenge": "issued for another unit's page; reload the page"})
    if where != node:
        raise Refused({"challenge": "issued by another server of the county; reload the page"})
    if now - int(issued) > max_age or int(issued) > now + 60:
        raise Refused({"challenge": "expired; reload the page"})
    if work(challenge_text, nonce) < int(bits):
        raise Refused({"challenge": "the answer is wrong; reload the page"})


# ------------------------------------------------------------------ identity and deadlines

@dataclass(frozen=True)
class Accepted:
    """What the node hands back: the message's number (public) and its reading token (the
    secret link's key; only its hash is stored)."""
    number: str
    token: str = field(repr=False)      # never in a log line or a traceback
    token_hash: str = field(repr=False)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def accept(unit_code: str, node_index: int, sequence: int, day: date) -> Accepted:
    """A new message's number: the unit's code, the day, the node and its own sequence
    ("JY-20261205-1-000042"). Each node numbers on its own, so a number is unique without
    the control machine or the other nodes."""
    if not re.fullmatch(r"[A-Z0-9]{1,8}", unit_code):
        raise ValueError(f"bad unit code {unit_code!r}")
    if not (0 < node_index < 100 and 0 < sequence < 10**9):
        raise ValueError("node index or sequence out of range")
    token = secrets.token_urlsafe(24)
    return Accepted(f"{unit_code}-{day:%Y%m%d}-{node_index}-{sequence:06d}", token,
                    token_hash(token))


def valid_token(token: object) -> bool:
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def due(received: date, working_days: int, holidays: frozenset[date] = frozenset(),
        workdays: frozenset[date] = frozenset()) -> date:
    """The answer's due date: `working_days` working days after the day it came. Weekends
    and the county's `holidays` do not count; `workdays` are weekend days that do (China
    moves working days around its holidays)."""
    day, left = received, working_days
    while left > 0:
        day += timedelta(days=1)
        weekend = day.weekday() >= 5
        if (not weekend and day not in holidays) or day in workdays:
            left -= 1
    return day
