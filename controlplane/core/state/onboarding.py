"""A unit's way onto the cluster: its request for a site (controlplane/onboarding) and its
launch (controlplane/compliance/launch)."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

from controlplane.core.state.store import Store, actor


class OnboardingRecords(Store):
    _REQUEST_KEYS = ("id", "name", "manifest", "form", "contact", "source", "token", "created",
                     "status", "comment", "decided_by", "decided_at")

    def add_site_request(self, name: str, manifest: str, form: Mapping[str, str],
                         contact: str, source: str, token_hash: str) -> int:
        """A unit's request for a site (its manifest, and the form it came from)."""
        with self.tx() as db:
            cur = db.execute("INSERT INTO site_requests (name, manifest, form, contact, source, "
                             "token, created, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                             (name, manifest, json.dumps(dict(form), ensure_ascii=False),
                              contact, source, token_hash, time.time()))
            rid = int(cur.lastrowid or 0)
            self._audit(db, "site-request.submitted", name, {"request": rid,
                                                             "source": source}, contact)
        return rid

    def site_requests(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(self._REQUEST_KEYS)} FROM site_requests"
        args: tuple[Any, ...] = ()
        if status:
            sql, args = sql + " WHERE status = ?", (status,)
        return [dict(zip(self._REQUEST_KEYS, r))
                for r in self.db.execute(sql + " ORDER BY id DESC", args)]

    def site_request(self, rid: int) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {', '.join(self._REQUEST_KEYS)} FROM site_requests "
                              "WHERE id = ?", (rid,)).fetchone()
        return dict(zip(self._REQUEST_KEYS, row)) if row else None

    def requests_from(self, source: str, since: float) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM site_requests WHERE source = ? AND "
                                   "created > ?", (source, since)).fetchone()[0])

    def decide_site_request(self, rid: int, status: str, by: str, comment: str) -> bool:
        """Close a pending request (approved or returned); False if it was not pending (two
        operators at once: the first decision stands)."""
        with self.tx() as db:
            cur = db.execute("UPDATE site_requests SET status = ?, comment = ?, decided_by = ?, "
                             "decided_at = ? WHERE id = ? AND status = 'pending'",
                             (status, comment, by, time.time(), rid))
            if cur.rowcount != 1:
                return False
            self._audit(db, f"site-request.{status}", str(rid), {"comment": comment}, by)
        return True

    def launched(self) -> dict[str, float]:
        """Units that passed `govhost launch`, and when."""
        return dict(self.db.execute("SELECT tenant, at FROM launches"))

    def record_launch(self, tenant: str, passed: bool, checks: Sequence[Mapping[str, Any]]
                      ) -> None:
        """A launch attempt: audited either way; a passed one opens the site for good."""
        with self.tx() as db:
            if passed:
                db.execute("INSERT OR REPLACE INTO launches (tenant, at, actor, checks) "
                           "VALUES (?, ?, ?, ?)", (tenant, time.time(), actor(),
                                                   json.dumps(list(checks))))
            self._audit(db, "launch.passed" if passed else "launch.refused", tenant,
                        {"failed": [c["check"] for c in checks if not c["ok"]]})
