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

On a node it runs as govhost-messages.service (`govhost-messages serve`), with its settings
from the live config release; `govhost-messages dump` prints what the node holds, for the
control machine. Not yet built (docs/messages.md): answers, the console and deadlines.
"""
from __future__ import annotations

import argparse
import grp
import hashlib
import hmac
import ipaddress
import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Iterable
from urllib.parse import parse_qs

from govhost_node import message_page
from govhost_node import messages as rules
from govhost_node.layout import NODE, Layout
from govhost_node.message_spool import HELD, HELD_MAX, MAX_ANSWERS_BYTES, UNIT, Spool, check_record
from govhost_node.words import Screen

# 5,000 Chinese characters are 45,000 bytes form-encoded, with the other fields under 64 KiB
MAX_BODY = 64 * 1024
MAX_HEADERS = 16 * 1024          # request line and headers together
MAX_CONNECTIONS = 64             # per listener; more wait in the kernel's backlog or are refused
READ_SECONDS = 10                # per read of a request
REQUEST_SECONDS = 20             # to send the whole request (headers and body), however slowly
FORM_FIELDS = ("subject", "text", "contact", "name", "challenge", "nonce")
SOCKET = "/run/govhost-messages/citizens.sock"   # controlplane.core.paths.MESSAGES_SOCKET


@dataclass
class Settings:
    node: str                        # "n1"
    index: int                       # 1
    units: dict[str, str]            # unit -> its code in message numbers ("jiaoyu": "JY")
    peers: list[str]                 # "address:port" of the other nodes, in the order tried
    secret: bytes                    # the county's message secret (challenges, peers, sources)
    titles: dict[str, str] = field(default_factory=dict)    # unit -> its name, for the page
    per_source: tuple[int, float] = (5, 60.0)     # messages per source per window (seconds)
    # messages per unit per window on this node: a flood from many sources at one unit
    # (thousands of addresses, each within its own limit) fills its box only so far
    per_unit: tuple[int, float] = (1000, 3600.0)
    words: Screen = field(default_factory=lambda: Screen(None))   # the county's word lists
    work_bits: int = rules.WORK_BITS
    peer_timeout: float = 5.0
    utc_offset_hours: int = 8        # the county's day (China has no daylight saving time)
    read_seconds: float = READ_SECONDS
    _seen: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _unit_seen: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow_unit(self, unit: str, now: float) -> bool:
        """Whether `unit` may take one more message on this node now (counted if so)."""
        with self._lock:
            return _take(self._unit_seen, unit, self.per_unit, now)

    def allow(self, source: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10_000:        # forget the sources that are quiet again
                window = self.per_source[1]
                self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < window}
            return _take(self._seen, source, self.per_source, now)


def _take(seen: dict[str, list[float]], who: str, limit: tuple[int, float], now: float) -> bool:
    """A sliding window: at most `count` in the last `window` seconds, counted if taken. The
    caller holds the lock."""
    count, window = limit
    times = seen.setdefault(who, [])
    while times and now - times[0] >= window:      # kept in order: oldest first
        times.pop(0)
    if len(times) >= count:
        return False
    times.append(now)
    return True


class Live:
    """The settings of the node's live config release (`messages.json`, written by apply),
    read again when that file changes: an apply that gives a unit its message box needs no
    restart. Counts per source carry over. Without the file (no release yet) no unit takes
    messages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._settings = Settings(node="none", index=1, units={}, peers=[], secret=b"")
        self._lock = threading.Lock()

    def current(self) -> Settings:
        try:
            st = os.stat(self.path)
            key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        with self._lock:
            if key != self._key:
                self._settings = self._load(key)
                self._key = key
            return self._settings

    def _load(self, key: tuple[int, int, int] | None) -> Settings:
        old = self._settings
        if key is None:
            new = Settings(node="none", index=1, units={}, peers=[], secret=b"")
        else:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            count, window = doc.get("per_unit") or Settings.per_unit
            new = Settings(node=doc["node"], index=int(doc["index"]), units=dict(doc["units"]),
                           peers=list(doc["peers"]), secret=doc["secret"].encode(),
                           titles=dict(doc.get("titles") or {}),
                           per_unit=(int(count), float(window)),
                           work_bits=int(doc.get("work_bits") or rules.WORK_BITS),
                           words=Screen(doc.get("words")))
        new._seen, new._unit_seen = old._seen, old._unit_seen
        return new


