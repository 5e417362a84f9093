"""HTTP(S) probes of tenants on nodes: does node N answer tenant T with its site?

A site served over HTTPS is probed over HTTPS, with its name as SNI: its port 80 only
redirects, and a redirect says nothing about whether the page loads."""
from __future__ import annotations

import http.client
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Collection, Iterable


class PlatformHttps(http.client.HTTPSConnection):
    """HTTPS to a node's address with the site's name as SNI (the name, not the address,
    picks the certificate). Probes and the crawl ask whether pages answer; whether the
    certificate is valid is the https_ipv6 indicator's question, judged from the
    certificate store, so the chain is not verified here."""

    _context = ssl.create_default_context()
    _context.check_hostname = False
    _context.verify_mode = ssl.CERT_NONE

    def __init__(self, address: str, sni: str, timeout: float):
        super().__init__(address, 443, timeout=timeout, context=self._context)
        self._sni = sni

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)


@dataclass(frozen=True)
class ProbeResult:
    host: str
    node: str
    address: str
    status: int | None
    seconds: float
    error: str = ""
    body: str = ""
    scheme: str = "http"

    @property
    def up(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


def probe(host: str, node: str, address: str, path: str = "/", timeout: float = 5.0,
          keep_body: bool = False, scheme: str = "http") -> ProbeResult:
    """One GET through one node; the whole body is read, so a page that stalls half-way
    counts its full time."""
    start = time.monotonic()
    conn: http.client.HTTPConnection = (
        PlatformHttps(address, host, timeout) if scheme == "https"
        else http.client.HTTPConnection(address, 80, timeout=timeout))
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "govhost-probe"})
        resp = conn.getresponse()
        data = resp.read()
        return ProbeResult(host, node, address, resp.status, time.monotonic() - start,
                           body=data[:4096].decode(errors="replace") if keep_body else "",
                           scheme=scheme)
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(host, node, address, None, time.monotonic() - start,
                           f"{type(exc).__name__}: {exc}", scheme=scheme)
    finally:
        conn.close()


def probe_many(targets: Iterable[tuple[str, str, str]], workers: int = 32,
               timeout: float = 5.0, https: Collection[str] = (),
               spread_seconds: float = 0.0) -> list[ProbeResult]:
    """Probe (host, node, address) triples concurrently, hosts in `https` over HTTPS;
    results in input order. With `spread_seconds` the probes start evenly over that time
    instead of all at once, as an inspection's probes come (and the nodes see no burst)."""
    items = list(targets)
    if not items:
        return []
    start = time.monotonic()
    step = spread_seconds / len(items)

    def one(i_t: tuple[int, tuple[str, str, str]]) -> ProbeResult:
        i, t = i_t
        wait = start + i * step - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return probe(*t, timeout=timeout, scheme="https" if t[0] in https else "http")

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(one, enumerate(items)))
