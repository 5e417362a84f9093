#!/usr/bin/env python3
"""What a county's history costs the control plane's everyday work. The state store grows
every day it runs: probe hours (kept ten weeks) and days (kept over two years), failed
probes, content releases, nightly backups, weekly compliance results, visits and most-read
pages, the audit log. The work done every few seconds must cost what the units cost, not
what the days cost:

  scrape      what the exporter reads fresh at every Prometheus scrape
              (GovhostCollector.families over a round of UNITS units)
  round       one probe round recorded (every unit's result; every 30 s by default)
  overview    the console's overview of every unit (`views.overview`)
  compliance  one unit's reads in the weekly compliance run (its week's probes and days,
              its releases), averaged over 200 units

Each is measured on a state of DAYS days (default 365) of UNITS units (default 5,000) and
on a state of one day of the same units: the floor. The ratio is what the year costs over
the day (1.0: nothing). The history is written at the rates a county makes it: a probe
round every 30 s, a release a unit every other day (one unit in twenty with one waiting
for review), a backup of files and one of the database a unit a night, a compliance
check a week, three most-read pages a unit a day, failed probes on one unit in ten a day.

Before stop 65 the scrape read this week's probe counts from every row of the ten weeks of
probe hours, and every round's clean-up scanned those rows and two years of probe days.
The figures, each with its floor and ratio, are one JSON object on the last line.

    python bench/state_history.py [UNITS] [DAYS] [--json]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from holdings_scale import best  # noqa: E402  (bench/, this script's own directory)

from controlplane.console import views  # noqa: E402
from controlplane.core.county import County  # noqa: E402
from controlplane.core.state import State  # noqa: E402
from controlplane.monitoring.exporter import GovhostCollector, Prober, Round  # noqa: E402
from tests.helpers import generated_county  # noqa: E402

DAY = 86400


def fill(st: State, units: int, days: int, now: float) -> None:
    """`days` days of history before `now`, in SQL (millions of rows in a few seconds)."""
    today = now - now % DAY
    with st.tx() as db:
        db.execute("CREATE TEMP TABLE u AS WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL "
                   "SELECT i + 1 FROM c WHERE i < ?) SELECT i, printf('unit%04d', i) AS name "
                   "FROM c", (units - 1,))
        db.execute("CREATE TEMP TABLE d AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
                   "SELECT i + 1 FROM c WHERE i < ?) SELECT i FROM c", (days,))
        db.execute("CREATE TEMP TABLE h AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
                   "SELECT i + 1 FROM c WHERE i < ?) SELECT i FROM c", (min(days, 70) * 24,))
        db.execute("INSERT INTO probe_hours SELECT u.name, ? - h.i * 3600, 120, 0 FROM u, h",
                   (now - now % 3600,))
        db.execute("INSERT INTO probe_days SELECT u.name, date(?, 'unixepoch', 'localtime', "
                   "'-' || d.i || ' days'), 2880, 0 FROM u, d", (now,))
        db.execute("INSERT INTO probe_failures SELECT u.name, ? - d.i * ? + 600, "
                   "'[{\"node\": \"n3\", \"status\": null}]' FROM u, d "
                   "WHERE d.i <= 70 AND (u.i + d.i) % 10 = 0", (today, DAY))
        db.execute("INSERT INTO content_releases (tenant, release_id, status, published_at, "
                   "actor, files, bytes, nodes, changes) SELECT u.name, "
                   "printf('r%05d', d.i), CASE WHEN d.i <= 2 THEN 'live' ELSE 'superseded' END, "
                   "? - d.i * ?, 'ops', 40, 400000, '[\"n1\", \"n2\"]', '{}' FROM u, d "
                   "WHERE (u.i + d.i) % 2 = 0", (today, DAY))
        db.execute("INSERT INTO content_releases (tenant, release_id, status, published_at, "
                   "actor, files, bytes, nodes, changes) SELECT u.name, 'r99999', 'pending', "
                   "?, 'editor', 40, 400000, '[]', '{}' FROM u WHERE u.i % 20 = 0", (now,))
        db.execute("INSERT INTO backups SELECT printf('night%05d', d.i), u.name, k.kind, 'n1', "
                   "printf('%08x', u.i * 1000 + d.i), 1, ? - d.i * ? + 7200, "
                   "? - d.i * ? + 7205, 5.0, 40, 400000, 4000, '' FROM u, d, "
                   "(SELECT 'files' AS kind UNION SELECT 'db') AS k", (today, DAY, today, DAY))
        db.execute("INSERT INTO compliance SELECT printf('w%04d', d.i), u.name, ? - d.i * ?, "
                   "'{\"reachable\": {\"ok\": true, \"summary\": \"\", \"evidence\": []}}' "
                   "FROM u, d WHERE d.i % 7 = 1", (now, DAY))
        db.execute("INSERT INTO visit_days SELECT u.name, date(?, 'unixepoch', 'localtime', "
                   "'-' || d.i || ' days'), 300, 120, ? FROM u, d", (now, now))
        db.execute("INSERT INTO page_days SELECT u.name, date(?, 'unixepoch', 'localtime', "
                   "'-' || d.i || ' days'), '/p' || p.i || '.html', 40 FROM u, d, "
                   "(SELECT 1 AS i UNION SELECT 2 UNION SELECT 3) AS p", (now,))
        db.execute("INSERT INTO audit (ts, actor, action, target, detail) SELECT ? - d.i * ?, "
                   "'ops', 'content.publish', u.name, '{}' FROM u, d WHERE (u.i + d.i) % 2 = 0",
                   (today, DAY))


def measure(county: County, units: int, now: float) -> dict:
    names = [f"unit{i:04d}" for i in range(units)]
    collector = GovhostCollector(county, Prober(county, interval=30))
    rnd = Round(finished=now, quotas={n: 1 << 30 for n in names})
    st = county.open_state()
    try:
        step = iter(range(1, 1000))

        def one_round() -> None:
            st.record_probe_round(now + next(step), {n: [] for n in names})

        def compliance_reads() -> None:
            for n in names[:: max(1, units // 200)]:
                st.probe_week(n, now - 5 * DAY, now + 1)
                st.probe_days(n, now - 5 * DAY, now + 1)
                st.content_releases(n)

        sample = len(names[:: max(1, units // 200)])
        return {"scrape_s": best(lambda: list(collector.families(rnd)), 5),
                "round_s": best(one_round, 5),
                "overview_s": best(lambda: views.overview(county, now), 5),
                "compliance_unit_s": best(compliance_reads, 3) / sample,
                "state_mb": round(county.state_dir.joinpath("state.db").stat().st_size / 1e6,
                                  1)}
    finally:
        st.close()


def county_with(root: Path, units: int, days: int, now: float) -> tuple[County, float]:
    inv = generated_county(root / "inv", units)
    county = County(inv, root / "state")
    st = county.open_state()
    try:
        t = time.perf_counter()
        fill(st, units, days, now)
        return county, time.perf_counter() - t
    finally:
        st.close()


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    units = int(args[0]) if args else 5000
    days = int(args[1]) if len(args) > 1 else 365
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="govhost-bench-history-") as tmp:
        year, fill_s = county_with(Path(tmp) / "year", units, days, now)
        day, _ = county_with(Path(tmp) / "day", units, 1, now)
        # Each side measured twice, interleaved, the best kept: the host's moods hit both.
        runs = [(measure(year, units, now), measure(day, units, now)) for _ in range(2)]
    out: dict = {"bench": "state_history", "units": units, "days": days,
                 "fill_s": round(fill_s, 1)}
    for key in ("scrape_s", "round_s", "overview_s", "compliance_unit_s"):
        a = min(r[0][key] for r in runs)
        b = min(r[1][key] for r in runs)
        out[key] = {"year": round(a, 6), "floor": round(b, 6),
                    "x_floor": round(a / b, 2) if b else None}
    out["state_mb"] = {"year": runs[0][0]["state_mb"], "floor": runs[0][1]["state_mb"]}
    if not as_json:
        print(f"{units} units, {days} days of history (written in {fill_s:.1f} s), "
              f"state {out['state_mb']['year']} MB against {out['state_mb']['floor']} MB:")
        for key in ("scrape_s", "round_s", "overview_s", "compliance_unit_s"):
            f = out[key]
            print(f"  {key[:-2]:<16} {f['year'] * 1000:9.2f} ms   one day {f['floor'] * 1000:9.2f}"
                  f" ms   {f['x_floor']}x")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
