"""The launch gate (47号: a site that has not passed a security check may not go online).

A unit with `launch: pending` is served only to the county's addresses. `govhost launch
UNIT` looks at its site as the public would get it, through the nodes, from the control
machine (which the gate lets in): HTTPS with a certificate that verifies on every node, the
security headers, nothing exposed, the footer marks, real content instead of the
placeholder, and the county's word lists. When every check passes, the launch is recorded
(and audited) and an apply opens the site; when one fails, each failure says what to do.

`judge` is pure: it gets what was measured and returns the checks.
"""
from __future__ import annotations

import datetime
import http.client
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

from controlplane.compliance import rules
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.manifest import Tenant
from controlplane.sites import probes, waf
from controlplane.sites.content_sync import Link, SyncError

Say = Callable[[str], None]
PLACEHOLDER_MARK = "本站正在建设中"
# What an attacker asks every new site for.
EXPOSED_PATHS = ("/.git/HEAD", "/.git/config", "/.svn/entries", "/.env", "/.DS_Store",
                 "/.htpasswd", "/backup.zip", "/backup.tar.gz", "/backup.sql", "/www.zip",
                 "/wwwroot.zip", "/web.zip", "/site.zip", "/db.sql", "/database.sql",
                 "/dump.sql", "/phpinfo.php", "/info.php", "/test.php")
# Live files no public site should hold: version control and editor leftovers, environment
# and password files, database dumps, backups and archives of the site, PHP info pages.
_RISKY_FILE = re.compile(
    r"(^|/)\.(?!well-known/)[^/]+"                                  # hidden files and dirs
    r"|\.(sql|bak|old|orig|swp|save|tmp|log)$|~$"
    r"|(^|/)(backup|bak|www|wwwroot|web|site|db|database|dump)[^/]*"
    r"\.(zip|rar|7z|tar|tgz|gz|bz2|xz)$"
    r"|(^|/)(phpinfo|info|test|probe)\.php$", re.IGNORECASE)
HEADERS = {"strict-transport-security": "HSTS (Strict-Transport-Security)",
           "x-content-type-options": "X-Content-Type-Options: nosniff",
           "x-frame-options": "X-Frame-Options", "referrer-policy": "Referrer-Policy"}
LISTING_MARKS = ("<title>Index of /", "<h1>Index of /", "Directory listing for /")
PHPINFO_MARK = "phpinfo()"       # in the <title> of every PHP information page
DIRS_TRIED = 30


class LaunchError(GovhostError):
    pass


@dataclass(frozen=True)
class Check:
    check: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Seen:
    """What was measured of one unit's site, for `judge`."""
    served_with_cert: bool
    https: list[dict[str, Any]]                 # per web node: node, ok, error
    headers: Mapping[str, str]                  # of the homepage over HTTPS (lower-case)
    homepage: str
    exposed: list[dict[str, Any]]               # path, status, why
    live_files: Sequence[str]
    listings: list[str]                         # directories answered with a file listing
    wording: Mapping[str, Any] | None
    wording_lists: bool
    hsts_wanted: bool = True
    waf_after: str = "block"                    # the unit's WAF mode once launched


def _waf_check(t: Tenant, after: str) -> Check:
    """A site blocks attacks from its first public day; detecting only is an exception
    the manifest states with a reason and an end date, and `off` does not launch."""
    excluded = len(t.waf.exclude_rules)
    if after == "block":
        return Check("waf", True, "the WAF blocks from the launch on"
                     + (f" ({excluded} rule(s) excluded)" if excluded else ""))
    if after == "detect":
        return Check("waf", True, f"the WAF detects only until {t.waf.until}: {t.waf.reason} "
                     "(a warning in status, security check and the compliance report)")
    return Check("waf", False, "the WAF is off (`waf: off`): the public would reach the site "
                 "unprotected", "remove `waf: off`; exclude the rules its forms trip instead "
                 "(`govhost waf replay` lists them), or, with a reason and an end date, "
                 "`waf: {mode: detect, reason: ..., until: YYYY-MM-DD}`")


