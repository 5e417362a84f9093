"""What the console's pages show, gathered with the same control-plane functions the CLI
uses (`status.gather`, the state store's records); the page templates only lay it out."""
from __future__ import annotations

import time
from typing import Any

from controlplane.content import releases as content_releases
from controlplane.core.county import County

DAY = 86400.0
VISIT_DAYS = 30        # the unit page's visits and most-read pages look this far back
# Rows on one page of the county's overview: at 5,000 units one table of every unit took
# 66 ms to lay out and 0.7 MB to send, each time an operator looked.
OVERVIEW_ROWS = 500


def overview(county: County, now: float | None = None) -> list[dict[str, Any]]:
    """Every unit, most neglected first (the dead-site ranking): days since its last
    update, pending releases, and its compliance result."""
    now = now or time.time()
    inv = county.inv
    with county.state() as st:
        published = st.last_published(t.name for t in inv.tenants)
        pending = st.content_releases(status="pending")
        checked = st.compliance(None)
    waiting: dict[str, int] = {}
    for r in pending:
        waiting[r["tenant"]] = waiting.get(r["tenant"], 0) + 1
    rows = []
    for t in inv.tenants:
        last = published.get(t.name)
        verdicts = checked.get(t.name, {}).get("verdicts", {})
        rows.append({"unit": t.name, "title": t.title, "kind": t.kind,
                     "host": inv.site_host(t), "last_update": last,
                     "days": None if last is None else int((now - last) // DAY),
                     "pending": waiting.get(t.name, 0),
                     "failed": sorted(k for k, v in verdicts.items() if not v["ok"]),
                     "checked": bool(verdicts)})
    return sorted(rows, key=lambda r: (-(r["days"] if r["days"] is not None else 10**6),
                                       r["unit"]))


def overview_page(rows: list[dict[str, Any]], page: int) -> dict[str, Any]:
    """One page of the overview (most neglected first), and how many there are."""
    pages = max(1, -(-len(rows) // OVERVIEW_ROWS))
    page = max(1, min(pages, page))
    start = (page - 1) * OVERVIEW_ROWS
    return {"rows": rows[start:start + OVERVIEW_ROWS], "total": len(rows), "page": page,
            "pages": pages, "first": start + 1}


def unit(county: County, name: str, now: float | None = None) -> dict[str, Any]:
    """One unit's page: its site on every node, releases, columns, certificate, backups,
    quota, and its compliance findings with what to do."""
    from controlplane.sites import status
    now = now or time.time()
    inv = county.inv
    t = inv.tenant(name)
    assert t is not None, name         # the console's routes check the unit first
    gathered = status.gather(county, only=name)
    row = gathered["tenants"][0]
    with county.state() as st:
        releases = st.content_releases(name)
        checked = st.compliance(None, tenant=name).get(name, {})
        cert = st.certificate_of_unit(name)
        backups = {k: v for (_, k), v in st.last_backups(name).items()}
        since = time.strftime("%Y-%m-%d", time.localtime(now - VISIT_DAYS * DAY))
        visits = st.visits(name, since)
        top_pages = st.top_pages(name, since)
    rollbacks = content_releases.rollback_proposals(county, name)
    verdicts = checked.get("verdicts", {})
    columns = next((v["evidence"] for k, v in verdicts.items() if k == "columns_fresh"), [])
    quota = inv.quota_bytes(t)
    return {
        "unit": name, "title": t.title, "host": inv.site_host(t), "kind": t.kind,
        "nodes": [{"node": n, "status": s, "up": s is not None and 200 <= s < 400,
                   "ms": row["latency_ms"].get(n)} for n, s in sorted(row["answers"].items())],
        "live": row["content_live"],
        "releases": sorted(releases, key=lambda r: -r["published_at"])[:20],
        "columns": [c for c in columns if isinstance(c, dict) and "path" in c],
        "cert": cert and {"issuer": cert["issuer"], "not_after": cert["not_after"],
                          "days_left": None if not cert["not_after"] else
                          int((cert["not_after"] - now) // DAY)},
        "backups": backups,
        "disk_bytes": row["disk_bytes"], "quota_bytes": quota,
        "quota_used": round(100 * row["disk_bytes"] / quota, 1) if quota else None,
        "findings": [{"indicator": k, "summary": v["summary"], "at_risk": v.get("at_risk")}
                     for k, v in sorted(verdicts.items()) if not v["ok"] or v.get("at_risk")],
        "checked_at": checked.get("checked_at"),
        "rollbacks": rollbacks[:10],
        "rollback_open": any(p["status"] == "pending" for p in rollbacks),
        "requests": row["requests"],
        # counted from the nodes' logs by `govhost compliance check` (govhost-visits)
        "visits": [{"day": d, "views": v, "visitors": u} for d, v, u in visits],
        "top_pages": [{"path": p, "views": v} for p, v in top_pages],
    }
