"""HTTP probes of tenants on nodes: does node N answer tenant T with its site?"""
from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class ProbeResult:
    host: str
    node: str
    address: str
    status: int | None
    seconds: float
    error: str = ""
    body: str = ""

    @property
    def up(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


def probe(host: str, node: str, address: str, path: str = "/", timeout: float = 5.0,
          keep_body: bool = False) -> ProbeResult:
    start = time.monotonic()
    conn = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "govhost-probe"})
        resp = conn.getresponse()
        data = resp.read()
        return ProbeResult(host, node, address, resp.status, time.monotonic() - start,
                           body=data[:4096].decode(errors="replace") if keep_body else "")
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(host, node, address, None, time.monotonic() - start,
                           f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def probe_many(targets: Iterable[tuple[str, str, str]], workers: int = 32,
               timeout: float = 5.0) -> list[ProbeResult]:
    """Probe (host, node, address) triples concurrently; results in input order."""
    items = list(targets)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(lambda t: probe(*t, timeout=timeout), items))
