"""The national inspection indicators for government websites, judged from data: pure functions.

Each indicator gets what it needs as plain data (probe counts, the publish record, the live
file list, a crawled page) and returns a verdict with its evidence, so the rules are tested
without any server and the report shows why a unit passed or failed.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urldefrag, urljoin, urlsplit

from controlplane.core import wordlists
from controlplane.core.manifest import Column, Compliance, Tenant

INDICATORS = ("reachable", "homepage_fresh", "columns_fresh", "links", "footer", "https_ipv6",
              "logs", "wording", "load_time", "accessibility", "messages")
TITLES = {"reachable": "站点可访问 Site reachable (veto)",
          "homepage_fresh": "首页更新 Homepage updated",
          "columns_fresh": "栏目更新 Columns updated",
          "links": "链接可用 No broken links",
          "footer": "页脚标识 Footer marks",
          "https_ipv6": "HTTPS 与 IPv6",
          "logs": "日志留存 Logs kept",
          "wording": "错敏词 Wording",
          "load_time": "加载速度 Load time",
          "accessibility": "无障碍 Accessibility (GB/T 37668)",
          "messages": "互动回应 Messages answered (veto past 3 months)"}
IMPACTS = ("minor", "moderate", "serious", "critical")
HOMEPAGES = ("index.html", "index.htm", "index.php")
DAY = 86400.0


@dataclass
class Verdict:
    indicator: str
    ok: bool
    summary: str
    evidence: list[Any] = field(default_factory=list)
    at_risk: bool = False
    # Counts an indicator is judged on, next to their limits (columns_fresh: the veto's three)
    tally: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def column_limits(c: Compliance) -> dict[str, float]:
    defaults = {"news": 14, "updates": 14, "notices": 182, "policy": 182, "personnel": 365,
                "plans": 365}
    return {**defaults, **c.column_limits_days}


# ------------------------------------------------------------------ weeks

def week_bounds(week: str) -> tuple[float, float]:
    """'2026-W47' -> [Monday 00:00, next Monday 00:00) in local time, as epoch seconds."""
    m = re.fullmatch(r"(\d{4})-W(\d{2})", week)
    if not m:
        raise ValueError(f"{week!r} is not a week; use YYYY-Www, e.g. 2026-W47")
    try:
        monday = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError:
        raise ValueError(f"{week!r} is not a week of that year") from None
    # Both ends are local midnights: seven days added to an aware time would end a week
    # in which the clocks change an hour off its Monday.
    nxt = monday + timedelta(days=7)
    return (datetime(monday.year, monday.month, monday.day).astimezone().timestamp(),
            datetime(nxt.year, nxt.month, nxt.day).astimezone().timestamp())


def week_of(ts: float) -> str:
    y, w, _ = datetime.fromtimestamp(ts).isocalendar()
    return f"{y}-W{w:02d}"


# ------------------------------------------------------------------ indicators

def reachability(probes: int, failures: int, failure_times: Sequence[Mapping[str, Any]],
                 ratio: float, per_day: Mapping[str, int] | None = None,
                 min_per_day: int = 20, today: str = "") -> Verdict:
    """Fails the week when failed probes reach `ratio` of the week's probes. At risk when
    the failures so far are at least half of that. The inspection probes at least
    `min_per_day` times a day; a past day with fewer probes here (the exporter was down) is
    named, as the week's share then says less than the inspector's."""
    if probes == 0:
        return Verdict("reachable", False, "no probes recorded this week: is `govhost "
                       "exporter` running?")
    share = failures / probes
    ok = share < ratio
    thin = sorted(d for d, n in (per_day or {}).items() if d != today and n < min_per_day)
    note = (f"; fewer than {min_per_day} probes on {', '.join(thin)} (is `govhost exporter` "
            "running all day?)" if thin else "")
    return Verdict("reachable", ok,
                   f"{failures} of {probes} probes failed ({share:.1%}; fails at {ratio:.0%})"
                   + note, [dict(f) for f in failure_times][:100],
                   at_risk=ok and (share >= ratio / 2 or bool(thin)))


def _went_live(releases: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((r for r in releases if r["status"] not in ("pending", "rejected")),
                  key=lambda r: r["published_at"])


def _touched(r: Mapping[str, Any]) -> list[str]:
    ch = r.get("changes") or {}
    return ([p for p, _ in ch.get("added", [])] + [p for p, _ in ch.get("changed", [])]
            + list(ch.get("removed", [])))


# Dates as a page shows them: 2026-11-20, 2026/11/20, 2026.11.20, 2026年11月20日 and, in
# lists of news, [11-20] or (11-20) for a date of the current year.
_FULL_DATE = re.compile(r"(?<!\d)(\d{4})\s*(?:[-/.]\s*(\d{1,2})\s*[-/.]\s*(\d{1,2})"
                        r"|年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日)(?!\d)")
_SHORT_DATE = re.compile(r"[\[［(（【]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?\s*[\]］)）】]")


def shown_dates(html: str, today: date) -> list[date]:
    """The publication dates a reader sees on a page (visible text only: not scripts, styles
    or meta tags), newest first. A date after tomorrow is an event's, not a publication's,
    and is left out; a month-day without a year is this year's, or last year's if that
    would lie in the future."""
    text = _visible_text(html, keep_space=True)
    found: set[date] = set()
    for m in _FULL_DATE.finditer(text):
        y, mo, d = int(m.group(1)), int(m.group(2) or m.group(4)), int(m.group(3) or m.group(5))
        try:
            found.add(date(y, mo, d))
        except ValueError:
            continue
    for m in _SHORT_DATE.finditer(text):
        mo, d = int(m.group(1)), int(m.group(2))
        for y in (today.year, today.year - 1):
            try:
                when = date(y, mo, d)
            except ValueError:
                break
            if when <= today + timedelta(days=1):
                found.add(when)
                break
    return sorted((d for d in found if 1990 <= d.year and d <= today + timedelta(days=1)),
                  reverse=True)


def homepage_freshness(releases: Sequence[Mapping[str, Any]], now: float,
                       stale_days: float, homepage: str | None = None) -> Verdict:
    """Inspectors read the dates the homepage shows: the newest one must be within the limit,
    and a homepage that shows none is not updated. The publish record (the last live release
    that changed the index file) is reported beside it; where the two disagree the shown date
    wins. Without the page (the crawl could not load it) the record alone decides."""
    last = None
    for r in _went_live(releases):
        if any(p in HOMEPAGES for p in _touched(r)):
            last = r["published_at"]
    record = (f"published {_day(last)}, {(now - last) / DAY:.1f} days ago" if last
              else "never published")
    ev: dict[str, Any] = {"last_update": last, "shown_date": None, "shown_age_days": None,
                          "dates_shown": 0, "limit_days": stale_days}
    if homepage is None:
        if last is None:
            return Verdict("homepage_fresh", False, "the homepage was never published", [ev])
        age = (now - last) / DAY
        ok = age <= stale_days
        return Verdict("homepage_fresh", ok, f"last updated {_day(last)}, {age:.1f} days ago "
                       f"(limit {stale_days:g}; the page could not be read for its dates)", [ev],
                       at_risk=ok and age > stale_days * 10 / 14)
    today = datetime.fromtimestamp(now).date()
    dates = shown_dates(homepage, today)
    ev["dates_shown"] = len(dates)
    if not dates:
        return Verdict("homepage_fresh", False, "the homepage shows no publication dates; the "
                       "inspection counts it as not updated: show each item's date (e.g. "
                       f"2026-11-20 or 2026年11月20日) ({record})", [ev])
    newest = dates[0]
    age_days = max(0, (today - newest).days)
    ev.update(shown_date=newest.isoformat(), shown_age_days=age_days)
    ok = age_days <= stale_days
    summary = (f"newest date shown {newest.isoformat()}, {age_days} days ago (limit "
               f"{stale_days:g}); {record}")
    if not ok and last is not None and (now - last) / DAY <= stale_days:
        summary += (": the page was published again but shows only old items, and the "
                    "inspection reads the dates on the page; publish new items")
    return Verdict("homepage_fresh", ok, summary, [ev],
                   at_risk=ok and age_days > stale_days * 10 / 14)


# The veto's first count: first-level columns of these categories past their limits.
_VETO_CATEGORIES = ("news", "updates", "notices", "policy")


def column_freshness(columns: Sequence[Column], releases: Sequence[Mapping[str, Any]],
                     live_files: Iterable[str], now: float, c: Compliance) -> Verdict:
    """Columns as the inspection counts them. Each column's last update is the last live
    release that added, changed or removed a file under its path. The veto falls on counts:
    `stale_columns_veto` first-level news/updates/notices/policy columns past their limits,
    `long_stale_columns_veto` columns of any level not updated for `long_stale_days`, or
    `empty_columns_veto` empty columns. Below those each stale or empty column is a finding
    with its deduction, not a veto."""
    counts = {"stale_first_level": 0, "long_stale": 0, "empty": 0}
    limits_of = {"stale_first_level": c.stale_columns_veto,
                 "long_stale": c.long_stale_columns_veto, "empty": c.empty_columns_veto}
    if not columns:
        return Verdict("columns_fresh", True, "no columns declared in the manifest",
                       tally={"counts": counts, "limits": limits_of, "deduction": 0})
    live = list(live_files)
    # newest first, each release's paths listed once: a column's last update is the first
    # release that touched it (every column walked every release, 5 ms a unit at 180)
    newest = [(r["published_at"], _touched(r)) for r in reversed(_went_live(releases))]
    limits = column_limits(c)
    rows = []
    for col in columns:
        prefix = col.path.lstrip("/")
        last = next((at for at, paths in newest
                     if any(p.startswith(prefix) for p in paths)), None)
        files = sum(1 for p in live if p.startswith(prefix))
        limit = limits[col.category]
        age = (now - last) / DAY if last else None
        level = col.path.strip("/").count("/") + 1
        state = ("empty" if files == 0 else "never updated" if last is None
                 else "stale" if age > limit else "ok")
        long_stale = files > 0 and (age is None or age > c.long_stale_days)
        veto_kind = (state in ("stale", "never updated") and level == 1
                     and col.category in _VETO_CATEGORIES)
        counts["empty"] += state == "empty"
        counts["long_stale"] += long_stale
        counts["stale_first_level"] += veto_kind
        rows.append({"path": col.path, "title": col.title, "category": col.category,
                     "level": level, "files": files, "last_update": last,
                     "age_days": round(age, 1) if age is not None else None,
                     "limit_days": limit, "state": state, "long_stale": long_stale,
                     "deduction": c.stale_column_deduction if state != "ok" else 0})
    over = [k for k in counts if counts[k] >= limits_of[k]]
    bad = [r for r in rows if r["state"] != "ok"]
    deduction = sum(r["deduction"] for r in rows)
    tally = {"counts": counts, "limits": limits_of, "deduction": deduction}
    names = {"stale_first_level": "first-level news/notice columns past their limits",
             "long_stale": f"columns not updated for {c.long_stale_days:g} days",
             "empty": "empty columns"}
    listing = "; ".join(
        f"{r['title']} ({r['path']}) {r['state']}" +
        (f", last update {_day(r['last_update'])}" if r["last_update"] else "") for r in bad)
    if over:
        return Verdict("columns_fresh", False, "veto: " + ", ".join(
            f"{counts[k]} {names[k]} (the limit is {limits_of[k]})" for k in over)
            + f": {listing}", rows, tally=tally)
    if bad:
        return Verdict("columns_fresh", True, f"{len(bad)} column(s) not up to date, below the "
                       f"veto's counts; deduction {deduction:g}: {listing}", rows,
                       at_risk=any(counts[k] >= limits_of[k] - 1 for k in counts), tally=tally)
    return Verdict("columns_fresh", True, f"{len(rows)} columns up to date", rows, tally=tally)


def footer(html: str, tenant: Tenant) -> Verdict:
    """The homepage must show the organiser, a contact, the site code, ICP and PSB numbers."""
    text = _visible_text(html)
    marks = {"organiser (主办单位)": [tenant.title],
             "contact": [tenant.contact.phone, tenant.contact.email]}
    if tenant.identity is None:
        return Verdict("footer", False, "no `identity` (site_code, icp, psb) in the manifest")
    marks["site code (网站标识码)"] = [tenant.identity.site_code]
    marks["ICP record"] = [tenant.identity.icp]
    marks["public-security record"] = [tenant.identity.psb]
    missing = [name for name, options in marks.items()
               if not any(_norm(o) in text for o in options)]
    if missing:
        return Verdict("footer", False, "missing on the homepage: " + ", ".join(missing),
                       missing)
    return Verdict("footer", True, "organiser, contact, site code, ICP and PSB shown")


def links(broken: Sequence[Mapping[str, Any]], checked: int, pages: int,
          truncated: bool, through: str | None = None) -> Verdict:
    """Broken links of the crawl; `through`: the node address the crawl went in by."""
    note = " (crawl stopped at its page or time limit)" if truncated else ""
    via = f", crawled through {through}" if through else ""
    if broken:
        return Verdict("links", False, f"{len(broken)} broken of {checked} links on {pages} "
                       f"pages{note}{via}", list(broken))
    return Verdict("links", True, f"{checked} links on {pages} pages all answer{note}{via}")


def https_ipv6(serves_https: bool, ipv6_probes: Sequence[Mapping[str, Any]],
               aaaa: bool) -> Verdict:
    """HTTPS with a valid certificate, and the homepage loaded over IPv6 through every web
    node (each probe row: node, address6, ok, error): measured, as the inspection reaches
    the site over IPv6, not read from the config. Every name needs an AAAA record too."""
    missing = []
    if not serves_https:
        missing.append("HTTPS with a valid certificate")
    if not ipv6_probes:
        missing.append("an IPv6 address on the web nodes (hosts.yaml `address6`)")
    failed = [p for p in ipv6_probes if not p.get("ok")]
    for p in failed:
        missing.append(f"IPv6 through {p['node']}"
                       + (f" ({p['address6']}): {p['error']}" if p.get("address6")
                          else ": no `address6` in hosts.yaml"))
    if not aaaa:
        missing.append("AAAA records in the county DNS plan")
    ev = [dict(p) for p in ipv6_probes]
    if missing:
        return Verdict("https_ipv6", False, "missing: " + "; ".join(missing), ev,
                       tally={"missing": missing})
    return Verdict("https_ipv6", True, f"HTTPS, and the homepage loads over IPv6 through "
                   f"{len(ipv6_probes)} node(s)", ev)


def logs(oldest: float | None, rotation_days: int | None, retention_days: int,
         now: float) -> Verdict:
    """Logs must be kept for retention_days: the rotation keeps at least that long. The
    oldest log present is reported (a new site has only young logs, and passes)."""
    oldest_txt = f"oldest log {_day(oldest)} ({(now - oldest) / DAY:.0f} days)" if oldest \
        else "no log yet"
    if rotation_days is None:
        return Verdict("logs", False, f"no log rotation found on the node; {oldest_txt}")
    ok = rotation_days >= retention_days
    return Verdict("logs", ok, f"rotation keeps {rotation_days} days (needs {retention_days}); "
                   f"{oldest_txt}", [{"oldest": oldest, "rotation_days": rotation_days}])


def wording(checked: Mapping[str, Any] | None, lists: bool) -> Verdict:
    """The live release against the county's word lists: a `block` or `review` word on the
    live site is a serious wording error (严重表述错误) until it is corrected; notes are not."""
    if not lists:
        return Verdict("wording", True, "the county keeps no word lists (inventory/wording/)")
    if checked is not None and checked.get("error"):
        return Verdict("wording", False, f"could not check the live site: {checked['error']}")
    if checked is None or checked.get("release") is None:
        return Verdict("wording", True, "nothing published yet")
    found = checked["findings"]
    serious = [f for f in found if f["severity"] in wordlists.SERIOUS]
    if serious:
        words = sorted({f["word"] for f in serious})
        return Verdict("wording", False, f"{len(serious)} wording error(s) on the live site "
                       f"({', '.join(words[:5])}{'…' if len(words) > 5 else ''}): correct the "
                       "pages and publish again", serious[:50])
    notes = len(found)
    return Verdict("wording", True, "no wording errors" + (f" ({notes} notes)" if notes else ""),
                   found[:50])


def messages(standings: Sequence[tuple[str, str]]) -> Verdict:
    """互动回应: the inspections (国办秘函〔2019〕19号) veto a site with a citizen's message
    left unanswered for more than three months; a message past the county's own due date is
    a risk. `standings`: (number, standing) of each message written on the unit's site
    (messages/deadlines.py)."""
    count = {k: sum(1 for _, s in standings if s == k)
             for k in ("answered", "open", "due_soon", "overdue", "alert", "veto")}
    tally = {"received": len(standings), **count}
    vetoed = sorted(n for n, s in standings if s == "veto")
    late = sorted(n for n, s in standings if s in ("overdue", "alert"))
    if vetoed:
        return Verdict("messages", False, f"veto: {len(vetoed)} message(s) unanswered for more "
                       f"than three months ({', '.join(vetoed[:5])}"
                       f"{'…' if len(vetoed) > 5 else ''}): answer them in the console",
                       vetoed[:50], tally=tally)
    summary = f"{count['answered']} of {len(standings)} answered"
    if late:
        return Verdict("messages", True, f"{summary}; {len(late)} past the due date "
                       f"({', '.join(late[:5])}{'…' if len(late) > 5 else ''})", late[:50],
                       at_risk=True, tally=tally)
    return Verdict("messages", True, summary + ("; none past the due date" if standings
                                                else ""), tally=tally)


def load_time(page: Mapping[str, Any] | None, limit: float, unavailable: str = "") -> Verdict:
    """The homepage must load, with everything on it, within `limit` seconds (指引: 3 s) in
    a browser under a visitor's connection. Over the limit the heaviest assets say why."""
    if page is None:
        return Verdict("load_time", False, f"not measured: {unavailable or 'no browser run'}")
    if page.get("error"):
        return Verdict("load_time", False, f"the homepage did not load in the browser: "
                       f"{page['error']}", [dict(page)])
    secs, size = page["load_seconds"], page["bytes"]
    ev = {k: page.get(k) for k in ("url", "through", "load_seconds", "bytes", "requests",
                                   "heaviest", "timed_out", "status")}
    weight = f"{size / 1e6:.2f} MB in {page['requests']} requests"
    if page.get("timed_out") or secs > limit:
        heavy = ", ".join(f"{h['url'].rsplit('/', 1)[-1] or h['url']} "
                          f"({h['bytes'] / 1e6:.2f} MB)" for h in page["heaviest"][:3]
                          if h["bytes"])
        waited = "did not finish loading within" if page.get("timed_out") else "loads in"
        return Verdict("load_time", False, f"the homepage {waited} {secs:.1f} s (limit "
                       f"{limit:g} s): {weight}; heaviest: {heavy or '-'}; make large images "
                       "smaller or load them later", [ev])
    return Verdict("load_time", True, f"loads in {secs:.2f} s (limit {limit:g} s), {weight}",
                   [ev], at_risk=secs > limit * 0.8)


