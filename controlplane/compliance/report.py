"""The weekly compliance report: one self-contained HTML file a county leader can open (a
summary on top, a section per unit with the evidence), or JSON and CSV for scripts."""
from __future__ import annotations

import csv
import datetime
import io
import json
import time
from typing import Any

import jinja2

from controlplane.compliance import rules
from controlplane.core import templates
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.sites import waf
from controlplane.sites.apply import waf_modes


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def load(county: County, week: str | None
         ) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """The week's verdicts per unit, the last `govhost security check` (None if never) and
    the units whose WAF does not block today."""
    if week is not None:
        rules.week_bounds(week)                     # refuses a malformed week
    st = county.open_state()
    try:
        checked = st.compliance(week)
        security = st.last_run("security")
        launched = st.launched()
    finally:
        st.close()
    if not checked:
        raise GovhostError(f"no compliance check recorded{' for ' + week if week else ''}; "
                           "run `govhost compliance check` first")
    inv, today = county.inv, datetime.date.today()
    exceptions = [n.to_json(today)
                  for n in waf.not_blocking(inv.tenants, waf_modes(inv, launched))]
    return next(iter(checked.values()))["week"], checked, security, exceptions


def render(county: County, week: str | None, fmt: str) -> str:
    week, checked, security, exceptions = load(county, week)
    inv = county.inv
    titles = {t.name: t.title for t in inv.tenants}
    rows = []
    for t, rec in sorted(checked.items()):
        v = rec["verdicts"]
        cells = {i: ("-" if i not in v else "pass" if v[i]["ok"] else "FAIL")
                 for i in rules.INDICATORS}
        rows.append({"tenant": t, "title": titles.get(t, t), "cells": cells,
                     "passed": all(x["ok"] for x in v.values())})
    if fmt == "json":
        return json.dumps({"week": week, "units": {t: rec for t, rec in sorted(checked.items())},
                           "security": security, "waf_exceptions": exceptions},
                          ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["tenant", "title", *rules.INDICATORS, "passed", "why failed"])
        for r in rows:
            why = "; ".join(f"{i}: {checked[r['tenant']]['verdicts'][i]['summary']}"
                            for i in rules.INDICATORS if r["cells"][i] == "FAIL")
            w.writerow([r["tenant"], r["title"], *(r["cells"][i] for i in rules.INDICATORS),
                        "yes" if r["passed"] else "no", why])
        return buf.getvalue()
    if fmt != "html":
        raise GovhostError(f"unknown format {fmt!r}; use html, json or csv")
    units = []
    for t, rec in sorted(checked.items()):
        verdicts = rec["verdicts"]
        for c in verdicts.get("columns_fresh", {}).get("evidence", []):
            if isinstance(c, dict):
                c["last_update_text"] = _when(c.get("last_update"))
        for h in verdicts.get("homepage_fresh", {}).get("evidence", []):
            if isinstance(h, dict):
                h["last_update_text"] = _when(h.get("last_update"))
        for f in verdicts.get("reachable", {}).get("evidence", []):
            f["at_text"] = _when(f.get("at"))
        units.append({"tenant": t, "title": titles.get(t, t), "verdicts": verdicts,
                      "host": f"{t}.{inv.cluster.domain}"})
    env = templates.environment("report", autoescape=True, undefined=jinja2.StrictUndefined)
    passed = sum(r["passed"] for r in rows)
    return env.get_template("report/compliance.html.j2").render(
        county=inv.cluster.name, week=week, rows=rows, units=units, titles=rules.TITLES,
        indicators=rules.INDICATORS, total=len(rows), passed=passed, failed=len(rows) - passed,
        checked_at=_when(max(rec["checked_at"] for rec in checked.values())),
        waf_exceptions=exceptions,
        security=security and {**security["summary"], "result": security["result"],
                               "at_text": _when(security["finished_at"])})
