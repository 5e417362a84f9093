"""Homepages as a visitor's browser has them: headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) loads each homepage through a node with all its
images, scripts and stylesheets, under a visitor's connection, and records the time to the
load event, the page weight and the heaviest assets; then axe-core (from npm, installed by
scripts/setup.sh) checks the loaded page for accessibility.

The browser reaches only the cluster: every platform name is mapped to the node's address
and every other name fails to resolve (`--host-resolver-rules`), so a page's outside links,
fonts or counters are not fetched (they show as failed assets). Certificates are not judged
here: the probes and the crawl verify them (controlplane.tls.trust).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE_JS = Path("/usr/local/share/govhost/axe/node_modules/axe-core/axe.min.js")
# GB/T 37668-2019 follows WCAG 2.0 at levels A and AA.
AXE_TAGS = ("wcag2a", "wcag2aa")
HEAVIEST = 5

_PAGE_JS = """
const nav = performance.getEntriesByType('navigation')[0] || {};
const res = performance.getEntriesByType('resource').map(r => ({
    url: r.name, type: r.initiatorType, bytes: r.transferSize || r.encodedBodySize || 0,
    ms: Math.round(r.duration)}));
return {load_ms: Math.round(nav.loadEventEnd || 0), dom_ms: Math.round(
    nav.domContentLoadedEventEnd || 0), html_bytes: nav.transferSize || nav.encodedBodySize
    || 0, status: nav.responseStatus || null, resources: res};
"""

_AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: 'tag', values: arguments[0]},
                   resultTypes: ['violations']})
  .then(r => done({violations: r.violations.map(v => ({
      id: v.id, impact: v.impact, help: v.help, help_url: v.helpUrl, count: v.nodes.length,
      nodes: v.nodes.slice(0, 10).map(n => ({target: n.target.join(' '),
                                             html: n.html.slice(0, 300)}))}))}))
  .catch(e => done({error: String(e)}));
"""


class BrowserUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Connection:
    """A visitor's connection, emulated by Chromium (0 Mbit/s: as fast as the cluster)."""
    download_mbps: float = 10
    latency_ms: int = 40


def missing() -> str:
    """Why the browser checks cannot run here ('' when they can)."""
    if not any(Path(c).exists() for c in CHROMIUM):
        return "chromium is not installed (scripts/setup.sh installs it)"
    if not Path(CHROMEDRIVER).exists():
        return "chromedriver is not installed (Debian's chromium-driver; scripts/setup.sh)"
    if not AXE_JS.exists():
        return f"axe-core is not installed at {AXE_JS} (scripts/setup.sh installs it from npm)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is missing (scripts/setup.sh installs it)"
    return ""


def driver(address: str, hosts: Sequence[str], conn: Connection, page_timeout: int,
           elsewhere: Mapping[str, str] | None = None):
    """Headless Chromium driven by Selenium, reaching only `address` for `hosts` (and the
    address `elsewhere` gives for each of its names)."""
    # Selenium Manager (which would download drivers and send usage statistics) is never
    # asked: the driver's path is given, and it is told to stay offline.
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = next(c for c in CHROMIUM if Path(c).exists())
    rules = ([f"MAP {h} {address}" for h in hosts]
             + [f"MAP {h} {a}" for h, a in (elsewhere or {}).items()] + ["MAP * ~NOTFOUND"])
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--disable-extensions",
                "--disable-features=OptimizationHints,MediaRouter,Translate",
                "--dns-prefetch-disable", "--mute-audio", "--window-size=1366,900",
                "--lang=zh-CN", "--ignore-certificate-errors",
                f"--host-resolver-rules={', '.join(rules)}"):
        opts.add_argument(arg)
    opts.set_capability("acceptInsecureCerts", True)
    chrome = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    chrome.set_page_load_timeout(page_timeout)
    chrome.set_script_timeout(120)
    chrome.execute_cdp_cmd("Network.enable", {})
    chrome.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    if conn.download_mbps > 0:
        rate = conn.download_mbps * 1_000_000 / 8
        chrome.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": conn.latency_ms, "downloadThroughput": rate,
            "uploadThroughput": rate})
    return chrome


def check_page(chrome, url: str, axe_js: str, page_timeout: int) -> dict[str, Any]:
    """Load `url` in a fresh page (no cache) and measure it; then run axe-core on it."""
    from selenium.common.exceptions import TimeoutException, WebDriverException

    out: dict[str, Any] = {"url": url, "error": "", "timed_out": False}
    chrome.get("about:blank")
    start = time.monotonic()
    try:
        chrome.get(url)
    except TimeoutException:
        out["timed_out"] = True
        chrome.execute_script("window.stop();")
    except WebDriverException as exc:
        out["error"] = exc.msg or str(exc).splitlines()[0]
        return out
    wall = time.monotonic() - start
    page = chrome.execute_script(_PAGE_JS)
    resources = page.pop("resources")
    out.update(page)
    out["load_seconds"] = (round(page_timeout, 3) if out["timed_out"] or not page["load_ms"]
                           else round(page["load_ms"] / 1000, 3))
    out["wall_seconds"] = round(wall, 3)
    out["requests"] = 1 + len(resources)
    out["bytes"] = page["html_bytes"] + sum(r["bytes"] for r in resources)
    out["heaviest"] = sorted(resources, key=lambda r: -r["bytes"])[:HEAVIEST]
    try:
        chrome.execute_script(axe_js)
        out["axe"] = chrome.execute_async_script(_AXE_RUN, list(AXE_TAGS))
    except WebDriverException as exc:
        out["axe"] = {"error": exc.msg or str(exc).splitlines()[0]}
    return out


def check_homepages(sites: Sequence[tuple[str, str]], entries: Sequence[str],
                    hosts: Sequence[str], conn: Connection, page_timeout: int = 30,
                    workers: int = 2, say: Callable[[str], None] = lambda _: None
                    ) -> dict[str, dict[str, Any]]:
    """(name, url) per site -> what check_page measured. Each worker is one Chromium with
    all platform `hosts` mapped to one of the `entries` (node addresses), so the load is
    spread over the nodes as the crawl's is."""
    why = missing()
    if why:
        raise BrowserUnavailable(why)
    if not sites:
        return {}
    axe_js = AXE_JS.read_text()
    workers = max(1, min(workers, len(sites)))
    shares = [list(sites[k::workers]) for k in range(workers)]

    def run(k: int) -> dict[str, dict[str, Any]]:
        address = entries[k % len(entries)]
        got: dict[str, dict[str, Any]] = {}
        chrome = driver(address, hosts, conn, page_timeout)
        try:
            for name, url in shares[k]:
                say(f"{name}: loading in Chromium through {address}")
                got[name] = {**check_page(chrome, url, axe_js, page_timeout),
                             "through": address}
        finally:
            chrome.quit()
        return got

    out: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for got in pool.map(run, range(workers)):
            out.update(got)
    return out