def accessibility(page: Mapping[str, Any] | None, fail_impact: str, max_violations: int,
                  unavailable: str = "") -> Verdict:
    """axe-core's WCAG 2.0 A/AA rules on the loaded homepage, reported by rule with the
    elements. Rules at `fail_impact` or worse count; more than `max_violations` elements
    fail the indicator. Lesser ones are listed and do not fail it."""
    if page is None or page.get("error"):
        why = unavailable or (page or {}).get("error") or "no browser run"
        return Verdict("accessibility", False, f"not checked: {why}")
    axe = page.get("axe") or {}
    if axe.get("error"):
        return Verdict("accessibility", False, f"axe-core failed on the page: {axe['error']}")
    floor = IMPACTS.index(fail_impact)
    rows = sorted(axe.get("violations", []), key=lambda v: (
        -IMPACTS.index(v.get("impact") or "minor"), v["id"]))
    counted = [v for v in rows if IMPACTS.index(v.get("impact") or "minor") >= floor]
    elements = sum(v["count"] for v in counted)
    tally = {"elements": elements, "limit": max_violations, "rules": len(rows),
             "fail_impact": fail_impact}
    listing = "; ".join(f"{v['id']} ({v.get('impact')}, {v['count']}): {v['help']}"
                        for v in rows[:5])
    if elements > max_violations:
        return Verdict("accessibility", False, f"{elements} element(s) break {len(counted)} "
                       f"rule(s) at {fail_impact} or worse (allowed {max_violations}): "
                       f"{listing}", rows, tally=tally)
    if rows:
        return Verdict("accessibility", True, f"{len(rows)} lesser rule(s) broken, below "
                       f"{fail_impact}: {listing}", rows, tally=tally)
    return Verdict("accessibility", True, "no WCAG 2.0 A/AA violations found by axe-core",
                   tally=tally)


