"""Citizens' messages: the answers units gave (the messages themselves live on the nodes)."""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping, Sequence

from controlplane.core.errors import GovhostError
from controlplane.core.state.store import Store

_KEYS = ("number", "unit", "received", "subject", "text", "token_hash", "answer", "publish",
         "answered_by", "answered_at")
_INDEX = ("number", "unit", "received", "subject", "seen_at")
_ROUTE = ("number", "from_unit", "to_unit", "reason", "by", "at")


def _by_number(rows: Iterable[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """Forwards (rows of _ROUTE, in order) grouped by their message's number."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(dict(zip(_ROUTE, r)))
    return out


class MessageRecords(Store):
    def record_answer(self, message: Mapping[str, str], answer: str, publish: bool,
                      by: str, owner: str | None = None, draft: int | None = None) -> None:
        """A unit's answer, audited. `owner`: given in the console by that unit's staff,
        so checked in the same transaction as it is written: the message is still the
        unit's to answer, not answered yet, and no other answer waits for review (`draft`:
        the one being given now). Without `owner` (the county at the control machine) a
        later answer replaces an earlier one."""
        with self.tx() as db:
            if owner is not None:
                _still_open(db, message["number"], owner, draft)
            else:       # the county's answer stands; one still under review never will
                db.execute("UPDATE message_drafts SET status = 'superseded' WHERE number = ? "
                           "AND status = 'pending'", (message["number"],))
            db.execute("INSERT OR REPLACE INTO message_answers (number, unit, received, "
                       "subject, text, token_hash, answer, publish, answered_by, answered_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (message["number"], message["unit"], message["received"],
                        message["subject"], message["text"], message["token_hash"], answer,
                        int(publish), by, time.time()))
            self._audit(db, "messages.answer", message["number"],
                        {"unit": message["unit"], "publish": publish}, by)

    def message_answers(self, unit: str | None = None, number: str | None = None
                        ) -> list[dict[str, Any]]:
        """The answers, of one unit's messages or of one message (a page shows one; the
        unit's list is what its nodes are sent)."""
        sql, args = f"SELECT {', '.join(_KEYS)} FROM message_answers WHERE 1 = 1", []
        for col, value in (("unit", unit), ("number", number)):
            if value is not None:
                sql += f" AND {col} = ?"
                args.append(value)
        rows = self.db.execute(sql + " ORDER BY number", args)
        return [{**dict(zip(_KEYS, r)), "publish": bool(r[7])} for r in rows]

    def answered_at(self) -> dict[str, float]:
        """number -> when it was answered (the overdue list needs only that, for thousands)."""
        return dict(self.db.execute("SELECT number, answered_at FROM message_answers"))

    # -- how the units handle them (controlplane/messages/inbox.py) ------------------------
    def index_messages(self, rows: Iterable[Mapping[str, str]]) -> None:
        """The messages the nodes hold, as the control machine last read them: number, unit,
        day, subject (never the text, name or contact, which stay on the nodes)."""
        now = time.time()
        with self.tx() as db:
            db.executemany("INSERT INTO message_index (number, unit, received, subject, "
                           "seen_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (number) DO UPDATE "
                           "SET seen_at = excluded.seen_at",
                           [(r["number"], r["unit"], r["received"], r["subject"], now)
                            for r in rows])

    def messages_read_whole(self) -> str | None:
        """The county's day (YYYYMMDD) on which every node's messages were last read whole,
        every node answering; None before the first such read."""
        row = self.db.execute("SELECT day FROM message_reads WHERE kind = 'whole'").fetchone()
        return None if row is None else str(row[0])

    def mark_messages_read_whole(self, day: str) -> None:
        """Every message the nodes held when a whole read on the county's `day` began is in
        the index (those that came later are the hourly reads'). Set as it is, even to an
        earlier day: a day set while the clock ran ahead is put right by the next read."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO message_reads (kind, day, at) "
                       "VALUES ('whole', ?, ?)", (day, time.time()))

    def message_index(self, number: str | None = None) -> list[dict[str, Any]]:
        """The index (of one message's number: a page or an answer needs only its own)."""
        sql = f"SELECT {', '.join(_INDEX)} FROM message_index"
        rows = self.db.execute(sql + " ORDER BY number") if number is None else \
            self.db.execute(sql + " WHERE number = ?", (number,))
        return [dict(zip(_INDEX, r)) for r in rows]

    def unit_messages(self, unit: str) -> tuple[list[dict[str, Any]], dict[str, float],
                                                dict[str, list[dict[str, Any]]],
                                                dict[str, int]]:
        """What a unit's list is made of, for the messages written to it or ever forwarded
        to it alone: their index rows, when each was answered, their forwards and their
        answers under review (a unit's list read every message of the county: 369 ms at
        40,000, and the index is never pruned)."""
        mine = ("SELECT number FROM message_index WHERE unit = ? "
                "UNION SELECT number FROM message_routes WHERE to_unit = ?")
        index = [dict(zip(_INDEX, r)) for r in self.db.execute(
            f"SELECT {', '.join(_INDEX)} FROM message_index WHERE number IN ({mine}) "
            "ORDER BY number", (unit, unit))]
        answered = dict(self.db.execute(
            f"SELECT number, answered_at FROM message_answers WHERE number IN ({mine})",
            (unit, unit)))
        routes = _by_number(self.db.execute(
            f"SELECT {', '.join(_ROUTE)} FROM message_routes WHERE number IN ({mine}) "
            "ORDER BY id", (unit, unit)))
        drafts = {n: i for i, n in self.db.execute(
            f"SELECT id, number FROM message_drafts WHERE status = 'pending' AND number IN "
            f"({mine}) ORDER BY id", (unit, unit))}
        return index, answered, routes, drafts

    def unanswered(self) -> list[dict[str, Any]]:
        """The indexed messages not answered (the hourly reminder's: not every answer read
        to leave them out)."""
        return [dict(zip(_INDEX, r)) for r in self.db.execute(
            "SELECT i.number, i.unit, i.received, i.subject, i.seen_at FROM message_index i "
            "LEFT JOIN message_answers a ON a.number = i.number WHERE a.number IS NULL "
            "ORDER BY i.number")]

    def unanswered_before(self, before: str) -> list[dict[str, Any]]:
        """The indexed messages received before `before` (UTC, as the nodes write it) and
        not answered: all the overdue list must look at."""
        return [dict(zip(_INDEX, r)) for r in self.db.execute(
            "SELECT i.number, i.unit, i.received, i.subject, i.seen_at FROM message_index i "
            "LEFT JOIN message_answers a ON a.number = i.number WHERE a.number IS NULL AND "
            "i.received < ? ORDER BY i.received, i.number", (before,))]

    def add_route(self, number: str, from_unit: str, to_unit: str, reason: str, by: str
                  ) -> None:
        """A message forwarded to the unit that must answer it (转办), audited; checked in
        the same transaction: still `from_unit`'s, unanswered, no answer under review."""
        with self.tx() as db:
            _still_open(db, number, from_unit, None)
            db.execute("INSERT INTO message_routes (number, from_unit, to_unit, reason, by, "
                       "at) VALUES (?, ?, ?, ?, ?, ?)",
                       (number, from_unit, to_unit, reason, by, time.time()))
            self._audit(db, "messages.forward", number,
                        {"from": from_unit, "to": to_unit, "reason": reason}, by)

    def routes(self, number: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every forwarded message's forwards (or one message's), oldest first."""
        sql = f"SELECT {', '.join(_ROUTE)} FROM message_routes"
        return _by_number(self.db.execute(sql + " ORDER BY id") if number is None else
                          self.db.execute(sql + " WHERE number = ? ORDER BY id", (number,)))

    def forwarded_to(self, unit: str) -> list[tuple[str, str]]:
        """The messages whose last forward is to `unit` (its to answer now), each with the
        unit it was written to (where the nodes keep it): (unit written to, number)."""
        return [(u, n) for u, n in self.db.execute(
            "SELECT i.unit, r.number FROM message_routes r JOIN message_index i ON "
            "i.number = r.number WHERE r.to_unit = ? AND r.id = (SELECT MAX(id) FROM "
            "message_routes WHERE number = r.number) ORDER BY r.number", (unit,))]

    def add_draft(self, number: str, unit: str, answer: str, publish: bool, by: str,
                  levels: Sequence[str]) -> int:
        """An answer waiting for the unit's review chain (kept under `answer:<id>`)."""
        with self.tx() as db:
            _still_open(db, number, unit, None)
            cur = db.execute("INSERT INTO message_drafts (number, unit, answer, publish, by, "
                             "at, status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                             (number, unit, answer, int(publish), by, time.time()))
            did = int(cur.lastrowid or 0)
            db.execute("INSERT INTO review_chains (tenant, release_id, levels, publisher) "
                       "VALUES (?, ?, ?, ?)", (unit, f"answer:{did}", json.dumps(list(levels)),
                                               by))
            self._audit(db, "messages.answer.proposed", number,
                        {"unit": unit, "draft": did, "publish": publish,
                         "levels": list(levels)}, by)
        return did

    def drafts(self, number: str | None = None, status: str | None = None
               ) -> list[dict[str, Any]]:
        keys = ("id", "number", "unit", "answer", "publish", "by", "at", "status")
        sql, args = f"SELECT {', '.join(keys)} FROM message_drafts WHERE 1 = 1", []
        for col, value in (("number", number), ("status", status)):
            if value is not None:
                sql += f" AND {col} = ?"
                args.append(value)
        return [{**dict(zip(keys, r)), "publish": bool(r[4])}
                for r in self.db.execute(sql + " ORDER BY id", args)]

    def set_draft_status(self, did: int, status: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE message_drafts SET status = ? WHERE id = ?", (status, did))

    def notice_once(self, number: str, kind: str) -> bool:
        """Record that the `kind` notice (remind, alert, veto) of a message went out; False
        when it had gone out already (each is sent once)."""
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO message_notices (number, kind, at) "
                             "VALUES (?, ?, ?)", (number, kind, time.time()))
            return cur.rowcount == 1

    def notices_sent(self) -> frozenset[tuple[str, str]]:
        """(number, kind) of every notice that went out: the hourly reminder skips them
        without a transaction each."""
        return frozenset((n, k) for n, k in self.db.execute(
            "SELECT number, kind FROM message_notices"))

    def forget_notice(self, number: str, kind: str) -> None:
        """A notice whose mail did not go out: it is tried again next time."""
        with self.tx() as db:
            db.execute("DELETE FROM message_notices WHERE number = ? AND kind = ?",
                       (number, kind))


class MessagesStateError(GovhostError):
    pass


def _still_open(db: Any, number: str, owner: str, draft: int | None) -> None:
    """Refuse, inside the caller's transaction, a change to a message that is no longer
    `owner`'s to answer (forwarded meanwhile), is answered, or has an answer under review
    other than `draft` (two editors at once, a forward racing an answer)."""
    last = db.execute("SELECT to_unit FROM message_routes WHERE number = ? ORDER BY id DESC "
                      "LIMIT 1", (number,)).fetchone()
    first = db.execute("SELECT unit FROM message_index WHERE number = ?", (number,)).fetchone()
    now = last[0] if last else (first[0] if first else None)
    if now != owner:
        raise MessagesStateError(f"{number} is not {owner}'s to answer (now: {now or 'unknown'})")
    if db.execute("SELECT 1 FROM message_answers WHERE number = ?", (number,)).fetchone():
        raise MessagesStateError(f"{number} is answered already")
    waiting = [r[0] for r in db.execute("SELECT id FROM message_drafts WHERE number = ? AND "
                                        "status = 'pending'", (number,))]
    if [w for w in waiting if w != draft]:
        raise MessagesStateError(f"{number} has an answer waiting for review already; decide "
                                 "it first")
