"""Running the compliance checks: crawl each unit's site through the cluster's public entry,
gather the publish record, probe history and node facts, judge them (rules.py) and keep
the results in the state store for the report and the exporter.

Every request goes to a node's address with the site's Host header, so a check never leaves
the cluster for a unit on the platform; links to other sites are fetched only when
`compliance.check_external_links` is on.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import shlex
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from controlplane.compliance import browser, rules, yearly
from controlplane.compliance.rules import Verdict
from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.inventory import Inventory
from controlplane.core.manifest import Compliance, Node, Tenant
from controlplane.dns import plan as dns_plan
from controlplane.messages import inbox
from controlplane.messages.deadlines import today_in_county
from controlplane.sites import probes
from controlplane.tls import store as tls_store
from controlplane.tls import trust
from controlplane.wording import check as wording_check

Say = Callable[[str], None]
USER_AGENT = "govhost-compliance"
CRAWL_RATE_SHARE = 0.8     # of each site's own rate limit


class ComplianceError(GovhostError):
    pass


@dataclasses.dataclass(frozen=True)
class Route:
    """How the crawl reaches a URL: the platform's sites (`platform_hosts`) through `entry`, a
    node, their certificates verified with `verify` (site host -> context,
    controlplane.tls.trust); other sites directly, and only with `external`."""
    entry: Node | None
    platform_hosts: frozenset[str]
    timeout: float = 15
    external: bool = False
    verify: Mapping[str, ssl.SSLContext] | None = None


def fetch(url: str, route: Route, want_body: bool = False) -> tuple[int | None, str, str]:
    """(status, content type, body) of one URL, reached as `route` says."""
    entry, platform_hosts, timeout = route.entry, route.platform_hosts, route.timeout
    external, verify = route.external, route.verify
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    on_platform = host in platform_hosts
    if not on_platform and not external:
        return None, "", "skipped"
    if on_platform:
        if entry is None:
            return None, "", "no node answers"
        conn: http.client.HTTPConnection = probes.connection(
            entry.address, host, timeout, parts.scheme == "https", (verify or {}).get(host))
    elif parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": parts.netloc if not on_platform else host,
                                           "User-Agent": USER_AGENT})
        resp = conn.getresponse()
        ctype = resp.getheader("Content-Type", "")
        body = resp.read(2 * 1024 * 1024) if want_body and "html" in ctype else b""
        return resp.status, ctype, body.decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return None, "", probes.failure(exc)
    finally:
        conn.close()


class Pacer:
    """At most `rate` requests a second, shared by threads. A site's nginx answers 429 past
    its rate limit (per client and site); a crawl faster than that would report its own 429s
    as broken links."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            time.sleep(at - now)


def crawl(site: str, route: Route, max_pages: int, max_seconds: float, scheme: str = "http",
          rate: float | None = None) -> dict[str, Any]:
    """The homepage and, bounded, the site's pages: every link checked once, with the pages
    it is on. Only pages of this site are followed; a site on HTTPS is crawled over HTTPS
    (its port 80 only redirects). Requests to the site itself keep under `rate` a second."""
    start = time.monotonic()
    pacer = Pacer(rate) if rate else None

    def paced(url: str) -> None:
        if pacer is not None and urlsplit(url).hostname == site:
            pacer.wait()

    home = f"{scheme}://{site}/"
    queue, seen_pages = [home], set()
    on_pages: dict[str, list[str]] = {}
    homepage = ""
    truncated = False
    fetched: dict[str, tuple[int | None, str]] = {}   # pages already fetched: not again
    while queue:
        if len(seen_pages) >= max_pages or time.monotonic() - start > max_seconds:
            truncated = True
            break
        url = queue.pop(0)
        if url in seen_pages:
            continue
        seen_pages.add(url)
        paced(url)
        status, ctype, body = fetch(url, route, want_body=True)
        fetched[url] = (status, body if status is None else "")
        if url == home:
            homepage = body
            on_pages.setdefault(url, [])
            if status is None or not 200 <= status < 400:
                break
        if not body or status is None or not 200 <= status < 300:
            continue        # an error page's links are not the site's
        for link in rules.page_links(body, url):
            on_pages.setdefault(link, []).append(url)
            if urlsplit(link).hostname == site and link not in seen_pages and _is_page(link):
                queue.append(link)
    checked = {link: fetched[link] for link in on_pages if link in fetched and link != home}

    def check(link: str) -> tuple[str, int | None, str]:
        paced(link)
        status, _, err = fetch(link, route)
        return link, status, err

    targets = [link for link in on_pages if link != home and link not in fetched]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for link, status, err in pool.map(check, targets):
            checked[link] = (status, err)
    broken = []
    for link, (status, err) in sorted(checked.items()):
        if err == "skipped":
            continue
        if status is None or not 200 <= status < 400:
            broken.append({"link": link, "status": status, "error": err if status is None else "",
                           "pages": sorted(set(on_pages[link]))[:10]})
    made = len(fetched) + sum(1 for link in targets if checked[link][1] != "skipped")
    return {"homepage": homepage, "broken": broken, "pages": len(seen_pages),
            "through": route.entry.address if route.entry is not None else None,
            "checked": sum(1 for s, e in checked.values() if e != "skipped"), "requests": made,
            "truncated": truncated, "seconds": round(time.monotonic() - start, 3)}


