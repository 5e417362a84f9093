"""`govhost waf replay UNIT ACCESS_LOG`: the old server's real requests through the unit's
WAF rules, offline, before the site's first public day.

The rules run where they run on the nodes: ModSecurity in nginx with Debian's CRS and the
settings govhost renders (`sites.waf`), with the unit's own exclusions, in detection only.
That nginx is a private one on the control machine's loopback, started for the replay and
stopped after it; nothing reaches the cluster. Each request carries a numbered header so
its audit entry is found again; `waf_log.judge` turns the entries into rules and requests.
"""
from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
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


class ReplayError(GovhostError):
    pass


def _conf(work: Path, port: int) -> str:
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
        listen 127.0.0.1:{port};
        server_name _;
        root {work}/www;
        include {work}/unit.conf;
        location / {{ try_files /ok.html /ok.html; }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, work: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ReplayError("the replay's nginx did not start: "
                              + (work / "error.log").read_text(errors="replace")[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ReplayError("the replay's nginx did not answer on loopback within 10 s")


def _send(port: int, host: str, r: waf_log.Request) -> None:
    head = (r.method.encode() + b" " + r.target + b" HTTP/1.1\r\nHost: " + host.encode()
            + b"\r\n" + (b"User-Agent: " + r.agent + b"\r\n" if r.agent else b"")
            + (b"Referer: " + r.referer + b"\r\n" if r.referer else b"")
            + b"Accept: */*\r\n" + f"{MARK}: {r.line}\r\n".encode()
            + (b"Content-Length: 0\r\n" if r.method in ("POST", "PUT", "PATCH") else b"")
            + b"Connection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        while s.recv(65536):
            pass


def _audit(path: Path) -> dict[int, list[waf_log.Match]]:
    """Each replayed line's matches, from the audit log (JSON lines)."""
    seen: dict[int, list[waf_log.Match]] = {}
    if not path.exists():
        return seen
    for raw in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        headers = entry.get("transaction", {}).get("request", {}).get("headers", {}) or {}
        mark = next((v for k, v in headers.items() if k.lower() == MARK.lower()), None)
        if mark is None or not str(mark).isdigit():
            continue
        seen.setdefault(int(mark), []).extend(waf_log.matches(entry))
    return seen


def replay(county: County, unit: str, log: Path, say: Callable[[str], None] = lambda _: None,
           progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Any]:
    """Replay `log` through `unit`'s rules; what would have been refused, per rule."""
    inv = county.inv
    t = inv.tenant(unit)
    if t is None:
        raise ReplayError(f"no unit named {unit!r} in {inv.root / 'tenants'}")
    try:
        with log.open(encoding="utf-8", errors="surrogateescape") as f:
            parsed = list(waf_log.parse(f))
    except OSError as exc:
        raise ReplayError(f"cannot read {log}: {exc.strerror}") from None
    requests = [p for p in parsed if isinstance(p, waf_log.Request)]
    skipped = [p for p in parsed if isinstance(p, waf_log.Skipped)]
    if len(requests) > MAX_REQUESTS:
        raise ReplayError(f"{log} holds {len(requests)} requests; replay at most "
                          f"{MAX_REQUESTS} at a time (split it, e.g. a day per file)")
    if not Path(waf.MODULE).exists() or not Path(NGINX).exists():
        raise ReplayError(f"nginx with ModSecurity is not installed here ({waf.MODULE}); "
                          "`bash scripts/setup.sh` installs it")
    with tempfile.TemporaryDirectory(prefix="govhost-waf-replay-") as tmp:
        work = Path(tmp)
        _prepare(work, t)
        port = _free_port()
        (work / "nginx.conf").write_text(_conf(work, port))
        say(f"{unit}: replaying {len(requests)} request(s) through its WAF rules on loopback")
        proc = subprocess.Popen([NGINX, "-c", str(work / "nginx.conf"), "-p", str(work),
                                 "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            _wait_port(port, proc, work)
            host = inv.site_host(t)
            done = 0
            with ThreadPoolExecutor(WORKERS) as pool:
                for _ in pool.map(lambda r: _send(port, host, r), requests):
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
    verdict = waf_log.judge(requests, seen)
    return {"unit": unit, "log": str(log), "mode": t.waf.mode,
            "excluded": list(t.waf.exclude_rules), **verdict.to_json(),
            "skipped": len(skipped),
            "skipped_lines": [{"line": s.line, "why": s.why} for s in skipped[:20]],
            "note": "request bodies are not in access logs: POST fields were not replayed"}


def _prepare(work: Path, t: Any) -> None:
    for d in ("tmp", "www"):
        (work / d).mkdir()
    (work / "www" / "ok.html").write_text("ok\n")
    (work / "main.conf").write_bytes(waf.main_conf(audit_log=str(work / "audit.log")))
    unit = waf.site_conf("detect", t.waf.exclude_rules) or b""
    (work / "unit.conf").write_bytes(unit)
    if os.geteuid() == 0:              # the worker (nobody) writes the audit log and temp files
        nobody = pwd.getpwnam("nobody")
        for p in _tree(work):
            os.lchown(p, nobody.pw_uid, nobody.pw_gid)


def _tree(root: Path) -> Iterable[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield Path(dirpath) / n

