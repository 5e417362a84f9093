"""Where a node keeps citizens' messages until the control machine has them, and the copies
it keeps of its peers' messages (issue 38, first part).

A message is accepted only once it is on two machines: the node that took it writes it to
`own/` and a peer writes it to `copies/` before the citizen sees its number. Each write is
a whole file made by one rename, with the file and its directory flushed to disk first, so a
power cut leaves a message either whole or absent, never half. Files are root's, 0600, in
directories 0700: a unit's SFTP account and PHP code on the same node cannot read them.

    <state>/messages/own/<unit>/<number>.json      taken here
    <state>/messages/copies/<unit>/<number>.json   a peer's, kept as its second copy
    <state>/messages/spent/<hash>                  challenges answered (a challenge is used
                                                   once), removed when they expire
    <state>/messages/sequence                      this node's last message sequence
    <state>/messages/forgotten-before              the `before` of the last `forget` run
                                                   whole: older messages are not read again

Contact details are kept only as long as the county says (cluster.yaml
`messages.contact_retention_days`): `forget_contacts` rewrites an older message with its name
and contact empty (a record a citizen's form could never give, so it cannot be mistaken
for one), by the same one-rename write.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Iterator

from govhost_node import messages as rules
from govhost_node.files import held_lock
from govhost_node.layout import Layout

KINDS = ("own", "copies")
FORGOTTEN_MARK = "forgotten-before"
NUMBER = re.compile(r"[A-Z0-9]{1,8}-[0-9]{8}-[0-9]{1,2}-[0-9]{6,9}", re.ASCII)
UNIT = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z0-9]|[a-z]", re.ASCII)
# The fields a stored message has; anything else in a record is refused.
FIELDS = frozenset({"number", "unit", "received", "node", "subject", "text", "name", "contact",
                    "token_hash", "source"})
# ... and one more, only on a message held for the unit (a `review` word of the county's
# lists): those words, one per line.
HELD = "review_words"
HELD_MAX = 20


# An answer as the control machine sends it (`govhost-messages answers UNIT`).
ANSWER_FIELDS = frozenset({"number", "received", "subject", "text", "answer", "answered_at",
                           "publish", "token_hash"})
MAX_ANSWERS_BYTES = 64 * 1024 * 1024     # 10,000 answered messages are about 20 MB


def check_answers(unit: str, doc: Any) -> list[dict[str, Any]]:
    """A unit's answered messages, checked: the same rules as a citizen's fields (an answer
    is shown on the unit's site), well-formed numbers, no other fields. (Whether a number's
    code is the unit's is the control machine's to know: it answers from the nodes' own
    records.)"""
    if not UNIT.fullmatch(unit):
        raise ValueError(f"bad unit {unit!r}")
    if not isinstance(doc, list):
        raise ValueError("answers must be a list")
    out = []
    for a in doc:
        if not isinstance(a, dict) or set(a) != ANSWER_FIELDS:
            raise ValueError("an answer must have exactly the answer fields")
        if not isinstance(a["number"], str) or not NUMBER.fullmatch(a["number"]):
            raise ValueError("bad number in an answer")
        if not isinstance(a["token_hash"], str) or \
                not re.fullmatch(r"[0-9a-f]{64}", a["token_hash"]):
            raise ValueError("bad token hash in an answer")
        if not isinstance(a["publish"], bool):
            raise ValueError("publish must be true or false")
        for key in ("received", "answered_at"):
            if not isinstance(a[key], str) or not re.fullmatch(
                    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", a[key]):
                raise ValueError(f"bad {key} in an answer")
        for key, multiline in (("subject", False), ("text", True), ("answer", True)):
            try:
                ok = bool(a[key]) and rules.clean(a[key], multiline) == a[key]
            except ValueError as exc:
                raise ValueError(f"{key} of {a['number']}: {exc}") from None
            if not ok:
                raise ValueError(f"{key} of {a['number']} is not in its checked form")
        out.append(a)
    return out


def canonical_answers(answers: list[dict[str, Any]]) -> bytes:
    """A unit's answered messages as the node stores them and as both sides digest them
    (`answers-add` compares the digests): in number order, keys sorted."""
    return json.dumps(sorted(answers, key=lambda a: a["number"]), ensure_ascii=False,
                      sort_keys=True).encode()


def answers_digest(answers: list[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical_answers(answers)).hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_record(record: Any) -> dict[str, str]:
    """A stored (or replicated) message, checked as strictly as the form it came from: a
    peer's copy is not trusted more than a citizen."""
    if not isinstance(record, dict) or set(record) - {HELD} != FIELDS:
        raise ValueError("a message record must have exactly the message fields")
    if not all(isinstance(v, str) for v in record.values()):
        raise ValueError("every field of a message record is text")
    if HELD in record:
        held = record[HELD].split("\n")
        if not 0 < len(held) <= HELD_MAX or any(
                not 0 < len(w) <= 60 or w != rules.clean(w) for w in held):
            raise ValueError("bad review words in a message record")
    if not NUMBER.fullmatch(record["number"]) or not UNIT.fullmatch(record["unit"]):
        raise ValueError("bad number or unit in a message record")
    if not re.fullmatch(r"[0-9a-f]{64}", record["token_hash"]) or \
            not re.fullmatch(r"[0-9a-f]{0,64}", record["source"]):
        raise ValueError("bad token hash or source in a message record")
    if not UNIT.fullmatch(record["node"]):          # node names are labels, as units'
        raise ValueError("bad node in a message record")
    try:
        datetime.strptime(record["received"], "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        raise ValueError("bad time in a message record") from None
    if not record["received"].endswith("Z"):
        raise ValueError("bad time in a message record")
    # The number's day is the county's day of `received` by the same clock (a day or none
    # from the UTC day): the hourly reads and `forget` find a message by it, unopened.
    if number_day(record["number"]) not in {_day_of(record["received"], timedelta(days=d))
                                            for d in (-1, 0, 1)}:
        raise ValueError("a message record's number is not of the day it was received")
    # subject, text, name, contact: the citizen's own rules, and stored as those rules leave
    # them (a record holding what a form could never give is refused, not cleaned) -- or,
    # past the county's retention, with neither name nor contact (forget_contacts)
    blank = forgotten(record)
    if blank and not _forgettable(record["received"]):
        raise ValueError("a message record without name and contact must be older than "
                         f"{FORGET_AFTER_DAYS} days")
    draft = rules.check({**record, "contact": FORGOTTEN} if blank else record)
    if (draft.subject, draft.text, draft.name, draft.contact) != (
            record["subject"], record["text"], record["name"],
            FORGOTTEN if blank else record["contact"]):
        raise ValueError("a message record's fields are not in their checked form")
    return record


def forgotten(record: Any) -> bool:
    """A record whose name and contact were emptied (the county's retention)."""
    return record.get("name") == "" and record.get("contact") == ""


# What a forgotten contact is checked as: a form's contact would be refused without one.
FORGOTTEN = "forgotten@contact.invalid"
# No contact is forgotten sooner (cluster.yaml's contact_retention_days is at least this):
# a record without one that is younger is refused, and so is an earlier `forget`.
FORGET_AFTER_DAYS = 100


def forget_limit(now: float | None = None) -> str:
    """The latest `before` a `forget` may name: FORGET_AFTER_DAYS before now (UTC)."""
    t = (time.time() if now is None else now) - FORGET_AFTER_DAYS * 86400
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _forgettable(received: str) -> bool:
    return received <= forget_limit()


# How far a message's day (in its number: the county's day by the taking node's clock) may
# lie from its UTC time: a day for the county's offset, and one more to spare.
DAY_SLACK = timedelta(days=2)


def number_day(name: str) -> str:
    """The day in a stored message's file name or number (`JY-20261205-1-000042.json` ->
    `20261205`), "" for a name that is not a message's: what lets a read of the recent days
    skip older files by their names, without opening them."""
    parts = name.split("-", 3)
    return parts[1] if len(parts) == 4 else ""


def _day_of(stamp: str, shift: timedelta) -> str:
    """The YYYYMMDD of a UTC stamp (`2026-01-01T00:00:00Z`) moved by `shift`."""
    t = datetime.strptime(stamp[:10], "%Y-%m-%d") + shift
    return t.strftime("%Y%m%d")


class Spool:
    def __init__(self, lay: Layout) -> None:
        self.root = f"{lay.state}/messages"

    def _dir(self, *parts: str) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def next_sequence(self) -> int:
        """This node's next message sequence, counted on disk (a restart continues it)."""
        path = os.path.join(self._dir(), "sequence")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.read(fd, 32).decode().strip()
            n = int(text) + 1 if text.isdigit() else 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{n}\n".encode())
            os.fsync(fd)
            return n
        finally:
            os.close(fd)

    def write(self, kind: str, record: dict[str, str]) -> str:
        """Store a checked record whole (rename after flush); returns its path. Writing the
        same message again is harmless; a different one under a taken number is refused.

        A record with its contact that a `forget` may already have passed (old enough to be
        forgotten, or older than the mark: a copy kept from a peer that had not forgotten
        it yet) takes the mark away first, and is written under the forget lock: a run
        that listed the folders before it cannot leave its mark after it, and a crash
        between the two leaves no mark rather than a contact kept for good."""
        if kind not in KINDS:
            raise ValueError(f"unknown spool {kind!r}")
        check_record(record)
        if not forgotten(record) and (_forgettable(record["received"]) or
                                      record["received"] < self._forgotten_mark()):
            with self._forget_lock():
                mark = self._forgotten_mark(strict=False)
                if mark and record["received"] < mark:
                    os.unlink(os.path.join(self.root, FORGOTTEN_MARK))
                return self._write(kind, record)
        return self._write(kind, record)

    def _write(self, kind: str, record: dict[str, str]) -> str:
        d = self._dir(kind, record["unit"])
        path = os.path.join(d, record["number"] + ".json")
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    return path
            raise FileExistsError(f"message {record['number']} is already stored, different")
        for other in KINDS:             # held here under the other kind: the same, or refused
            there = os.path.join(self.root, other, record["unit"], record["number"] + ".json")
            if other != kind and os.path.exists(there):
                with open(there, "rb") as f:
                    if f.read() != data:
                        raise FileExistsError(f"message {record['number']} is already "
                                              "stored, different")
        self._replace(d, path, data)
        return path

    def _forgotten_mark(self, strict: bool = True) -> str:
        """The `before` of the last whole `forget`; "" when there is none or it is damaged
        (every message is read, as before a mark). `strict`: also "" for a mark later than
        any `forget` may name by this clock (planted, or set while the clock ran ahead: it
        would stop every later run); the writer's test takes it as it is, to remove it."""
        try:
            with open(os.path.join(self.root, FORGOTTEN_MARK), encoding="ascii") as f:
                mark = f.read(64).strip()
        except (OSError, UnicodeDecodeError):
            return ""
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", mark,
                            re.ASCII):
            return ""
        try:
            datetime.strptime(mark, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return ""
        return "" if strict and mark > forget_limit() else mark

    def _forget_lock(self) -> contextlib.AbstractContextManager[None]:
        return held_lock(os.path.join(self._dir(), "forget.lock"))

    def forget_contacts(self, before: str) -> int:
        """Empty the name and contact of every message received before `before` (a UTC
        time stamp, `2026-01-01T00:00:00Z`, at least FORGET_AFTER_DAYS ago by this node's
        clock: a control machine whose clock ran ahead cannot erase recent contacts), each
        by one rename; how many were emptied."""
        try:
            datetime.strptime(before, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise ValueError(f"--before is a UTC time, e.g. 2026-01-01T00:00:00Z, not "
                             f"{before!r}") from None
        if before > forget_limit():
            raise ValueError(f"contacts are kept at least {FORGET_AFTER_DAYS} days: --before "
                             f"must be {forget_limit()} or earlier, not {before}")
        with self._forget_lock():
            mark = self._forgotten_mark()
            # Messages older than the last whole run's `before` were forgotten then (or
            # written since, which drops the mark): only the days between are read, by the
            # day in each file's name (the hourly run read every message: 0.63 s a node at
            # 40,000, growing with the spools, which are never pruned).
            first = _day_of(mark, -DAY_SLACK) if mark else ""
            last = _day_of(before, DAY_SLACK)
            n = self._forget_between(before, first, last)
            if before > mark:
                self._replace(self._dir(), os.path.join(self.root, FORGOTTEN_MARK),
                              before.encode())
        return n

    def _forget_between(self, before: str, first: str, last: str) -> int:
        n = 0
        for kind in KINDS:
            base = os.path.join(self.root, kind)
            if not os.path.isdir(base):
                continue
            for unit in sorted(os.listdir(base)):
                d = os.path.join(base, unit)
                for name in sorted(os.listdir(d)):
                    if not name.endswith(".json") or not first <= number_day(name) <= last:
                        continue
                    path = os.path.join(d, name)
                    with open(path, encoding="utf-8") as f:
                        record = json.load(f)
                    if record["received"] >= before or forgotten(record):
                        continue
                    blank = check_record({**record, "name": "", "contact": ""})
                    self._replace(d, path, json.dumps(blank, ensure_ascii=False,
                                                      sort_keys=True).encode())
                    n += 1
        return n

    @staticmethod
    def _replace(d: str, path: str, data: bytes, sync_dir: bool = True) -> None:
        """`path` holds `data` whole or not at all (flushed, renamed, directory flushed;
        `sync_dir` False: the caller flushes the directory once after many files)."""
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:          # a buffered write: all of it, however large
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync_dir:
            _fsync_dir(d)

    def write_answers(self, unit: str, answers: list[dict[str, Any]],
                      sync_dir: bool = True) -> str:
        """Replace the unit's answered messages whole (rename after flush). `sync_dir`
        False: the caller flushes the directory once after many units
        (`sync_answers_dir`)."""
        check_answers(unit, answers)
        d = self._dir("answers")
        path = os.path.join(d, f"{unit}.json")
        with self._answers_lock(d):
            self._replace(d, path, json.dumps(answers, ensure_ascii=False,
                                              sort_keys=True).encode(), sync_dir)
        return path

    def add_answer(self, unit: str, answer: Any, digest: Any) -> int:
        """One answer into the unit's answered messages (in place of an earlier answer to
        the same number): only it is checked and sent, not the unit's whole list (0.35 s
        to check at 4,000 answers, on every node, for each answer). Stored only when the
        list then is the control machine's list to the byte (`digest`, answers_digest of
        it); else nothing is written and -1 is returned, so the control machine sends the
        whole list: a node that missed an answer, or a changed answer, while it was down.
        Returns how many answers the unit has here."""
        check_answers(unit, [answer])
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("digest must be the SHA-256 of the unit's answers, in hex")
        d = self._dir("answers")
        path = os.path.join(d, f"{unit}.json")
        with self._answers_lock(d):
            try:
                with open(path, encoding="utf-8") as f:
                    held = json.load(f)
            except FileNotFoundError:
                held = []
            except (ValueError, RecursionError):      # damaged: only the whole list mends it
                return -1
            if not isinstance(held, list) or not all(isinstance(a, dict) for a in held):
                return -1
            merged = [a for a in held if a.get("number") != answer["number"]] + [answer]
            try:
                data = canonical_answers(merged)
            except (KeyError, TypeError):
                return -1
            if hashlib.sha256(data).hexdigest() != digest:
                return -1
            self._replace(d, path, data)
        return len(merged)

    @staticmethod
    def _answers_lock(d: str) -> contextlib.AbstractContextManager[None]:
        """One writer of the answers at a time: an answer added between another's read and
        write would be lost."""
        return held_lock(os.path.join(d, ".lock"))

    def sync_answers_dir(self) -> None:
        _fsync_dir(self._dir("answers"))

    def answers_path(self, unit: str) -> str:
        return os.path.join(self.root, "answers", f"{unit}.json")

    def records(self, kind: str, unit: str | None = None,
                since: str = "") -> Iterator[dict[str, str]]:
        """Every stored message of one spool (of one unit; `since`: of that day (YYYYMMDD)
        or later, by the day in its number, the older ones not opened), in number order."""
        base = os.path.join(self.root, kind)
        if not os.path.isdir(base):
            return
        units = sorted(os.listdir(base)) if unit is None else \
            [unit] if os.path.isdir(os.path.join(base, unit)) else []
        for u in units:
            for name in sorted(os.listdir(os.path.join(base, u))):
                if name.endswith(".json") and (not since or number_day(name) >= since):
                    with open(os.path.join(base, u, name), encoding="utf-8") as f:
                        yield json.load(f)

    def records_of(self, kind: str, number: str) -> list[dict[str, str]]:
        """One message of one spool by its number, in every unit folder that holds it (one,
        unless a copy was forged or misfiled: shown to the control machine as differing, as
        a whole dump shows it). A stat a unit: a message's page or answer needs only its
        own, not every message the node holds read and sent."""
        if not NUMBER.fullmatch(number):
            raise ValueError(f"{number!r} is not a message number")
        base = os.path.join(self.root, kind)
        try:
            units = sorted(os.listdir(base))
        except FileNotFoundError:
            return []
        return [r for u in units for r in self._read_in(kind, u, number)]

    def record_in(self, kind: str, unit: str, number: str) -> list[dict[str, str]]:
        """The message `number` in `unit`'s folder of one spool, if it is there (a message
        forwarded to another unit: the control machine knows where it was written)."""
        if not NUMBER.fullmatch(number) or not UNIT.fullmatch(unit):
            raise ValueError(f"{unit!r} {number!r} is not a unit and a message number")
        return self._read_in(kind, unit, number)

    def _read_in(self, kind: str, unit: str, number: str) -> list[dict[str, str]]:
        """`record_in` with names already checked (records_of's folders are the spool's
        own listing: checked once for the number, not again for each of 5,000 folders)."""
        try:
            with open(os.path.join(self.root, kind, unit, number + ".json"),
                      encoding="utf-8") as f:
                return [json.load(f)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def spend(self, challenge: str, now: float | None = None) -> bool:
        """Mark a challenge answered; False if it already was (a replayed answer). Marks
        older than a challenge's life are swept at most once a minute (a sweep reads the
        whole directory; a busy node must not do it per message)."""
        d = self._dir("spent")
        now = time.time() if now is None else now
        name = hashlib.sha256(challenge.encode()).hexdigest()
        try:
            os.close(os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        swept = os.path.join(self.root, "spent-swept")
        try:
            due = now - os.stat(swept).st_mtime > 60
        except FileNotFoundError:
            due = True
        if due:
            with open(swept, "w"):
                pass
            os.utime(swept, (now, now))
            for old in os.scandir(d):
                try:
                    if now - old.stat().st_mtime > rules.CHALLENGE_SECONDS + 120:
                        os.unlink(old.path)
                except FileNotFoundError:
                    pass
        return True
