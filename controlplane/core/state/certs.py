"""Certificate lineages and every ACME order (the rate limits are counted from these)."""
from __future__ import annotations

import json
import time
from typing import Any

from controlplane.core.state.store import Store


class CertificateRecords(Store):
    _CERT_COLUMNS = ("lineage", "issuer", "names", "units", "not_before", "not_after", "serial",
                     "fingerprint", "ocsp", "issued_at", "last_attempt", "last_error",
                     "failures", "next_attempt", "failed_names", "attempt_names")

    def certificates(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute(f"SELECT {', '.join(self._CERT_COLUMNS)} FROM certificates")
        return {rec["lineage"]: rec for rec in map(self._cert_record, rows)}

    def certificates_stamp(self) -> tuple:
        """The lineages' records as stored, undecoded: what tells a reader that keeps what
        it built from them that they changed (the exporter, every round: decoding and
        encoding them again was 55 ms at 5,000 lineages)."""
        return tuple(self.db.execute(
            f"SELECT {', '.join(self._CERT_COLUMNS)} FROM certificates ORDER BY lineage"))

    def _cert_record(self, row: Any) -> dict[str, Any]:
        rec = dict(zip(self._CERT_COLUMNS, row))
        for k in ("names", "units", "failed_names", "attempt_names"):
            rec[k] = json.loads(rec[k])
        return rec

    def certificate_of_unit(self, unit: str) -> dict[str, Any] | None:
        """The first lineage (in the table's order, as `certificates()` lists them) whose
        units include `unit`: what a unit's page shows. Only the rows naming it are decoded
        (every lineage was, 36 ms a page at 5,000)."""
        rows = self.db.execute(
            f"SELECT {', '.join(self._CERT_COLUMNS)} FROM certificates WHERE instr(units, ?)",
            (json.dumps(unit),))
        return next((rec for rec in map(self._cert_record, rows) if unit in rec["units"]),
                    None)

    def save_certificate(self, lineage: str, **fields: Any) -> None:
        """Create or update a lineage's record with `fields` (lists stored as JSON)."""
        for k in ("names", "units", "failed_names", "attempt_names"):
            if k in fields:
                fields[k] = json.dumps(list(fields[k]))
        unknown = set(fields) - set(self._CERT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown certificate fields {sorted(unknown)}")
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO certificates (lineage, issuer, names, units) "
                       "VALUES (?, ?, '[]', '[]')", (lineage, fields.get("issuer", "")))
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                db.execute(f"UPDATE certificates SET {sets} WHERE lineage = ?",
                           (*fields.values(), lineage))

    def forget_certificate(self, lineage: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM certificates WHERE lineage = ?", (lineage,))

    def record_order(self, lineage: str, issuer: str, names: int, ok: bool, detail: str,
                     at: float | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO cert_orders (at, lineage, issuer, names, ok, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (time.time() if at is None else at, lineage, issuer, names, int(ok),
                        detail[:2000]))

    def orders_since(self, since: float, issuer: str = "acme", ok_only: bool = True) -> int:
        q = "SELECT COUNT(*) FROM cert_orders WHERE at >= ? AND issuer = ?"
        if ok_only:
            q += " AND ok = 1"
        return self.db.execute(q, (since, issuer)).fetchone()[0]