def _is_page(url: str) -> bool:
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return "." not in last or last.lower().endswith((".html", ".htm", ".shtml", ".php"))


def _entries(nodes: list[Node]) -> list[Node]:
    """The web nodes' addresses that answer their health check, IPv4 and (where a node has
    one) IPv6: the crawl's ways in. Sites take turns over them, as visitors come over
    both; an IPv6 way in is the node with `address` set to its IPv6 address."""
    out = []
    for n in nodes:
        if probes.probe("govhost-probe", n.name, n.address, "/health", timeout=3).up:
            out.append(n)
        if n.address6 and probes.probe("govhost-probe", n.name, n.address6, "/health",
                                       timeout=3).up:
            out.append(n.model_copy(update={"address": n.address6}))
    return out


def browse(wanted: list[Tenant], entries: list[Node], platform: set[str], inv: Inventory,
           c: Compliance, say: Say) -> tuple[dict[str, dict[str, Any]], str]:
    """Each unit's homepage in headless Chromium through the healthy nodes: load time, page
    weight and axe-core's findings per unit, or why the browser could not run."""
    if not c.browser_checks:
        return {}, ""
    if not entries:
        return {}, "no node answers"
    https = inv.https_hosts()
    sites = [(t.name, f"{'https' if inv.site_host(t) in https else 'http'}://"
                      f"{inv.site_host(t)}/") for t in wanted]
    try:
        return browser.check_homepages(
            sites, [n.address for n in entries], sorted(platform),
            browser.Connection(c.browser_download_mbps, c.browser_latency_ms),
            c.browser_page_timeout_seconds, c.browser_workers, say), ""
    except browser.BrowserUnavailable as exc:
        return {}, str(exc)
    except Exception as exc:     # the browser itself failed: said per unit, the rest stands
        return {}, f"the browser failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def ipv6_probes(hosts: list[str], web: list[Node], https: set[str], timeout: float,
                verify: Mapping[str, ssl.SSLContext]) -> dict[str, list[dict[str, Any]]]:
    """Per site, one homepage probe through each web node's IPv6 address (a node without
    one is a failed row): ok when it loads within `timeout` with a verified certificate."""
    with_v6 = [n for n in web if n.address6]
    results = probes.probe_many([(h, n.name, n.address6) for h in hosts for n in with_v6],
                                timeout=timeout, https=https, verify=verify)
    out: dict[str, list[dict[str, Any]]] = {h: [] for h in hosts}
    for r in results:
        ok = r.up and r.seconds < timeout
        out[r.host].append({"node": r.node, "address6": r.address, "ok": ok,
                            "status": r.status, "seconds": round(r.seconds, 3),
                            "error": r.error or ("" if ok else f"answered {r.status}")})
    for h in hosts:
        out[h].extend({"node": n.name, "address6": None, "ok": False, "status": None,
                       "seconds": None, "error": "no IPv6 address"}
                      for n in web if not n.address6)
    return out


