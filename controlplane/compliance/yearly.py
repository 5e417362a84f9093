"""The yearly government website report (政府网站工作年度报表): the figures the platform
knows, per unit.

- Page views and visitors: counted on the nodes from their access logs (govhost-visits),
  one row per unit and day kept in the state store. The logs are kept 180 days, so the
  counts are collected as they go (every `govhost compliance check`, and before a yearly
  report): a year is complete when it was collected at least every 180 days.
- Pages and attachments published per column, and updates: from the publish record.
- Uptime: the share of the exporter's homepage probes that loaded, from its daily counts.
- Security incidents: the tamper watchers' incidents of the year (given by the caller, which
  asks the nodes).
- Citizens' messages (留言办理): received on the unit's site in the year, answered, and the
  median days to an answer, from the control machine's index and the answers
  (`message_figures`).

`figures` is pure; `collect` asks the nodes.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any, Callable, Mapping, Sequence

from controlplane.core import paths, templates
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.inventory import Inventory
from controlplane.sites.content_sync import Link, SyncError

Say = Callable[[str], None]
ATTACHMENTS = (".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".wps", ".et",
               ".dps", ".ofd", ".txt", ".csv", ".zip", ".rar", ".7z")
PAGES = (".html", ".htm", ".shtml", ".php")
LOG_DAYS = 180
CSV_COLUMNS = ("tenant", "title", "page_views", "visitors", "days_counted", "uptime_percent",
               "probes", "updates", "pages_published", "attachments_published", "columns",
               "security_incidents", "messages_received", "messages_answered",
               "median_days_to_answer", "by_column")


class YearlyError(GovhostError):
    pass


def kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith(PAGES):
        return "page"
    if low.endswith(ATTACHMENTS):
        return "attachment"
    return None


def _in_year(ts: float, year: int) -> bool:
    return time.localtime(ts).tm_year == year


def figures(inv: Inventory, year: int, releases: Sequence[Mapping[str, Any]],
            visits: Mapping[str, tuple[int, int, int]],
            probes: Mapping[str, tuple[int, int]],
            incidents: Mapping[str, int],
            messages: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per unit of the inventory (`messages`: message_figures)."""
    rows = []
    by_unit: dict[str, list[Mapping[str, Any]]] = {}
    for r in releases:
        if r["status"] not in ("pending", "rejected") and _in_year(r["published_at"], year):
            by_unit.setdefault(r["tenant"], []).append(r)
    for t in inv.tenants:
        went = by_unit.get(t.name, [])
        added = [p for r in went for p, _ in (r.get("changes") or {}).get("added", [])]
        columns = []
        for col in t.columns:
            prefix = col.path.lstrip("/")
            mine = [p for p in added if p.startswith(prefix)]
            columns.append({"path": col.path, "title": col.title,
                            "pages": sum(kind(p) == "page" for p in mine),
                            "attachments": sum(kind(p) == "attachment" for p in mine)})
        views, visitors, days = visits.get(t.name, (0, 0, 0))
        n, failed = probes.get(t.name, (0, 0))
        rows.append({
            "tenant": t.name, "title": t.title, "page_views": views, "visitors": visitors,
            "days_counted": days,
            "uptime_percent": round(100 * (n - failed) / n, 3) if n else None,
            "probes": n, "updates": len(went),
            "pages_published": sum(kind(p) == "page" for p in added),
            "attachments_published": sum(kind(p) == "attachment" for p in added),
            "columns": len(t.columns), "security_incidents": incidents.get(t.name, 0),
            **_message_row((messages or {}).get(t.name)), "by_column": columns})
    return rows


def _message_row(m: Mapping[str, Any] | None) -> dict[str, Any]:
    m = m or {}
    return {"messages_received": m.get("received", 0),
            "messages_answered": m.get("answered", 0),
            "median_days_to_answer": m.get("median_days")}