def judge(t: Tenant, seen: Seen) -> list[Check]:
    out: list[Check] = []
    bad = [p for p in seen.https if not p["ok"]]
    if not seen.served_with_cert:
        out.append(Check("https", False, "no certificate is served for the unit's names",
                         "set `tls:` in the manifest or the county's issuer, then `govhost "
                         "cert renew` and `govhost apply`"))
    elif not seen.https or bad:
        out.append(Check("https", False, "HTTPS does not verify on " + "; ".join(
            f"{p['node']}: {p['error']}" for p in bad) if bad else "no web node answers",
            "renew or re-import the certificate (`govhost cert status`), then apply"))
    else:
        out.append(Check("https", True, f"verified on {len(seen.https)} node(s)"))
    wanted = {k: v for k, v in HEADERS.items()
              if k != "strict-transport-security" or seen.hsts_wanted}
    missing = [v for k, v in wanted.items() if not seen.headers.get(k)]
    if seen.headers.get("x-content-type-options", "nosniff").lower() != "nosniff":
        missing.append("X-Content-Type-Options must be nosniff")
    out.append(Check("headers", not missing, "missing: " + ", ".join(missing) if missing
                     else "HSTS, nosniff, frame and referrer policies sent",
                     "the platform sends them: a unit's application must not remove them"
                     if missing else ""))
    risky = sorted(p for p in seen.live_files if _RISKY_FILE.search(p))
    exposed = [f"{e['path']} ({e['why']})" for e in seen.exposed]
    listed = [f"{d} (directory listing)" for d in seen.listings]
    probed = {e["path"] for e in seen.exposed}
    found = exposed + listed + [f"{p} (in the published files)" for p in risky
                                if f"/{p}" not in probed]
    out.append(Check("exposed", not found, "exposed: " + "; ".join(found[:20])
                     + (f" and {len(found) - 20} more" if len(found) > 20 else "")
                     if found else f"none of {len(EXPOSED_PATHS)} usual paths, no listing, "
                     f"no risky file among {len(seen.live_files)}",
                     "delete them from the upload area and publish again (backups and "
                     "version control stay off the web server)" if found else ""))
    foot = rules.footer(seen.homepage, t)
    out.append(Check("footer", foot.ok, foot.summary,
                     "" if foot.ok else "show the organiser, contact, site code, ICP and PSB "
                     "numbers in the homepage's footer (and `identity:` in the manifest)"))
    placeholder = PLACEHOLDER_MARK in seen.homepage or not seen.homepage.strip()
    out.append(Check("content", not placeholder,
                     "the homepage is still the platform's placeholder" if placeholder
                     else "the unit's own homepage is published",
                     "upload the site and `govhost publish` it" if placeholder else ""))
    w = rules.wording(seen.wording, seen.wording_lists)
    out.append(Check("wording", w.ok, w.summary, "" if w.ok else
                     "correct the words shown by `govhost wording check`, publish again"))
    out.append(_waf_check(t, seen.waf_after))
    return out