def _node_facts(inv, node: Node, known_hosts: Path) -> dict[str, Any]:
    """Per tenant: oldest access/error log present (rotated ones too), and the live files of
    the tenants this node holds."""
    script = (
        "import json, os, sys\n"
        f"sys.path.insert(0, {paths.NODE_LIB_CURRENT!r})\n"
        "try:\n"
        "    from govhost_node import digests\n"
        "    names = lambda d: sorted(digests.read(d))\n"
        "except ImportError:  # a node not yet given this release's package (next apply)\n"
        "    names = lambda d: [l.rstrip('\\n').split('  ', 1)[1]\n"
        "                       for l in open(os.path.join(d, '.digests')) if '  ' in l]\n"
        "out = {'logs': {}, 'files': {}}\n"
        "base = '/var/log/govhost/tenants'\n"
        "for t in (os.listdir(base) if os.path.isdir(base) else []):\n"
        "    ts = [os.stat(os.path.join(base, t, f)).st_mtime for f in os.listdir(os.path.join(base, t))]\n"
        "    ts = [min(ts)] if ts else []\n"
        "    out['logs'][t] = ts[0] if ts else None\n"
        "sites = '/srv/govhost/sites'\n"
        "for t in (os.listdir(sites) if os.path.isdir(sites) else []):\n"
        "    try:\n"
        "        out['files'][t] = names(os.path.join(sites, t, 'current'))\n"
        "    except (OSError, ValueError):\n"
        "        pass\n"
        "print(json.dumps(out))\n")
    cmd = f"python3 -c {shlex.quote(script)}"
    r = subprocess.run(remote.ssh_argv(inv.hosts, node, known_hosts, cmd), capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return {"logs": {}, "files": {}, "error": r.stderr.strip()[-200:]}
    return json.loads(r.stdout)


def rotation_days(release_files: Mapping[str, bytes]) -> int | None:
    text = release_files.get("logrotate.conf", b"").decode()
    days = None
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["maxage"]:
            days = int(parts[1])
    return days


def check(county: County, tenants: list[str] | None = None, at: float | None = None,
          say: Say = lambda _: None) -> dict[str, dict[str, Verdict]]:
    """Run every indicator for `tenants` (all when None) as of `at` (now); store the results."""
    from controlplane.sites.plan import make_plan
    inv = county.inv
    st = county.open_state()
    try:
        now = at or time.time()
        week = rules.week_of(now)
        w0, w1 = rules.week_bounds(week)
        wanted = [t for t in inv.tenants if not tenants or t.name in tenants]
        unknown = set(tenants or []) - {t.name for t in wanted}
        if unknown:
            raise ComplianceError(f"no unit named {', '.join(sorted(unknown))}")
        c = inv.cluster.compliance
        placement = st.placements()
        certs, served_with = tls_store.deployable(inv, county.certs, st)
        inv = dataclasses.replace(inv, certificates=certs, served_with=served_with)
        verify = trust.for_inventory(county, inv, st.certificates())
        plan = make_plan(inv, st.drained(), placement, st.applied())
        kh = county.known_hosts
        facts: dict[str, dict] = {}
        with ThreadPoolExecutor(max_workers=len(inv.hosts.nodes)) as pool:
            for n, f in zip(inv.hosts.nodes, pool.map(lambda n: _node_facts(inv, n, kh),
                                                      inv.hosts.nodes)):
                facts[n.name] = f
        # Sites take turns over the healthy nodes, so the crawl's load is spread like
        # visitors' (every node serves every site).
        entries = _entries(list(inv.hosts.web_nodes))
        platform = {inv.site_host(t) for t in inv.tenants} | {a for t in inv.tenants
                                                             for a in t.aliases}
        platform |= {f"{h}.{inv.cluster.domain}" for h in inv.cluster.portal.hostnames}
        # IPv6 as a visitor has it: each unit's homepage through every web node's IPv6
        # address, its certificate verified; and an AAAA record for each of its names.
        v6 = ipv6_probes([inv.site_host(t) for t in wanted], list(inv.hosts.web_nodes),
                         inv.https_hosts(), c.probe_timeout_seconds, verify)
        dns = dns_plan.aaaa_names(dns_plan.records(inv))    # once, not once a unit
        any_release = next(iter(plan.releases.values()))
        keep_days = rotation_days(any_release.files)
        results: dict[str, dict[str, Verdict]] = {}

        def crawl_unit(i_t) -> dict[str, Any]:
            i, t = i_t
            say(f"{t.name}: crawling")
            cert = certs.get(served_with.get(t.name, ""))
            entry = entries[i % len(entries)] if entries else None
            route = Route(entry, frozenset(platform), c.probe_timeout_seconds,
                          c.check_external_links, verify)
            return crawl(inv.site_host(t), route, c.crawl_max_pages, c.crawl_max_seconds,
                         scheme="https" if cert is not None else "http",
                         rate=CRAWL_RATE_SHARE * inv.rate_limit(t).requests_per_second)

        # The live county against the word lists (only files not yet read under them).
        worded = wording_check.check_live(county)["units"] if inv.wording else {}
        # Rate limits are per site, so sites are crawled side by side, each at its own pace.
        with ThreadPoolExecutor(max_workers=max(1, min(c.crawl_sites_at_once,
                                                    len(wanted)))) as pool:
            crawls = dict(zip([t.name for t in wanted], pool.map(crawl_unit, enumerate(wanted))))
        # The yearly report's visits, counted while the nodes still hold the logs.
        try:
            yearly.collect(county, say)
        except yearly.YearlyError as exc:
            say(f"visits not counted: {exc}")
        # Citizens' messages as the nodes hold them now (the index is kept if none answers).
        try:
            inbox.refresh(county)
        except GovhostError as exc:
            say(f"messages not read from the nodes: {exc}")
        boxes: dict[str, list[tuple[str, str]]] = {}
        for e in inbox.known(county, today_in_county(now)):
            boxes.setdefault(e.unit, []).append((e.number, e.standing))
        # Chromium's resolver rules take the nodes' IPv4 addresses.
        pages, unavailable = browse(wanted, [e for e in entries if ":" not in e.address],
                                    platform, inv, c, say)
        for t in wanted:
            say(f"{t.name}: checking")
            v: dict[str, Verdict] = {}
            probes_n, failures, times = st.probe_week(t.name, w0, min(w1, now + 1))
            v["reachable"] = rules.reachability(
                probes_n, failures, times, c.unreachable_week_ratio,
                st.probe_days(t.name, w0, min(w1, now + 1)), c.probes_per_day_min,
                time.strftime("%Y-%m-%d", time.localtime(now)))
            releases = st.content_releases(t.name)
            cr = crawls[t.name]
            v["homepage_fresh"] = rules.homepage_freshness(
                releases, now, c.homepage_stale_days, cr["homepage"] or None)
            first = (placement.get(t.name) or ("",))[0]
            live = facts.get(first, {}).get("files", {}).get(t.name, [])
            v["columns_fresh"] = rules.column_freshness(t.columns, releases, live, now, c)
            node_error = facts.get(first, {}).get("error")
            if node_error and t.columns:
                v["columns_fresh"] = Verdict("columns_fresh", False, f"cannot read the live "
                                             f"files on {first}: {node_error}")
            cert = certs.get(served_with.get(t.name, ""))
            https = cert is not None
            v["links"] = rules.links(cr["broken"], cr["checked"], cr["pages"], cr["truncated"],
                                     cr.get("through"))
            v["footer"] = rules.footer(cr["homepage"], t)
            # Valid: served with a certificate for all its names that has not expired (the
            # chain was checked when it was issued or imported).
            v["https_ipv6"] = rules.https_ipv6(
                https and cert.not_after > now, v6[inv.site_host(t)],
                aaaa=dns_plan.has_aaaa(dns, [inv.site_host(t), *t.aliases]))
            oldest = [f["logs"].get(t.name) for f in facts.values() if f["logs"].get(t.name)]
            v["logs"] = rules.logs(min(oldest) if oldest else None, keep_days,
                                   c.log_retention_days, now)
            v["wording"] = rules.wording(worded.get(t.name), bool(inv.wording))
            if c.browser_checks:
                page = pages.get(t.name)
                v["load_time"] = rules.load_time(page, c.load_time_limit_seconds, unavailable)
                v["accessibility"] = rules.accessibility(
                    page, c.accessibility_fail_impact, c.accessibility_max_violations,
                    unavailable)
            if t.messages is not None or t.name in boxes:
                v["messages"] = rules.messages(boxes.get(t.name, []))
            results[t.name] = v
        st.record_compliance(week, now, {t: {k: x.to_json() for k, x in v.items()}
                                         for t, v in results.items()})
        return results
    finally:
        st.close()


def record_round(county: County, at: float, rounds: Mapping[str, list[dict]]) -> None:
    """One probe round per tenant: failed if any node did not load the homepage in time."""
    st = county.open_state()
    try:
        st.record_probe_round(at, rounds)
    finally:
        st.close()
