"""govhost-messages: takes citizens' messages on a node (issue 38, first part).

    GET  /challenge    a proof-of-work challenge for the unit's page (X-Govhost-Unit)
    POST /message      a message: subject, text, contact, name, challenge, nonce (form-encoded)
    POST /replica      a peer node's message, kept as its second copy (signed by the peer)

nginx sets X-Govhost-Unit and X-Real-IP on a unit's site (a citizen's own values of those
headers never get through it). A message is answered with its number only after a peer node
holds a copy (`message_spool`); with no peer reachable the citizen is asked to try again and
nothing is kept. The per-source limit here stands behind nginx's own; the source is kept
only as a keyed hash.

Not yet built (docs/messages.md): the nginx location, the systemd unit and firewall door, the
control machine's collection, answers, the console and the page. This module is tested on
loopback with two servers standing for two nodes.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from govhost_node import messages as rules
from govhost_node.message_spool import Spool, check_record

MAX_BODY = 32 * 1024
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
    _seen: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow(self, source: str, now: float) -> bool:
        count, window = self.per_source
        with self._lock:
            times = [t for t in self._seen.get(source, []) if now - t < window]
            if len(times) >= count:
                self._seen[source] = times
                return False
            self._seen[source] = times + [now]
            return True


def sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, b"replica\0" + body, hashlib.sha256).hexdigest()


def replicate(settings: Settings, record: dict[str, str]) -> str | None:
    """Give a peer its copy; the peer that holds it, or None if none could."""
    body = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
    for peer in settings.peers:
        req = urllib.request.Request(f"http://{peer}/replica", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "X-Govhost-Mac": sign(settings.secret, body)})
        try:
            with urllib.request.urlopen(req, timeout=settings.peer_timeout) as r:
                if r.status == 201:
                    return peer
        except OSError:
            continue
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "govhost-messages"
    sys_version = ""
    settings: Settings
    spool: Spool

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
        if not length.isdigit():
            self._send(411, {"error": "a length is required"})
            return None
        if int(length) > MAX_BODY:
            self._send(413, {"error": f"a message is at most {MAX_BODY // 1024} KiB"})
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    def do_GET(self) -> None:  # noqa: N802
        unit = self._unit()
        if self.path != "/challenge" or unit is None:
            self._send(404, {"error": "not found"})
            return
        self._send(200, {"challenge": rules.challenge(self.settings.secret, unit,
                                                      bits=self.settings.work_bits)})

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/replica":
            self._replica()
        elif self.path == "/message":
            self._message()
        else:
            self._send(404, {"error": "not found"})

    def _replica(self) -> None:
        body = self._body()
        if body is None:
            return
        mac = self.headers.get("X-Govhost-Mac", "")
        if not hmac.compare_digest(sign(self.settings.secret, body), mac):
            self._send(403, {"error": "not signed by a node of this county"})
            return
        try:
            record = check_record(json.loads(body))
            self.spool.write("copies", record)
        except (ValueError, rules.Refused, FileExistsError) as e:
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
        source = hmac.new(s.secret, b"source\0" + (self.headers.get("X-Real-IP") or
                          self.client_address[0]).encode(), hashlib.sha256).hexdigest()
        try:
            rules.verify(s.secret, unit, form.get("challenge", ""), form.get("nonce", ""), now)
            draft = rules.check(form)
        except rules.Refused as e:
            self._send(400, {"problems": e.problems})
            return
        if not s.allow(source, now):
            self._send(429, {"error": "too many messages from here; try again later"})
            return
        if not self.spool.spend(form["challenge"], now):
            self._send(400, {"problems": {"challenge": "already used; reload the page"}})
            return
        acc = rules.accept(s.units[unit], s.index, self.spool.next_sequence(),
                           datetime.fromtimestamp(now, timezone.utc).date())
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


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 resets connections under a burst of citizens
    request_queue_size = 256
    daemon_threads = True


def server(listen: tuple[str, int], settings: Settings, spool: Spool) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"settings": settings, "spool": spool})
    srv = _Server(listen, handler)
    return srv