def screen(words: Screen, draft: rules.Draft) -> list[str]:
    """The county's words in what a citizen wrote (subject, text, name; the contact is never
    shown): Refused naming each field that holds a `block` word and the word, so the citizen
    can rewrite it; else the `review` words that hold the message for the unit."""
    problems: dict[str, str] = {}
    held: list[str] = []
    for key in ("subject", "text", "name"):
        for f in words.find(getattr(draft, key)):
            if f.severity == "block" and key not in problems:
                problems[key] = (f"含有本县网站不予接受的词语“{f.word}”" +
                                 (f"（{f.note}）" if f.note else "") + "，请删去后再提交")
            elif f.severity == "review":
                try:            # kept as a record's field is checked (the lists refuse
                    word = rules.clean(f.word)[:60] or "?"      # what would fail it)
                except ValueError:
                    word = "?"
                if word not in held:
                    held.append(word)
    if problems:
        raise rules.Refused(problems)
    return held[:HELD_MAX]


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


# A peer that did not answer is tried last for a while: with a node powered off, every
# citizen would otherwise wait out its connection timeout before the next peer is tried.
PEER_DOWN_SECONDS = 30.0
_down: dict[str, float] = {}
_down_lock = threading.Lock()


def _in_order(peers: list[str], now: float) -> list[str]:
    """The configured order, with peers that failed in the last PEER_DOWN_SECONDS last."""
    with _down_lock:
        late = {p for p, t in _down.items() if now - t < PEER_DOWN_SECONDS}
    return [p for p in peers if p not in late] + [p for p in peers if p in late]


def replicate(settings: Settings, record: dict[str, str]) -> str | None:
    """Give a peer its copy; the peer that holds it, or None if none could."""
    body = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
    for peer in _in_order(settings.peers, time.monotonic()):
        req = urllib.request.Request(f"http://{peer}/replica", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "X-Govhost-Mac": sign(settings.secret, body)})
        try:
            with _OPENER.open(req, timeout=settings.peer_timeout) as r:
                if r.status == 201:
                    with _down_lock:
                        _down.pop(peer, None)
                    return peer
        except OSError:
            with _down_lock:
                _down[peer] = time.monotonic()
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


class _Reaper:
    """Cuts connections whose request was not whole by its deadline."""

    def __init__(self) -> None:
        self._due: dict[object, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, handler: "Handler", deadline: float) -> None:
        with self._lock:
            self._due[handler] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def forget(self, handler: "Handler") -> None:
        with self._lock:
            self._due.pop(handler, None)

    def _run(self) -> None:
        while True:
            time.sleep(1)
            now = time.monotonic()
            with self._lock:
                late = [h for h, t in self._due.items() if t < now]
                for h in late:
                    del self._due[h]
            for h in late:
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
                except OSError:
                    pass


_REAPER = _Reaper()
_ANSWERS: dict[str, tuple[tuple[int, int, int], list[dict]]] = {}
_ANSWERS_LOCK = threading.Lock()
_TOKENS: dict[tuple[str, str], tuple[tuple, frozenset[str]]] = {}
_TOKENS_LOCK = threading.Lock()


