"""`govhost waf replay UNIT ACCESS_LOG`: the old server's real requests through the unit's
WAF rules, offline, before the site's first public day.

The rules run where they run on the nodes: ModSecurity in nginx with Debian's CRS and the
settings govhost renders (`sites.waf`), with the unit's own exclusions, in detection only.
That nginx is a private one on the control machine, listening on a Unix socket in a
root-owned directory, started for the replay and stopped after it; nothing reaches the
cluster or any port. Each request carries a numbered header so its audit entry is found
again; a known attack goes first and must be judged, or nothing is reported. Images,
styles and scripts of static and PHP sites are left out, as the nodes serve them without
the WAF. `waf_log.judge` turns the entries into rules and requests.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.security import waf_log
from controlplane.sites import waf

MARK = "X-Govhost-Replay"
NGINX = "/usr/sbin/nginx"
WORKERS = 8
MAX_REQUESTS = 200_000
MAX_SKIPPED = 10_000
# Sent first: a request every CRS judges an attack. No audit entry for it means the replay's
# WAF judged nothing, and "none refused" would be a lie.
CANARY = waf_log.Request(0, "GET", b"/?file=../../../../etc/passwd&id=1%27%20OR%20%271%27%3D%271",
                         b"", b"govhost-replay-canary")


class ReplayError(GovhostError):
    pass


def _conf(work: Path) -> str:
    # Root's directory throughout (0711): the worker (nobody) only reads www/ and writes
    # through descriptors the master opened, so nothing it does changes what root reads.
    return f"""load_module {waf.MODULE};
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
{"user nobody nogroup;" if os.geteuid() == 0 else ""}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    modsecurity on;
    modsecurity_rules_file {work}/main.conf;
    server {{
        listen unix:{work}/replay.sock;
        server_name _;
        root {work}/www;
        include {work}/unit.conf;
        location / {{ try_files /ok.html /ok.html; }}
    }}
}}
"""


def _wait_socket(sock: Path, proc: subprocess.Popen, work: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ReplayError("the replay's nginx did not start: "
                              + (work / "error.log").read_text(errors="replace")[-2000:])
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return
        except OSError:
            time.sleep(0.05)
    raise ReplayError("the replay's nginx did not answer within 10 s")


def _send(sock: Path, host: str, r: waf_log.Request) -> None:
    head = (r.method.encode() + b" " + r.target + b" HTTP/1.1\r\nHost: " + host.encode()
            + b"\r\n" + (b"User-Agent: " + r.agent + b"\r\n" if r.agent else b"")
            + (b"Referer: " + r.referer + b"\r\n" if r.referer else b"")
            + b"Accept: */*\r\n" + f"{MARK}: {r.line}\r\n".encode()
            + (b"Content-Length: 0\r\n" if r.method in ("POST", "PUT", "PATCH") else b"")
            + b"Connection: close\r\n\r\n")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            s.sendall(head)
            while s.recv(65536):
                pass
    except OSError as exc:
        raise ReplayError(f"line {r.line}: the replay's nginx stopped answering "
                          f"({exc.strerror or exc})") from None


def _audit(path: Path) -> dict[int, list[waf_log.Match]]:
    """Each replayed line's matches, from the audit log: JSON lines, split on the newline
    byte only (a U+2028 in a logged header is not a line break), read a line at a time."""
    seen: dict[int, list[waf_log.Match]] = {}
    if not path.exists():
        return seen
    with path.open("rb") as f:
        for raw in f:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            request = (entry.get("transaction") or {}).get("request") or {}
            headers = request.get("headers") if isinstance(request, dict) else None
            if not isinstance(headers, dict):
                continue
            mark = next((v for k, v in headers.items() if k.lower() == MARK.lower()), None)
            if mark is None or not str(mark).isdigit():
                continue
            seen.setdefault(int(mark), []).extend(waf_log.matches(entry))
    return seen


def _read(log: Path, site_type: str) -> tuple[list[waf_log.Request], list[waf_log.Skipped],
                                              int, int]:
    """The log's requests (refused past MAX_REQUESTS without reading on), the first
    skipped lines and how many were skipped, and the assets the nodes serve without the WAF."""
    requests: list[waf_log.Request] = []
    skipped: list[waf_log.Skipped] = []
    n_skipped = assets = 0
    try:
        with log.open(encoding="utf-8", errors="surrogateescape") as f:
            for got in waf_log.parse(f):
                if isinstance(got, waf_log.Skipped):
                    n_skipped += 1
                    if len(skipped) < MAX_SKIPPED:
                        skipped.append(got)
                    continue
                if waf.skips_waf(site_type, got.target.split(b"?", 1)[0]
                                 .decode("utf-8", "replace")):
                    assets += 1
                    continue
                requests.append(got)
                if len(requests) > MAX_REQUESTS:
                    raise ReplayError(f"{log} holds more than {MAX_REQUESTS} requests; replay "
                                      "at most that many at a time (split it, e.g. a day per "
                                      "file)")
    except OSError as exc:
        raise ReplayError(f"cannot read {log}: {exc.strerror}") from None
    return requests, skipped, n_skipped, assets


def replay(county: County, unit: str, log: Path, say: Callable[[str], None] = lambda _: None,
           progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Replay `log` through `unit`'s rules; what would have been refused, per rule."""
    inv = county.inv
    t = inv.tenant(unit)
    if t is None:
        raise ReplayError(f"no unit named {unit!r} in {inv.root / 'tenants'}")
    # the nodes serve a static or PHP site's images, styles and scripts without the WAF
    requests, skipped, n_skipped, assets = _read(log, t.site.type)
    if not Path(waf.MODULE).exists() or not Path(NGINX).exists():
        raise ReplayError(f"nginx with ModSecurity is not installed here ({waf.MODULE}); "
                          "`bash scripts/setup.sh` installs it")
    with tempfile.TemporaryDirectory(prefix="govhost-waf-replay-") as tmp:
        work = Path(tmp)
        _prepare(work, t)
        sock = work / "replay.sock"
        say(f"{unit}: replaying {len(requests)} request(s) through its WAF rules")
        proc = subprocess.Popen([NGINX, "-c", str(work / "nginx.conf"), "-p", str(work),
                                 "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            _wait_socket(sock, proc, work)
            host = inv.site_host(t)
            _send(sock, host, CANARY)
            done = 0
            with ThreadPoolExecutor(WORKERS) as pool:
                for _ in pool.map(lambda r: _send(sock, host, r), requests):
                    done += 1
                    if done % 100 == 0 or done == len(requests):
                        progress(done, len(requests))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        seen = _audit(work / "audit.log")
    if not seen.get(CANARY.line):
        raise ReplayError("the replay's WAF logged nothing for a known attack; its judgement "
                          "of the log cannot be trusted (is ModSecurity's audit log writable?)")
    verdict = waf_log.judge(requests, seen)
    return {"unit": unit, "log": str(log), "mode": t.waf.mode,
            "excluded": list(t.waf.exclude_rules), **verdict.to_json(),
            "skipped": n_skipped, "assets_not_judged": assets,
            "skipped_lines": [{"line": s.line, "why": s.why} for s in skipped[:20]],
            "note": "request bodies are not in access logs: POST fields were not replayed"
                    + (f"; {assets} request(s) for images, styles and scripts were left out "
                       "(the nodes serve those without the WAF)" if assets else "")}


def _prepare(work: Path, t: Any) -> None:
    """The replay's files, root's: the directory 0711, www/ readable, the rest root-only."""
    os.chmod(work, 0o711)
    (work / "tmp").mkdir(mode=0o711)
    (work / "www").mkdir(mode=0o755)
    (work / "www" / "ok.html").write_text("ok\n")
    os.chmod(work / "www" / "ok.html", 0o644)
    (work / "main.conf").write_bytes(waf.main_conf(audit_log=str(work / "audit.log")))
    (work / "unit.conf").write_bytes(waf.site_conf("detect", t.waf.exclude_rules) or b"")
    (work / "nginx.conf").write_text(_conf(work))
    for name in ("main.conf", "unit.conf", "nginx.conf"):
        os.chmod(work / name, 0o600)
