"""How the console's web process reaches its broker: one Unix socket, one request per
connection, only for the web process's own account.

A message is a 4-byte length and a JSON object, followed (for uploads) by its files, each an
8-byte length and the bytes. The request is {"op", "args", "files"}; the answer {"ok": true,
"value"} or {"ok": false, "kind", "type", "message"}: the web side raises the same kind of
error the control plane raised, so its pages say what the CLI would.

The broker listens in a directory of its own (mode 0750, group of the web account) on a
socket of mode 0660, and checks the peer's account (SO_PEERCRED) on every connection: only
the web account (and root) may ask.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

from controlplane.console.broker import Broker, Refused
from controlplane.content.upload_area import LinkInTheWay
from controlplane.content.uploads import UploadError
from controlplane.core.errors import GovhostError
from controlplane.core.mail import MailError
from controlplane.people.roles import PeopleError

MAX_JSON = 4 << 20
MAX_FILES = 256                 # the upload form takes 200 at once
MAX_CONNECTIONS = 64            # at once; more are closed at once
FILES_AT_ONCE = 2               # requests with files in memory, from reading to answering
REQUEST_SECONDS = 600           # the most one request may take to arrive
_ERRORS: dict[str, type[GovhostError]] = {
    "PeopleError": PeopleError, "MailError": MailError, "LinkInTheWay": LinkInTheWay,
    "UploadError": UploadError, "GovhostError": GovhostError}


class BrokerDown(GovhostError):
    pass


def _read_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request took too long to arrive")
            sock.settimeout(min(60.0, left))
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        buf += chunk
    return bytes(buf)


def send(sock: socket.socket, doc: Mapping[str, Any], files: list[bytes] = ()) -> None:
    body = json.dumps({**doc, "files": len(files)}, ensure_ascii=False).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)
    for f in files:
        sock.sendall(struct.pack(">Q", len(f)))
        sock.sendall(f)


def receive(sock: socket.socket, max_files_bytes: int, deadline: float | None = None
            ) -> tuple[dict[str, Any], int]:
    """One message's JSON and how many files follow it (read them with `receive_files`)."""
    (size,) = struct.unpack(">I", _read_exact(sock, 4, deadline))
    if size > MAX_JSON:
        raise ValueError("message too large")
    doc = json.loads(_read_exact(sock, size, deadline))
    count = doc.get("files", 0) if isinstance(doc, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_FILES:
        raise ValueError("not a message")
    doc.pop("files", None)
    return doc, count


def receive_files(sock: socket.socket, count: int, max_files_bytes: int,
                  deadline: float | None = None) -> list[bytes]:
    files, total = [], 0
    for _ in range(count):
        (n,) = struct.unpack(">Q", _read_exact(sock, 8, deadline))
        total += n
        if total > max_files_bytes:
            raise ValueError("files too large")
        files.append(_read_exact(sock, n, deadline))
    return files


def answer(broker: Broker, doc: Mapping[str, Any], files: list[bytes],
           reraise: bool = False) -> dict[str, Any]:
    """The broker's answer to one request, errors included (a bug is logged here and the
    web process told only that it happened; `reraise`: raised, for the tests)."""
    try:
        op, args = doc.get("op"), doc.get("args")
        if not isinstance(op, str) or not isinstance(args, dict):
            raise Refused("bad", "a request names an op and its args")
        return {"ok": True, "value": broker.call(op, args, files)}
    except Refused as exc:
        return {"ok": False, "kind": exc.kind, "type": "Refused", "message": str(exc)}
    except GovhostError as exc:
        kind = type(exc).__name__
        return {"ok": False, "kind": "error",
                "type": kind if kind in _ERRORS else "GovhostError", "message": str(exc)}
    except Exception:
        if reraise:
            raise
        traceback.print_exc(file=sys.stderr)
        return {"ok": False, "kind": "error", "type": "GovhostError",
                "message": "the console's broker failed on this request (its log says why)"}


def raise_for(doc: Mapping[str, Any]) -> Any:
    """The value of an answer, or the error it carries raised on this side."""
    if doc.get("ok"):
        return doc.get("value")
    if doc.get("type") == "Refused":
        raise Refused(str(doc.get("kind")), str(doc.get("message")))
    raise _ERRORS.get(str(doc.get("type")), GovhostError)(str(doc.get("message")))


class Local:
    """The broker in this process (tests, and a console on a laptop): the same requests and
    checks, each answer passed through JSON as over the socket."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def call(self, op: str, files: list[bytes] = (), **args: Any) -> Any:
        doc = json.loads(json.dumps({"op": op, "args": args}))
        return raise_for(json.loads(json.dumps(answer(self.broker, doc, list(files),
                                                      reraise=True))))


class Client:
    """The web process's side of the socket: one connection per request. `timeout`: the
    longest wait for an answer (a publish of a large site reads and copies for minutes)."""

    def __init__(self, path: Path, timeout: float = 3600.0):
        self.path = Path(path)
        self.timeout = timeout

    def call(self, op: str, files: list[bytes] = (), **args: Any) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                send(s, {"op": op, "args": args}, list(files))
                doc, _ = receive(s, 0)
        except (OSError, ValueError) as exc:
            raise BrokerDown(f"the console's broker did not answer ({exc}); is `govhost "
                             "console` running?") from None
        return raise_for(doc)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def serve(broker: Broker, path: Path, web_uid: int, web_gid: int, max_files_bytes: int,
          ready: Callable[[], None] = lambda: None) -> socketserver.BaseServer:
    """Listen at `path` for the web account (`web_uid`) in a thread; the server (its
    `shutdown()` stops it)."""
    path = Path(path)
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(path.parent, 0 if os.geteuid() == 0 else -1, web_gid)
    os.chmod(path.parent, 0o750)
    path.unlink(missing_ok=True)

    connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
    files_gate = threading.BoundedSemaphore(FILES_AT_ONCE)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            uid = peer_uid(sock)
            if uid not in (web_uid, 0, os.geteuid()):
                print(f"govhost console broker: refused a connection from uid {uid}",
                      file=sys.stderr)
                return
            if not connections.acquire(blocking=False):
                return                     # a flood of connections: the first ones go on
            try:
                deadline = time.monotonic() + REQUEST_SECONDS
                try:
                    doc, count = receive(sock, max_files_bytes, deadline)
                except (OSError, ValueError, RecursionError):
                    return
                if count == 0:
                    self.reply(sock, doc, [])
                    return
                # A request with files holds its place from the first byte of its files to
                # its answer: a few uploads at a time are in memory, however many are sent.
                with files_gate:
                    try:
                        files = receive_files(sock, count, max_files_bytes, deadline)
                    except (OSError, ValueError):
                        return
                    self.reply(sock, doc, files)
                    del files
            finally:
                connections.release()

        @staticmethod
        def reply(sock: socket.socket, doc: dict[str, Any], files: list[bytes]) -> None:
            try:
                send(sock, answer(broker, doc, files))
            except OSError:
                pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    old = os.umask(0o117)
    try:
        server = Server(str(path), Handler)
    finally:
        os.umask(old)
    os.chown(path, 0 if os.geteuid() == 0 else -1, web_gid)
    os.chmod(path, 0o660)
    threading.Thread(target=server.serve_forever, name="console-broker", daemon=True).start()
    ready()
    return server