def _get(address: str, host: str, path: str, timeout: float, https: bool,
         ) -> tuple[int | None, Mapping[str, str], str, str]:
    conn = probes.connection(address, host, timeout, https)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "govhost-launch"})
        r = conn.getresponse()
        body = r.read(512 * 1024).decode(errors="replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body, ""
    except (OSError, http.client.HTTPException) as exc:
        return None, {}, "", probes.failure(exc)
    finally:
        conn.close()


def _exposed(address: str, host: str, https: bool, timeout: float) -> list[dict[str, Any]]:
    """Usual leak paths that answer 200 with something other than what the site answers
    for any unknown path (a catch-all application answers everything)."""
    _, _, baseline, _ = _get(address, host, f"/govhost-launch-{secrets.token_hex(6)}",
                             timeout, https)
    out = []
    for path in EXPOSED_PATHS:
        status, headers, body, _ = _get(address, host, path, timeout, https)
        if status != 200 or (baseline and body == baseline):
            continue
        why = ("a PHP information page" if PHPINFO_MARK in body
               else f"answers 200, {headers.get('content-type', 'no type')}")
        out.append({"path": path, "status": status, "why": why})
    return out


def _listings(address: str, host: str, https: bool, timeout: float,
              files: Sequence[str]) -> list[str]:
    dirs = sorted({"/" + p.rsplit("/", 1)[0] + "/" for p in files if "/" in p})[:DIRS_TRIED]
    out = []
    for d in dirs:
        status, _, body, _ = _get(address, host, d, timeout, https)
        if status == 200 and any(m in body for m in LISTING_MARKS):
            out.append(d)
    return out


def look(county: County, unit: str, say: Say = lambda _: None) -> tuple[Tenant, list[Check]]:
    """Measure the unit's site through the nodes and judge it."""
    from controlplane.sites.apply import deployable
    from controlplane.tls import trust
    from controlplane.wording import check as wording_check

    inv = county.inv
    t = inv.tenant(unit)
    if t is None:
        raise LaunchError(f"no unit named {unit!r} in {inv.root / 'tenants'}")
    with county.state() as st:
        dinv = deployable(county, st)
        placed = st.placements().get(unit) or ()
        verify = trust.for_inventory(county, dinv, st.certificates())
    host = inv.site_host(t)
    timeout = inv.cluster.compliance.probe_timeout_seconds
    has_cert = unit in dinv.served_with
    web = list(inv.hosts.web_nodes)
    say(f"{unit}: HTTPS through {len(web)} node(s)")
    https = [{"node": r.node, "ok": r.up, "error": r.error or ("" if r.up else
                                                               f"answered {r.status}")}
             for r in probes.probe_many([(host, n.name, n.address) for n in web],
                                        timeout=timeout, https={host} if has_cert else set(),
                                        verify=verify)] if has_cert else []
    entry = next((n.address for n in web for p in https if p["node"] == n.name and p["ok"]),
                 web[0].address if web else None)
    if entry is None:
        raise LaunchError("the county has no web node")
    status, headers, homepage, err = _get(entry, host, "/", timeout, has_cert)
    if status is None:
        raise LaunchError(f"{host} did not answer through {entry}: {err}")
    files: list[str] = []
    if placed and t.site.type != "proxy":
        nodes = {n.name: n for n in inv.hosts.nodes}
        try:
            _, digests = Link(inv.hosts, county.known_hosts, nodes).digests(placed[0], unit)
            files = sorted(digests)
        except SyncError as exc:
            raise LaunchError(f"cannot read {unit}'s live files on {placed[0]}: {exc}") from None
    say(f"{unit}: looking for exposed files")
    exposed = _exposed(entry, host, has_cert, timeout)
    listings = _listings(entry, host, has_cert, timeout, files)
    worded = (wording_check.check_live(county, only=unit)["units"].get(unit)
              if inv.wording else None)
    seen = Seen(has_cert, https, headers, homepage, exposed, files, listings, worded,
                bool(inv.wording), inv.cluster.tls.hsts_max_age > 0,
                waf.after_launch(t, datetime.date.today()))
    return t, judge(t, seen)


def launch(county: County, unit: str, dry_run: bool = False, say: Say = lambda _: None,
           apply: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Check the unit and, when it passes (and not `dry_run`), record the launch and run
    `apply` to open the site. A unit without `launch: pending`, or launched before, is
    already live."""
    inv = county.inv
    t = inv.tenant(unit)
    if t is None:
        raise LaunchError(f"no unit named {unit!r} in {inv.root / 'tenants'}")
    with county.state() as st:
        before = st.launched().get(unit)
    if t.launch == "live" or before is not None:
        return {"unit": unit, "passed": True, "launched": False, "already": True,
                "launched_at": before, "checks": []}
    t, checks = look(county, unit, say)
    passed = all(c.ok for c in checks)
    rows = [asdict(c) for c in checks]
    out: dict[str, Any] = {"unit": unit, "passed": passed, "launched": False,
                           "already": False, "checks": rows}
    if dry_run:
        return out
    with county.state() as st:
        st.record_launch(unit, passed, rows)
    if passed and apply is not None:
        say(f"{unit}: passed; applying to open the site")
        out["apply"] = apply()
        out["launched"] = True
    return out
