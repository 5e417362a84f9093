"""Citizens' messages: the answers units gave (the messages themselves live on the nodes)."""
from __future__ import annotations

import time
from typing import Any, Mapping

from controlplane.core.state.store import Store

_KEYS = ("number", "unit", "received", "subject", "text", "token_hash", "answer", "publish",
         "answered_by", "answered_at")


class MessageRecords(Store):
    def record_answer(self, message: Mapping[str, str], answer: str, publish: bool,
                      by: str) -> None:
        """A unit's answer (a later answer to the same message replaces it), audited."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO message_answers (number, unit, received, "
                       "subject, text, token_hash, answer, publish, answered_by, answered_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (message["number"], message["unit"], message["received"],
                        message["subject"], message["text"], message["token_hash"], answer,
                        int(publish), by, time.time()))
            self._audit(db, "messages.answer", message["number"],
                        {"unit": message["unit"], "publish": publish}, by)

    def message_answers(self, unit: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_KEYS)} FROM message_answers"
        rows = self.db.execute(sql + " WHERE unit = ? ORDER BY number", (unit,)) if unit \
            else self.db.execute(sql + " ORDER BY number")
        return [{**dict(zip(_KEYS, r)), "publish": bool(r[7])} for r in rows]
