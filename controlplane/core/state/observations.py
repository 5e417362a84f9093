"""What compliance and the yearly report count: probes per unit and hour (and day, kept a
year), failed probes, visits and most-read pages, weekly verdicts."""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping, Sequence

from controlplane.core.state.store import Store


class ObservationRecords(Store):
    def record_probe_round(self, at: float, rounds: Mapping[str, list[dict[str, Any]]]) -> None:
        """rounds: tenant -> the failed node probes of this round (empty list: all fine)."""
        hour = at - at % 3600
        with self.tx() as db:
            db.executemany(
                "INSERT INTO probe_hours (tenant, hour, probes, failures) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (tenant, hour) DO UPDATE SET probes = probes + 1, "
                "failures = failures + excluded.failures",
                [(t, hour, 1 if failed else 0) for t, failed in rounds.items()])
            # The yearly report's uptime: one row per unit and day, kept over a year.
            day = time.strftime("%Y-%m-%d", time.localtime(at))
            db.executemany(
                "INSERT INTO probe_days (tenant, day, probes, failures) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (tenant, day) DO UPDATE SET probes = probes + 1, "
                "failures = failures + excluded.failures",
                [(t, day, 1 if failed else 0) for t, failed in rounds.items()])
            db.execute("DELETE FROM probe_days WHERE day < ?", (time.strftime(
                "%Y-%m-%d", time.localtime(at - 800 * 86400)),))
            db.executemany("INSERT INTO probe_failures (tenant, at, detail) VALUES (?, ?, ?)",
                           [(t, at, json.dumps(f, sort_keys=True))
                            for t, f in rounds.items() if f])
            cutoff = at - 70 * 86400               # ten weeks are kept
            db.execute("DELETE FROM probe_hours WHERE hour < ?", (cutoff,))
            db.execute("DELETE FROM probe_failures WHERE at < ?", (cutoff,))

    def probe_year(self, year: int) -> dict[str, tuple[int, int]]:
        """Per tenant: (probes, failed probes) over the year's days."""
        return {t: (p, f) for t, p, f in self.db.execute(
            "SELECT tenant, SUM(probes), SUM(failures) FROM probe_days WHERE day LIKE ? "
            "GROUP BY tenant", (f"{year}-%",))}

    def record_visit_days(self, rows: Sequence[tuple[str, str, int, int]],
                          pages: Sequence[tuple[str, str, str, int]] = ()) -> None:
        """(tenant, day, page views, visitors) as counted from the nodes' logs, and the pages
        most read (tenant, day, path, views); a day counted again (it was still going on)
        replaces its earlier count."""
        now = time.time()
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO visit_days (tenant, day, page_views, "
                           "visitors, collected_at) VALUES (?, ?, ?, ?, ?)",
                           [(*r, now) for r in rows])
            db.executemany("DELETE FROM page_days WHERE tenant = ? AND day = ?",
                           sorted({(t, d) for t, d, _, _ in pages}))
            db.executemany("INSERT INTO page_days (tenant, day, path, views) VALUES "
                           "(?, ?, ?, ?)", pages)

    def visits(self, tenant: str, since_day: str) -> list[tuple[str, int, int]]:
        """(day, page views, visitors) of one unit from `since_day` on."""
        return [tuple(r) for r in self.db.execute(
            "SELECT day, page_views, visitors FROM visit_days WHERE tenant = ? AND day >= ? "
            "ORDER BY day", (tenant, since_day))]

    def top_pages(self, tenant: str, since_day: str, limit: int = 10
                  ) -> list[tuple[str, int]]:
        """The unit's most read pages from `since_day` on: (path, views)."""
        return [tuple(r) for r in self.db.execute(
            "SELECT path, SUM(views) AS v FROM page_days WHERE tenant = ? AND day >= ? "
            "GROUP BY path ORDER BY v DESC, path LIMIT ?", (tenant, since_day, limit))]

    def visit_year(self, year: int) -> dict[str, tuple[int, int, int]]:
        """Per tenant: (page views, visitors summed over days, days counted)."""
        return {t: (v, u, n) for t, v, u, n in self.db.execute(
            "SELECT tenant, SUM(page_views), SUM(visitors), COUNT(*) FROM visit_days "
            "WHERE day LIKE ? GROUP BY tenant", (f"{year}-%",))}

    def last_visit_day(self) -> str | None:
        """The last day counted completely (the day before the newest day counted)."""
        row = self.db.execute("SELECT MAX(day) FROM visit_days").fetchone()
        return row[0] if row else None

    def probe_week(self, tenant: str, start: float, end: float
                   ) -> tuple[int, int, list[dict[str, Any]]]:
        probes, failures = self.db.execute(
            "SELECT COALESCE(SUM(probes), 0), COALESCE(SUM(failures), 0) FROM probe_hours "
            "WHERE tenant = ? AND hour >= ? AND hour < ?",
            (tenant, start - start % 3600, end)).fetchone()
        times = [{"at": at, "nodes": json.loads(d)} for at, d in self.db.execute(
            "SELECT at, detail FROM probe_failures WHERE tenant = ? AND at >= ? AND at < ? "
            "ORDER BY at", (tenant, start, end))]
        return int(probes), int(failures), times

    def probe_days(self, tenant: str, start: float, end: float) -> dict[str, int]:
        """Local day (YYYY-MM-DD) -> probe rounds recorded for `tenant` that day."""
        out: dict[str, int] = {}
        for hour, n in self.db.execute(
                "SELECT hour, probes FROM probe_hours WHERE tenant = ? AND hour >= ? "
                "AND hour < ?", (tenant, start - start % 3600, end)):
            day = time.strftime("%Y-%m-%d", time.localtime(hour))
            out[day] = out.get(day, 0) + int(n)
        return out

    def probe_week_counts(self, tenants: Iterable[str], start: float, end: float
                          ) -> dict[str, tuple[int, int]]:
        """tenant -> (probes, failures) over the local days from `start`'s to the one before
        `end` (a week's bounds are local midnights), of `tenants` that were probed. At every
        scrape: each unit's few days are found through its own rows (the whole county's ten
        weeks of probe hours took 0.7 s to read at 5,000 units)."""
        first = time.strftime("%Y-%m-%d", time.localtime(start))
        last = time.strftime("%Y-%m-%d", time.localtime(end - 1))
        return {t: (int(p), int(f)) for t, p, f in self.db.execute(
            "SELECT j.value, SUM(p.probes), SUM(p.failures) FROM json_each(?) AS j "
            "CROSS JOIN probe_days AS p ON p.tenant = j.value AND p.day >= ? AND p.day <= ? "
            "GROUP BY j.value", (json.dumps(list(dict.fromkeys(tenants))), first, last))}

    def record_compliance(self, week: str, at: float,
                          verdicts: Mapping[str, Mapping[str, Any]]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO compliance (week, tenant, checked_at, "
                           "verdicts) VALUES (?, ?, ?, ?)",
                           [(week, t, at, json.dumps(v, ensure_ascii=False, sort_keys=True))
                            for t, v in verdicts.items()])

    def compliance(self, week: str | None = None,
                   tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """tenant -> {checked_at, verdicts} of `week` (the latest week checked if None); of
        `tenant` alone if given (one unit's page need not decode 5,000 units' verdicts)."""
        if week is None:
            row = self.db.execute("SELECT week FROM compliance WHERE checked_at <= ? "
                                  "ORDER BY checked_at DESC LIMIT 1",
                                  (time.time() + 60,)).fetchone()
            if row is None:
                return {}
            week = row[0]
        one = "" if tenant is None else " AND tenant = ?"
        return {t: {"week": week, "checked_at": at, "verdicts": json.loads(v)}
                for t, at, v in self.db.execute(
                    "SELECT tenant, checked_at, verdicts FROM compliance WHERE week = ?" + one,
                    (week,) if tenant is None else (week, tenant))}
