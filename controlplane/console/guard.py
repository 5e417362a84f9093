"""The console's outer door (ASGI middleware): who may talk to it, and how much they may send.

- **Only the nodes' nginx.** The console listens on an address the nodes reach, and the
  nodes also run units' PHP code. A request is taken only when it carries the proxy's secret
  header, which every node's nginx sets from a root-only file of its config release
  (`snippets/console-proxy.conf`): a unit's PHP, running as the unit's account on the same
  node, cannot read it and so cannot talk to the console directly or say who the visitor is.
  The visitor's address is then nginx's `$remote_addr` (X-Forwarded-For, set, never appended).
- **Every answer carries the security headers** (HEADERS), redirects and error pages too.
- **Bodies are bounded per route**, before a byte reaches the app: the upload route takes up
  to the console's `max_upload_mb`, every other route a few KiB of form (a login, a comment,
  a site request). A declared length over the limit is refused at once; a body sent without
  one (chunked) is cut off where it passes the limit. Either way the answer is 413.
"""
from __future__ import annotations

import hmac
import re
from typing import Any, Awaitable, Callable

from controlplane.core import secrets

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROXY_HEADER = "x-govhost-proxy"
# On every answer, whoever made it (a page, a redirect, Starlette's own 404 and 405, this
# guard's refusals): an error page is a page an attacker can frame or sniff too.
HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
                                      "form-action 'self'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
_RAW_HEADERS = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]


def with_headers(headers: list) -> list:
    """`headers` (an ASGI list) with every security header it lacks."""
    have = {k.lower() for k, _ in headers}
    return [*headers, *((k, v) for k, v in _RAW_HEADERS if k not in have)]
FORM_LIMIT = 64 << 10           # a login, a comment, a site request, a unit's SFTP keys
UPLOAD_ROUTE = re.compile(r"^/units/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/upload$")


def proxy_secret(cluster_secret: bytes) -> str:
    """What every node's nginx sends with each request it forwards to the console."""
    return secrets.console_proxy(cluster_secret)


def body_limit(method: str, path: str, upload_limit: int) -> int:
    """The most a request to `path` may send."""
    if method == "POST" and UPLOAD_ROUTE.match(path):
        return upload_limit
    return FORM_LIMIT


class TooLarge(Exception):
    pass


class Guard:
    """Wraps the console app: refuses requests that did not come through nginx (when
    `proxy_secret` is set) and bodies over their route's limit."""

    def __init__(self, app: ASGIApp, proxy_secret: str | None, upload_limit: int) -> None:
        self.app = app
        self.secret = proxy_secret.encode() if proxy_secret else None
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.secret is not None:
            sent = headers.get(PROXY_HEADER.encode(), b"")
            if not hmac.compare_digest(sent, self.secret):
                await _answer(send, 403, "the console is reached through console.<county "
                              "domain> on the nodes' nginx only")
                return
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1").strip()
            if forwarded:
                scope = {**scope, "client": (forwarded, 0)}
        limit = body_limit(scope["method"], scope["path"], self.upload_limit)
        declared = headers.get(b"content-length", b"")
        if declared:
            if not declared.isdigit():
                await _answer(send, 400, "bad Content-Length")
                return
            if int(declared) > limit:
                await _answer(send, 413, f"request body over {limit} bytes for this page")
                return
        received = 0
        started = answered = False

        async def bounded_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answered here: the app's own error handling would make it a 500.
                    if not started and not answered:
                        answered = True
                        await _answer(send, 413, f"request body over {limit} bytes for "
                                      "this page")
                    raise TooLarge()
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
                message = {**message,
                           "headers": with_headers(list(message.get("headers") or []))}
            await send(message)

        try:
            await self.app(scope, bounded_receive, watching_send)
        except TooLarge:
            pass


async def _answer(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": with_headers([(b"content-type", b"text/plain; charset=utf-8"),
                                         (b"content-length", str(len(body)).encode()),
                                         (b"connection", b"close")])})
    await send({"type": "http.response.body", "body": body})