def _day(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s)


# ------------------------------------------------------------------ HTML

class _Page(HTMLParser):
    ATTRS = {"a": "href", "img": "src", "link": "href", "script": "src", "iframe": "src",
             "source": "src", "embed": "src", "area": "href"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        want = self.ATTRS.get(tag)
        for k, v in attrs:
            if k == want and v:
                self.refs.append(v.strip())
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _visible_text(html: str, keep_space: bool = False) -> str:
    """The text a reader sees; with `keep_space`, pieces stay apart (dates next to numbers)."""
    p = _Page()
    p.feed(html)
    return " ".join(p.text) if keep_space else _norm("".join(p.text))


def page_links(html: str, base_url: str) -> list[str]:
    """Absolute http(s) URLs a page refers to (links, images, scripts, attachments)."""
    p = _Page()
    p.feed(html)
    out: list[str] = []
    for ref in p.refs:
        if ref.startswith(("mailto:", "tel:", "javascript:", "data:", "#")):
            continue
        url, _ = urldefrag(urljoin(base_url, ref))
        if urlsplit(url).scheme in ("http", "https") and url not in out:
            out.append(url)
    return out


def report_rows(results: Mapping[str, Mapping[str, Verdict]]) -> list[dict[str, Any]]:
    """One row per unit: pass/fail per indicator (for CSV and the report's summary)."""
    rows = []
    for tenant, verdicts in sorted(results.items()):
        row: dict[str, Any] = {"tenant": tenant}
        for name in INDICATORS:
            v = verdicts.get(name)
            row[name] = "-" if v is None else ("pass" if v.ok else "FAIL")
        row["passed"] = all(v.ok for v in verdicts.values())
        rows.append(row)
    return rows


def now() -> float:
    return datetime.now(timezone.utc).timestamp()