def message_figures(index: Sequence[Mapping[str, Any]], answers: Sequence[Mapping[str, Any]],
                    year: int) -> dict[str, dict[str, Any]]:
    """Per unit whose site took them: the citizens' messages of the county's `year`, those
    of them answered, and the median of the calendar days from the county day each came in
    to its answer (pure). A message forwarded to another unit counts where it was written,
    as the inspections count a site's box."""
    from statistics import median

    from controlplane.messages.deadlines import county_day, days_to_answer
    answered = {a["number"]: a["answered_at"] for a in answers}
    out: dict[str, dict[str, Any]] = {}
    days: dict[str, list[int]] = {}
    for row in index:
        if county_day(row["received"]).year != year:
            continue
        unit = out.setdefault(row["unit"], {"received": 0, "answered": 0, "median_days": None})
        unit["received"] += 1
        if row["number"] in answered:
            unit["answered"] += 1
            days.setdefault(row["unit"], []).append(
                days_to_answer(row["received"], answered[row["number"]]))
    for name, got in days.items():
        out[name]["median_days"] = median(got)
    return out


def merge(per_node: Sequence[Mapping[str, Mapping[str, Mapping[str, Any]]]]
          ) -> list[tuple[str, str, int, int]]:
    """The nodes' counts as (tenant, day, page views, visitors): views add up, visitors are
    the distinct hashes over all nodes (a visitor who reached two nodes is one)."""
    views: dict[tuple[str, str], int] = {}
    ips: dict[tuple[str, str], set[str]] = {}
    for node in per_node:
        for tenant, days in node.items():
            for day, d in days.items():
                key = (tenant, day)
                views[key] = views.get(key, 0) + int(d["views"])
                ips.setdefault(key, set()).update(d["ips"])
    return [(t, d, views[(t, d)], len(ips[(t, d)])) for t, d in sorted(views)]


def merge_pages(per_node: Sequence[Mapping[str, Mapping[str, Mapping[str, Any]]]],
                keep: int = 50) -> list[tuple[str, str, str, int]]:
    """The pages most read as (tenant, day, path, views), added up over the nodes, the
    `keep` most read per unit and day."""
    pages: dict[tuple[str, str], dict[str, int]] = {}
    for node in per_node:
        for tenant, days in node.items():
            for day, d in days.items():
                got = pages.setdefault((tenant, day), {})
                for path, n in d.get("pages", {}).items():
                    got[str(path)] = got.get(str(path), 0) + int(n)
    return [(t, d, path, n) for (t, d), got in sorted(pages.items())
            for path, n in sorted(got.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]]


def collect(county: County, say: Say = lambda _: None) -> dict[str, Any]:
    """Count the days not yet counted (and the last one again: it may have been going on)
    from every node's logs into the state store. Every node must answer: a day counted
    without one of them would be short for good."""
    inv = county.inv
    with county.state() as st:
        last = st.last_visit_day()
    first = (date.today() - timedelta(days=LOG_DAYS)).isoformat()
    since = max(last, first) if last else first
    link = Link(inv.hosts, county.known_hosts, {n.name: n for n in inv.hosts.nodes})

    def one(node: str) -> tuple[str, Any]:
        try:
            return node, json.loads(link.run(node, "count", "--since", since, timeout=600,
                                             tool=paths.NODE_VISITS_TOOL))
        except (SyncError, subprocess.TimeoutExpired, ValueError) as exc:
            return node, exc

    nodes = [n.name for n in inv.hosts.web_nodes]
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        got = dict(pool.map(one, nodes))
    failed = {n: str(e) for n, e in got.items() if isinstance(e, Exception)}
    if failed:
        raise YearlyError("cannot count visits: " + "; ".join(
            f"{n}: {e[-200:]}" for n, e in sorted(failed.items()))
            + " (nothing recorded; run `govhost apply` if the nodes lack govhost-visits)")
    rows = merge(list(got.values()))
    with county.state() as st:
        st.record_visit_days(rows, merge_pages(list(got.values())))
    say(f"counted {len(rows)} unit-days since {since} on {len(nodes)} node(s)")
    return {"since": since, "unit_days": len(rows), "nodes": len(nodes)}


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        cols = "; ".join(f"{c['title']} {c['path']}: {c['pages']} pages, {c['attachments']} "
                         "attachments" for c in r["by_column"])
        w.writerow([*(r[k] if r[k] is not None else "" for k in CSV_COLUMNS[:-1]), cols])
    return buf.getvalue()


def to_html(county_name: str, year: int, rows: Sequence[Mapping[str, Any]],
            collected: str) -> str:
    import jinja2
    env = templates.environment("report", autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report/yearly.html.j2").render(
        county=county_name, year=year, rows=rows, collected=collected,
        totals={k: sum(r[k] for r in rows) for k in (
            "page_views", "visitors", "updates", "pages_published", "attachments_published",
            "security_incidents", "messages_received", "messages_answered")})
