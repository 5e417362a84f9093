"""govhost-messages: takes citizens' messages on a node (issue 38, first part).

Two listeners, so that each door admits only who it is for:
- the citizens' side, on a Unix socket only nginx can open (a unit's PHP code on the node
  cannot: it could otherwise choose the unit and the source address it claims):
    GET  /challenge    a proof-of-work challenge for the unit's page (X-Govhost-Unit)
    POST /message      a message: subject, text, contact, name, challenge, nonce (form-encoded)
- the nodes' side, on the node's address: POST /replica, a peer's message kept as its
  second copy (signed with the county's message secret).

nginx sets X-Govhost-Unit and X-Real-IP on a unit's site (a citizen's own values of those
headers never get through it) and buffers each request whole before it passes it on. A
message is answered with its number only after a peer node holds a copy (`message_spool`);
with no peer reachable the citizen is asked to try again and nothing is kept. The per-source
limit here stands behind nginx's own; the source is kept only as a hash keyed with the secret
and the day (it links a source's messages within a day, not across days).

Every connection has a time limit per read and the listeners a cap on connections: a client
that sends slowly, or holds connections open, costs a bounded number of threads and bytes.

Not yet built (docs/messages.md): the nginx location, the systemd unit and firewall door, the
control machine's collection, answers, the console and the page. This module is tested on
loopback with two servers standing for two nodes.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import socketserver
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from govhost_node import messages as rules
from govhost_node.message_spool import Spool, check_record

# 5,000 Chinese characters are 45,000 bytes form-encoded, with the other fields under 64 KiB
MAX_BODY = 64 * 1024
MAX_HEADERS = 16 * 1024          # request line and headers together
MAX_CONNECTIONS = 64             # per listener; more wait in the kernel's backlog or are refused
READ_SECONDS = 10                # per read of a request
FORM_FIELDS = ("subject", "text", "contact", "name", "challenge", "nonce")


@dataclass
class Settings:
    node: str                        # "n1"
    index: int                       # 1
    units: dict[str, str]            # unit -> its code in message numbers ("jiaoyu": "JY")
    peers: list[str]                 # "address:port" of the other nodes, in the order tried
    secret: bytes                    # the county's message secret (challenges, peers, sources)
    per_source: tuple[int, float] = (5, 60.0)     # messages per source per window (seconds)
    work_bits: int = rules.WORK_BITS
    peer_timeout: float = 5.0
    utc_offset_hours: int = 8        # the county's day (China has no daylight saving time)
    read_seconds: float = READ_SECONDS
    _seen: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow(self, source: str, now: float) -> bool:
        count, window = self.per_source
        with self._lock:
            if len(self._seen) > 10_000:        # forget the sources that are quiet again
                self._seen = {k: v for k, v in self._seen.items() if now - v[-1] < window}
            times = [t for t in self._seen.get(source, []) if now - t < window]
            if len(times) >= count:
                self._seen[source] = times
                return False
            self._seen[source] = times + [now]
            return True


def sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, b"replica\0" + body, hashlib.sha256).hexdigest()


def source_key(secret: bytes, address: str, day: str) -> str:
    """The source as kept: a hash keyed with the secret and the day. An IPv6 source counts
    by its /64 (one subscriber's whole network), not by each of its addresses."""
    try:
        ip = ipaddress.ip_address(address)
        net = str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)
    except ValueError:
        net = "unknown"
    return hmac.new(secret, f"source\0{day}\0{net}".encode(), hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


# Peers are reached directly: never through a proxy named in the environment, never redirected.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def replicate(settings: Settings, record: dict[str, str]) -> str | None:
    """Give a peer its copy; the peer that holds it, or None if none could."""
    body = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
    for peer in settings.peers:
        req = urllib.request.Request(f"http://{peer}/replica", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "X-Govhost-Mac": sign(settings.secret, body)})
        try:
            with _OPENER.open(req, timeout=settings.peer_timeout) as r:
                if r.status == 201:
                    return peer
        except OSError:
            continue
    return None


class _Capped:
    """The request's stream, ended after `limit` bytes: headers cannot grow without bound
    (Python's own limits allow 100 lines of 64 KiB)."""

    def __init__(self, raw, limit: int) -> None:  # type: ignore[no-untyped-def]
        self.raw, self.left = raw, limit

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise ConnectionAbortedError("request too large")
        return data

    def readline(self, size: int = -1) -> bytes:
        return self._take(self.raw.readline(min(size, self.left + 1) if size >= 0
                                            else self.left + 1))

    def read(self, size: int = -1) -> bytes:
        return self._take(self.raw.read(size))

    def close(self) -> None:
        self.raw.close()


