"""The backup catalogue: snapshots made through govhost, verifies, drills, off-site
copies."""
from __future__ import annotations

import json
import time
from typing import Any, Mapping

from controlplane.core.state.store import Store


class BackupRecords(Store):
    def record_backup(self, r: Mapping[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO backups (run, tenant, kind, node, snapshot, ok, "
                       "started_at, finished_at, seconds, files, bytes, bytes_added, error) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (r["run"], r["tenant"], r["kind"], r["node"], r.get("snapshot"),
                        int(bool(r["ok"])), r.get("started_at"), r["finished_at"],
                        r.get("seconds"), r.get("files"), r.get("bytes"), r.get("bytes_added"),
                        r.get("error") or ""))

    def backups(self, tenant: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        keys = ("run", "tenant", "kind", "node", "snapshot", "ok", "started_at", "finished_at",
                "seconds", "files", "bytes", "bytes_added", "error")
        where, args = ("WHERE tenant = ?", [tenant]) if tenant else ("", [])
        rows = self.db.execute(f"SELECT {', '.join(keys)} FROM backups {where} "
                               "ORDER BY finished_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(zip(keys, r), ok=bool(r[5])) for r in rows]

    def last_backups(self, tenant: str | None = None) -> dict[tuple[str, str], float]:
        """(tenant, kind) -> when its last successful backup through govhost finished; of one
        tenant only, through its index, for an exporter's scrape or a unit's page (every
        unit's, a row per unit a night kept for ever, is a scan of the whole table: 0.24 s at
        5,000 units after 60 nights)."""
        where, args = ("AND tenant = ?", (tenant,)) if tenant is not None else ("", ())
        return {(t, k): ts for t, k, ts in self.db.execute(
            f"SELECT tenant, kind, MAX(finished_at) FROM backups WHERE ok = 1 {where} "
            "GROUP BY tenant, kind", args)}

    def record_check(self, kind: str, tenant: str | None, ok: bool, seconds: float,
                     detail: Mapping[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO backup_checks (kind, tenant, ok, at, seconds, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (kind, tenant, int(ok), time.time(), seconds,
                                                     json.dumps(detail, sort_keys=True)))
            self._audit(db, f"backup.{kind}", tenant or "repository",
                        {"ok": ok, "seconds": seconds})

    def checks(self, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self.db.execute(f"SELECT kind, tenant, ok, at, seconds, detail FROM backup_checks "
                               f"{where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [{"kind": k, "tenant": t, "ok": bool(ok), "at": at, "seconds": s,
                 "detail": json.loads(d)} for k, t, ok, at, s, d in rows]