def _tokens(spool: Spool, unit: str) -> frozenset[str]:
    """The reading tokens' hashes of the unit's messages held here (own and copies)."""
    key = []
    for kind in ("own", "copies"):
        try:
            st = os.stat(os.path.join(spool.root, kind, unit))
            key.append((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            key.append(None)
    with _TOKENS_LOCK:
        cached = _TOKENS.get((spool.root, unit))
        if cached is not None and cached[0] == tuple(key):
            return cached[1]
        found = frozenset(r["token_hash"] for kind in ("own", "copies")
                          for r in spool.records(kind, unit))
        _TOKENS[(spool.root, unit)] = (tuple(key), found)
        return found


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
        # A per-read limit alone lets a client that sends a byte every few seconds hold a
        # slot for hours (16 KiB of headers): the whole request has a deadline too, kept by
        # one reaper thread for all connections (not a timer thread each).
        _REAPER.watch(self, time.monotonic() + REQUEST_SECONDS)

    def _read_done(self) -> None:
        _REAPER.forget(self)

    def finish(self) -> None:
        _REAPER.forget(self)
        super().finish()

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

    def _unit(self, s: Settings) -> str | None:
        unit = self.headers.get("X-Govhost-Unit", "")
        return unit if unit in s.units else None

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
        self._read_done()
        return body

    def _send_page(self, content_type: str, data: bytes, private: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        # a reading link's page may hold an answer that is not public: no cache keeps it
        self.send_header("Cache-Control", "no-store, private" if private else "no-cache")
        if private:
            self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; connect-src 'self'; "
                         "style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
                         "frame-ancestors 'self'")
        self.end_headers()
        self.wfile.write(data)

    def _answers(self, unit: str) -> list[dict]:
        """The unit's answered messages, newest answer first (parsed once per change)."""
        path = self.spool.answers_path(unit)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return []
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with _ANSWERS_LOCK:
            cached = _ANSWERS.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
        with open(path, encoding="utf-8") as f:
            answers = sorted(json.load(f), key=lambda a: (a["answered_at"], a["number"]),
                             reverse=True)
        with _ANSWERS_LOCK:
            _ANSWERS[path] = (key, answers)
        return answers

    def _waiting(self, unit: str, token_hash: str) -> bool:
        """Whether this node holds a message of `unit` with that reading token's hash: a
        set lookup, the set read again only when a spool directory changed (a stranger's
        made-up token must not cost a read of the whole spool)."""
        return token_hash in _tokens(self.spool, unit)

    def _query(self, query: str) -> dict[str, list[str]]:
        """A query string's fields; anything odd (too many fields: a messenger app adds its
        own, such as WeChat's from=&isappinstalled=) is read as no fields, never an error."""
        try:
            return parse_qs(query[:4096], max_num_fields=32)
        except ValueError:
            return {}

    def do_GET(self) -> None:  # noqa: N802
        self._read_done()
        s = self.settings        # once: on a node each read looks at the live release's file
        unit = self._unit(s)
        path, _, query = self.path.partition("?")
        if self.public and unit is not None and path == "/list":
            args = self._query(query)
            try:
                q = rules.clean((args.get("q") or [""])[0])[:50]
            except ValueError:              # a search for what no message can hold
                q = ""
            page_no = (args.get("page") or ["1"])[0]
            # ASCII digits only: str.isdigit() is true of "²", which int() refuses
            page_no = int(page_no) if re.fullmatch(r"[0-9]{1,5}", page_no, re.ASCII) else 1
            self._send_page("text/html; charset=utf-8", message_page.listing(
                s.titles.get(unit, unit),
                [a for a in self._answers(unit) if a["publish"]], q, page_no))
            return
        if self.public and unit is not None and path == "/reply":
            token = (self._query(query).get("t") or [""])[0]
            found, waiting = None, False
            if rules.valid_token(token):
                h = rules.token_hash(token)
                found = next((a for a in self._answers(unit)
                              if hmac.compare_digest(a["token_hash"], h)), None)
                waiting = found is None and self._waiting(unit, h)
            self._send_page("text/html; charset=utf-8", message_page.reply(
                s.titles.get(unit, unit), found, waiting), private=True)
            return
        if self.public and unit is not None and path == "/page":
            self._send_page("text/html; charset=utf-8", message_page.page(
                s.titles.get(unit, unit)))
            return
        if self.public and unit is not None and path == "/form.js":
            self._send_page("text/javascript; charset=utf-8", message_page.SCRIPT)
            return
        if not self.public or path != "/challenge" or unit is None:
            self._send(404, {"error": "not found"})
            return
        self._send(200, {"challenge": rules.challenge(s.secret, unit, s.node,
                                                      bits=s.work_bits)})

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
        # The body is read before any answer: a peer (nginx) still sending it when the answer
        # came and the connection closed would see a broken pipe, not the answer.
        body = self._body()
        if body is None:
            return
        unit = self._unit(s)
        if unit is None:
            self._send(404, {"error": "this site takes no messages"})
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
        # The county's words: after the proof of work is spent and the source counted, so
        # that one proof of work buys one check (the page asks a new challenge per send)
        try:
            held = screen(s.words, draft)
        except rules.Refused as e:
            self._send(400, {"problems": e.problems})
            return
        if not s.allow_unit(unit, now):
            self._send(429, {"error": "this unit takes no more messages just now; try again "
                                      "in an hour"})
            return
        acc = rules.accept(s.units[unit], s.index, self.spool.next_sequence(), day)
        record = {"number": acc.number, "unit": unit, "node": s.node,
                  "received": datetime.fromtimestamp(now, timezone.utc).strftime(
                      "%Y-%m-%dT%H:%M:%SZ"),
                  "subject": draft.subject, "text": draft.text, "name": draft.name,
                  "contact": draft.contact, "token_hash": acc.token_hash, "source": source}
        if held:
            record[HELD] = "\n".join(held)
        if replicate(s, record) is None:
            self._send(503, {"error": "the message could not be kept safely just now; "
                                      "nothing was kept; please send it again in a minute"})
            return
        self.spool.write("own", record)
        self._send(200, {"number": acc.number, "token": acc.token, "held": bool(held)})


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


class _TCPServer6(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(_Bounded, socketserver.ThreadingUnixStreamServer):
    pass


def server(listen: tuple[str, int] | str, settings: Settings | Live, spool: Spool,
           public: bool = True, socket_group: str | None = None) -> socketserver.BaseServer:
    """The citizens' listener (`public`; a Unix socket path, or an address for tests) or the
    nodes' (an address and port). `socket_group`: the group that may open the socket (nginx's
    workers'); nobody else can."""
    attrs: dict[str, object] = {"spool": spool, "public": public}
    if isinstance(settings, Live):
        attrs.update(settings=property(lambda self: settings.current()), timeout=READ_SECONDS)
    else:
        attrs.update(settings=settings, timeout=settings.read_seconds)
    handler = type("BoundHandler", (Handler,), attrs)
    if isinstance(listen, str):
        if os.path.exists(listen):
            os.unlink(listen)
        old = os.umask(0o177)            # the socket is made 0600, then given to the group
        try:
            srv = _UnixServer(listen, handler)
        finally:
            os.umask(old)
        if socket_group is not None:
            os.chown(listen, 0, grp.getgrnam(socket_group).gr_gid)
            os.chmod(listen, 0o660)
        return srv
    return (_TCPServer6 if ":" in listen[0] else _TCPServer)(listen, handler)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def serve(socket_path: str, listen: str, config: str, lay: Layout,
          socket_group: str) -> None:
    """The node's service: citizens on the socket, peers on the node's address."""
    live = Live(config)
    spool = Spool(lay)
    os.makedirs(os.path.dirname(socket_path), mode=0o755, exist_ok=True)
    citizens = server(socket_path, live, spool, public=True, socket_group=socket_group)
    peers = server(_address(listen), live, spool, public=False)
    threading.Thread(target=peers.serve_forever, daemon=True).start()
    print(f"govhost-messages: citizens on {socket_path}, peers on {listen}", flush=True)
    citizens.serve_forever()


def dump(lay: Layout, numbers: Iterable[str] = (), units: Iterable[str] = (),
         placed: Iterable[tuple[str, str]] = (), since: str = "") -> None:
    """Every message this node holds, its own and its peers' copies, one JSON object a line
    (what the control machine collects; the contact is in it: root only). Or only: the
    messages `numbers` (in whichever unit's folder, each copy: a page or an answer), the
    messages in `units`' folders, and the messages `placed` ((unit, number): each in the
    folder of the unit it was written to; a unit's list, with those forwarded to it).
    `since` (YYYYMMDD): of the whole dump, only the messages of that day or later by their
    numbers (the hourly reminder's read: what came in since its last whole read)."""
    if since and not re.fullmatch(r"[0-9]{8}", since, re.ASCII):
        raise ValueError(f"--since is a day, e.g. 20261205, not {since!r}")
    if since and (numbers or units or placed):
        raise ValueError("--since goes alone: not with --number, --unit or --placed")
    numbers, units = list(dict.fromkeys(numbers)), list(dict.fromkeys(units))
    for u in units:
        if not UNIT.fullmatch(u):
            raise ValueError(f"{u!r} is not a unit name")
    spool = Spool(lay)
    for kind in ("own", "copies"):
        if not numbers and not units and not placed:
            records: Iterable[dict[str, str]] = spool.records(kind, since=since)
        else:
            records = [r for u in units for r in spool.records(kind, u)]
            records += [r for n in numbers for r in spool.records_of(kind, n)]
            records += [r for u, n in dict.fromkeys(placed) if u not in units
                        for r in spool.record_in(kind, u, n)]
        for record in records:
            print(json.dumps({**record, "held_as": kind}, ensure_ascii=False, sort_keys=True))


def placed_lines(data: bytes) -> list[tuple[str, str]]:
    """`dump --placed`'s stdin: one "UNIT NUMBER" a line (any number of them: a unit's list
    can name thousands, past what one command line holds)."""
    out = []
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            unit, _, number = line.strip().partition(" ")
            out.append((unit, number))
    return out


def keep_copies(lay: Layout, lines: bytes) -> int:
    """Messages from the control machine (one record a line) kept as copies: a replaced
    node takes back a second copy of every message left with one. Each is checked as a
    peer's copy is; one already held is kept as it is."""
    spool, n = Spool(lay), 0
    for line in lines.decode("utf-8").splitlines():
        if line.strip():
            spool.write("copies", check_record(json.loads(line)))
            n += 1
    return n


def take_answers(lay: Layout, unit: str, data: bytes) -> int:
    """The unit's answered messages from the control machine (on stdin), stored whole."""
    if len(data) > MAX_ANSWERS_BYTES:
        raise ValueError("answers larger than the node takes")
    answers = json.loads(data.decode("utf-8"))
    Spool(lay).write_answers(unit, answers)
    return len(answers)


def add_one_answer(lay: Layout, unit: str, data: bytes) -> dict[str, Any]:
    """One answer from the control machine ({"answer": {...}, "digest": ...} on stdin):
    added to the unit's list if the list then is the control machine's (its digest)."""
    if len(data) > MAX_ANSWERS_BYTES:
        raise ValueError("an answer larger than the node takes")
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or set(doc) != {"answer", "digest"}:
        raise ValueError('not {"answer": {...}, "digest": ...}')
    n = Spool(lay).add_answer(unit, doc["answer"], doc["digest"])
    return {"unit": unit, "answers": n} if n >= 0 else {"unit": unit, "stale": True}


def take_many_answers(lay: Layout, stream: BinaryIO) -> dict[str, Any]:
    """Many units' answered messages in one command: a node that joins or was replaced
    takes every unit's (one SSH session a unit: 129 s at 1,000 units, some 11 minutes at
    5,000). One JSON line a unit, {"unit": ..., "answers": [...]}, each checked and stored
    whole as `answers` stores one unit's; a unit refused does not keep the others from
    being stored.
    A line too long or cut short, or not such an object, stops the stream (ValueError):
    what follows it cannot be trusted to be what the control machine sent."""
    spool = Spool(lay)
    taken: dict[str, int] = {}
    refused: dict[str, str] = {}
    try:
        while True:
            line = stream.readline(MAX_ANSWERS_BYTES + 2)
            if not line:
                break
            if not line.endswith(b"\n"):
                raise ValueError(f"line {len(taken) + len(refused) + 1}: larger than the "
                                 "node takes, or cut short")
            doc = json.loads(line.decode("utf-8"))
            if not isinstance(doc, dict) or set(doc) != {"unit", "answers"} or \
                    not isinstance(doc["unit"], str):
                raise ValueError(f"line {len(taken) + len(refused) + 1}: not "
                                 '{"unit": ..., "answers": [...]}')
            unit = doc["unit"]
            if unit in taken or unit in refused:
                raise ValueError(f"{unit!r} sent twice")
            try:
                spool.write_answers(unit, doc["answers"], sync_dir=False)
                taken[unit] = len(doc["answers"])
            except ValueError as exc:
                refused[unit] = str(exc)
    finally:
        if taken:
            spool.sync_answers_dir()
    return {"answers": taken, "refused": refused}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="govhost-messages")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True, help="the node's address:port for its peers")
    s.add_argument("--socket", default=SOCKET)
    s.add_argument("--group", default="www-data", help="nginx's group: may open the socket")
    s.add_argument("--config", default=f"{NODE.current}/messages.json")
    s = sub.add_parser("dump")
    s.add_argument("--number", action="append", default=[],
                   help="that message only (a page or an answer needs only it); repeatable")
    s.add_argument("--unit", action="append", default=[],
                   help="the messages written to that unit only (its list); repeatable")
    s.add_argument("--placed", action="store_true",
                   help='and the messages named on stdin, one "UNIT NUMBER" a line')
    s.add_argument("--since", default="",
                   help="every message of that day (YYYYMMDD, the day in its number) or "
                        "later; with no other option")
    sub.add_parser("keep", help="keep messages (one JSON record a line on stdin) as copies")
    s = sub.add_parser("answers", help="store a unit's answered messages (JSON on stdin)")
    s.add_argument("unit")
    s = sub.add_parser("answers-add", help='add one answer to a unit\'s ({"answer": {...}, '
                                           '"digest": SHA-256 of what the list then holds})')
    s.add_argument("unit")
    sub.add_parser("answers-many", help="store many units' answered messages (one JSON line "
                                        'a unit on stdin: {"unit": ..., "answers": [...]})')
    s = sub.add_parser("forget", help="empty the name and contact of the messages received "
                                      "before a time (the county's retention)")
    s.add_argument("--before", required=True, help="UTC, e.g. 2026-01-01T00:00:00Z")
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(a.socket, a.listen, a.config, NODE, a.group)
    elif a.cmd == "keep":
        try:
            n = keep_copies(NODE, sys.stdin.buffer.read(MAX_ANSWERS_BYTES + 1))
        except (ValueError, UnicodeDecodeError, FileExistsError) as exc:
            print(f"govhost-messages: copies refused: {exc}", file=sys.stderr)
            sys.exit(2)
        print(json.dumps({"kept": n}))
    elif a.cmd == "answers":
        try:
            n = take_answers(NODE, a.unit, sys.stdin.buffer.read(MAX_ANSWERS_BYTES + 1))
        except (ValueError, UnicodeDecodeError) as exc:
            print(f"govhost-messages: answers for {a.unit} refused: {exc}", file=sys.stderr)
            sys.exit(2)
        print(json.dumps({"unit": a.unit, "answers": n}))
    elif a.cmd == "answers-add":
        try:
            print(json.dumps(add_one_answer(NODE, a.unit, sys.stdin.buffer.read(
                MAX_ANSWERS_BYTES + 1))))
        except (ValueError, UnicodeDecodeError, RecursionError, OSError) as exc:
            print(f"govhost-messages: the answer for {a.unit} was refused: {exc}",
                  file=sys.stderr)
            sys.exit(2)
    elif a.cmd == "answers-many":
        try:
            print(json.dumps(take_many_answers(NODE, sys.stdin.buffer)))
        except (ValueError, UnicodeDecodeError, RecursionError, OSError) as exc:
            print(f"govhost-messages: answers refused: {exc}", file=sys.stderr)
            sys.exit(2)
    elif a.cmd == "forget":
        try:
            n = Spool(NODE).forget_contacts(a.before)
        except ValueError as exc:
            print(f"govhost-messages: {exc}", file=sys.stderr)
            sys.exit(2)
        print(json.dumps({"forgotten": n}))
    else:
        try:
            dump(NODE, a.number, a.unit, placed_lines(
                sys.stdin.buffer.read(MAX_ANSWERS_BYTES + 1)) if a.placed else (), a.since)
        except (ValueError, UnicodeDecodeError) as exc:
            print(f"govhost-messages: {exc}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
