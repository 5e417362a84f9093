"""HTTP(S) probes of tenants on nodes: does node N answer tenant T with its site?

A site served over HTTPS is probed over HTTPS, with its name as SNI: its port 80 only
redirects, and a redirect says nothing about whether the page loads."""
from __future__ import annotations

import http.client
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Collection, Iterable, Mapping


class PlatformHttps(http.client.HTTPSConnection):
    """HTTPS to a node's address with the site's name as SNI (the name, not the address,
    picks the certificate). With `verify` (controlplane.tls.trust) the chain and the name
    are checked as a visitor's browser checks them; without it only whether pages answer."""

    _unverified = ssl.create_default_context()
    _unverified.check_hostname = False
    _unverified.verify_mode = ssl.CERT_NONE

    def __init__(self, address: str, sni: str, timeout: float,
                 verify: ssl.SSLContext | None = None):
        self._ctx = verify or self._unverified
        super().__init__(address, 443, timeout=timeout, context=self._ctx)
        self._sni = sni

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni)


def connection(address: str, host: str, timeout: float, https: bool,
               verify: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to a node for `host`'s site: 443 with the name as SNI, or port 80."""
    return (PlatformHttps(address, host, timeout, verify) if https
            else http.client.HTTPConnection(address, 80, timeout=timeout))


def failure(exc: Exception) -> str:
    """Why a request failed, for a person: a certificate's reason as OpenSSL gives it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate: {exc.verify_message or exc}"
    return f"{type(exc).__name__}: {exc}"


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
          keep_body: bool = False, scheme: str = "http",
          verify: ssl.SSLContext | None = None) -> ProbeResult:
    """One GET through one node; the whole body is read, so a page that stalls half-way
    counts its full time. Over HTTPS with `verify`, a certificate that does not verify is
    a failed probe with the reason."""
    start = time.monotonic()
    conn = connection(address, host, timeout, scheme == "https", verify)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "govhost-probe"})
        resp = conn.getresponse()
        data = resp.read()
        return ProbeResult(host, node, address, resp.status, time.monotonic() - start,
                           body=data[:4096].decode(errors="replace") if keep_body else "",
                           scheme=scheme)
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(host, node, address, None, time.monotonic() - start,
                           failure(exc), scheme=scheme)
    finally:
        conn.close()


def probe_many(targets: Iterable[tuple[str, str, str]], workers: int = 32,
               timeout: float = 5.0, https: Collection[str] = (),
               spread_seconds: float = 0.0,
               verify: Mapping[str, ssl.SSLContext] | None = None) -> list[ProbeResult]:
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
        return probe(*t, timeout=timeout, scheme="https" if t[0] in https else "http",
                     verify=(verify or {}).get(t[0]))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(one, enumerate(items)))
