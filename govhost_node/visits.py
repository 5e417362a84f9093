"""govhost-visits: page views and visitors per unit and day, from this node's access logs
(the live one and the rotated ones, compressed or not), for the yearly report, with the
pages most read each day (for the unit's page in the console).

Counted as the yearly government website report counts them: a page view is a GET of a
page (not an image, a stylesheet or a script) answered 200 or 304, by a visitor: not one of
govhost's own probes, crawls or browser checks, and not a search engine's robot. Each
request is counted on the node it entered the cluster on (a request another node passed on
carries the hop header and is left out there). Visitors are distinct addresses per day;
only a short hash of each leaves the node, so the control machine can merge the nodes'
days without learning who visited.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
from datetime import date, datetime
from typing import IO, Iterator

from govhost_node.layout import NODE

LOGS = f"{NODE.logs}/tenants"
LINE = re.compile(rb'^(\S+) \S+ \S+ \[(\d{2})/(\w{3})/(\d{4}):[^\]]*\] "(\S+) (\S+)[^"]*" '
                  rb'(\d{3}) \S+ "[^"]*" "([^"]*)" \S+ \S+ (\S+)$')
MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
ROBOTS = re.compile(rb"govhost-|HeadlessChrome|bot\b|bot/|spider|crawl", re.IGNORECASE)
PAGE_SUFFIXES = (b".html", b".htm", b".shtml", b".php")
TOP_PAGES = 50          # pages kept per unit and day (the most read): bounded output
PATH_MAX = 200


def is_page(path: bytes) -> bool:
    last = path.split(b"?", 1)[0].rsplit(b"/", 1)[-1]
    return b"." not in last or last.lower().endswith(PAGE_SUFFIXES)


def visitor_hash(address: bytes) -> str:
    return hashlib.sha256(address).hexdigest()[:12]


def count(lines: Iterator[bytes], since: str, days: dict[str, dict]) -> None:
    """Add the page views of `lines` on or after `since` to `days` (day -> views, ips)."""
    for line in lines:
        m = LINE.match(line.rstrip(b"\n"))
        if not m:
            continue
        ip, dd, mon, yyyy, method, path, status, agent, hop = m.groups()
        if hop != b"-" or method != b"GET" or status not in (b"200", b"304"):
            continue
        if not is_page(path) or ROBOTS.search(agent):
            continue
        try:
            day = date(int(yyyy), MONTHS[mon], int(dd)).isoformat()
        except (KeyError, ValueError):
            continue
        if day < since:
            continue
        d = days.setdefault(day, {"views": 0, "ips": set(), "pages": {}})
        d["views"] += 1
        d["ips"].add(visitor_hash(ip))
        page = page_path(path)
        d["pages"][page] = d["pages"].get(page, 0) + 1


def page_path(path: bytes) -> str:
    """A page as the unit knows it: without its query, `/` for the homepage, at most
    PATH_MAX characters (a visitor chooses what it asks for)."""
    p = path.split(b"?", 1)[0][:PATH_MAX].decode("utf-8", errors="replace")
    return p if p.startswith("/") else "/"


def top(pages: dict[str, int], n: int = TOP_PAGES) -> dict[str, int]:
    return dict(sorted(pages.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _open(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def unit_days(directory: str, since: str) -> dict[str, dict]:
    """One unit's days from its access logs modified on or after `since`."""
    cutoff = datetime.fromisoformat(since).timestamp()
    days: dict[str, dict] = {}
    for name in sorted(os.listdir(directory)):
        if not name.startswith("access.log"):
            continue
        path = os.path.join(directory, name)
        try:
            if os.stat(path).st_mtime < cutoff:
                continue                 # rotated before the first day asked for
            with _open(path) as f:
                count(iter(f), since, days)
        except (OSError, EOFError):
            continue                     # being rotated, or a broken archive: the rest counts
    return days


def main() -> None:
    ap = argparse.ArgumentParser(prog="govhost-visits")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("count", help="page views and visitor hashes per unit and day (JSON)")
    c.add_argument("--since", required=True, help="first day, YYYY-MM-DD")
    args = ap.parse_args()
    try:
        date.fromisoformat(args.since)
    except ValueError:
        sys.exit(f"govhost-visits: --since {args.since!r} is not a day (YYYY-MM-DD)")
    out = {}
    units = sorted(os.listdir(LOGS)) if os.path.isdir(LOGS) else []
    for unit in units:
        days = unit_days(os.path.join(LOGS, unit), args.since)
        out[unit] = {d: {"views": v["views"], "ips": sorted(v["ips"]),
                         "pages": top(v["pages"])} for d, v in sorted(days.items())}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