class Handler(BaseHTTPRequestHandler):
    server_version = "govhost-messages"
    sys_version = ""
    timeout = READ_SECONDS
    settings: Settings
    spool: Spool
    public = True                    # the citizens' listener (False: the nodes')

    def setup(self) -> None:
        super().setup()
        self.rfile = _Capped(self.rfile, MAX_HEADERS)  # type: ignore[assignment]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Nothing a citizen sent (or their address) goes to a log."""

    def _send(self, status: int, doc: dict) -> None:
        data = json.dumps(doc, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _unit(self) -> str | None:
        unit = self.headers.get("X-Govhost-Unit", "")
        return unit if unit in self.settings.units else None

    def _body(self) -> bytes | None:
        length = self.headers.get("Content-Length", "")
        if not re.fullmatch(r"[0-9]{1,9}", length, re.ASCII):
            self._send(411, {"error": "a length is required"})
            return None
        if int(length) > MAX_BODY:
            self._send(413, {"error": f"a message is at most {MAX_BODY // 1024} KiB"})
            self.close_connection = True
            return None
        self.rfile.left = int(length)  # type: ignore[attr-defined]
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            return None
        return body

    def do_GET(self) -> None:  # noqa: N802
        unit = self._unit()
        if not self.public or self.path != "/challenge" or unit is None:
            self._send(404, {"error": "not found"})
            return
        self._send(200, {"challenge": rules.challenge(self.settings.secret, unit,
                                                      self.settings.node,
                                                      bits=self.settings.work_bits)})

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/replica" and not self.public:
            self._replica()
        elif self.path == "/message" and self.public:
            self._message()
        else:
            self._send(404, {"error": "not found"})

    def _replica(self) -> None:
        body = self._body()
        if body is None:
            return
        mac = self.headers.get("X-Govhost-Mac", "")
        if not re.fullmatch(r"[0-9a-f]{64}", mac, re.ASCII) or \
                not hmac.compare_digest(sign(self.settings.secret, body), mac):
            self._send(403, {"error": "not signed by a node of this county"})
            return
        try:
            record = check_record(json.loads(body))
            self.spool.write("copies", record)
        except (ValueError, rules.Refused, FileExistsError, RecursionError) as e:
            self._send(400, {"error": f"refused: {e}"})
            return
        self._send(201, {"stored": record["number"]})

    def _message(self) -> None:
        s = self.settings
        unit = self._unit()
        if unit is None:
            self._send(404, {"error": "this site takes no messages"})
            return
        body = self._body()
        if body is None:
            return
        try:
            raw = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                           max_num_fields=len(FORM_FIELDS) + 4)
        except (UnicodeDecodeError, ValueError):
            self._send(400, {"problems": {"form": "not a form this page sends"}})
            return
        if any(len(v) != 1 for k, v in raw.items() if k in FORM_FIELDS):
            self._send(400, {"problems": {"form": "a field was sent twice"}})
            return
        form = {k: v[0] for k, v in raw.items() if k in FORM_FIELDS}
        now = time.time()
        day = datetime.fromtimestamp(now, timezone(timedelta(hours=s.utc_offset_hours))).date()
        source = source_key(s.secret, self.headers.get("X-Real-IP", ""), day.isoformat())
        try:
            rules.verify(s.secret, unit, s.node, form.get("challenge", ""),
                         form.get("nonce", ""), now)
            draft = rules.check(form)
        except rules.Refused as e:
            self._send(400, {"problems": e.problems})
            return
        # spent first: a replayed answer costs the replayer, not the source it names
        if not self.spool.spend(form["challenge"], now):
            self._send(400, {"problems": {"challenge": "already used; reload the page"}})
            return
        if not s.allow(source, now):
            self._send(429, {"error": "too many messages from here; try again later"})
            return
        acc = rules.accept(s.units[unit], s.index, self.spool.next_sequence(), day)
        record = {"number": acc.number, "unit": unit, "node": s.node,
                  "received": datetime.fromtimestamp(now, timezone.utc).strftime(
                      "%Y-%m-%dT%H:%M:%SZ"),
                  "subject": draft.subject, "text": draft.text, "name": draft.name,
                  "contact": draft.contact, "token_hash": acc.token_hash, "source": source}
        if replicate(s, record) is None:
            self._send(503, {"error": "the message could not be kept safely just now; "
                                      "nothing was kept; please send it again in a minute"})
            return
        self.spool.write("own", record)
        self._send(200, {"number": acc.number, "token": acc.token})


class _Bounded:
    """At most MAX_CONNECTIONS requests at once; past that a connection is closed at once
    (the citizen's page says to try again) instead of a thread each."""
    # socketserver's default backlog of 5 resets connections under a burst of citizens
    request_queue_size = 256
    daemon_threads = True

    def server_activate(self) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().server_activate()  # type: ignore[misc]

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        """One line, without the client's address or anything it sent."""
        kind = sys.exc_info()[0]
        print(f"govhost-messages: a request failed ({kind.__name__ if kind else 'error'})",
              file=sys.stderr, flush=True)


class _TCPServer(_Bounded, ThreadingHTTPServer):
    pass


class _UnixServer(_Bounded, socketserver.ThreadingUnixStreamServer):
    pass


def server(listen: tuple[str, int] | str, settings: Settings, spool: Spool,
           public: bool = True) -> socketserver.BaseServer:
    """The citizens' listener (`public`; a Unix socket path, or an address for tests) or the
    nodes' (an address and port)."""
    handler = type("BoundHandler", (Handler,), {"settings": settings, "spool": spool,
                                                "public": public,
                                                "timeout": settings.read_seconds})
    if isinstance(listen, str):
        if os.path.exists(listen):
            os.unlink(listen)
        return _UnixServer(listen, handler)
    return _TCPServer(listen, handler)
