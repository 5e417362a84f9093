"""The console's web process as an ASGI application (Starlette): pages, cookies, CSRF.

- The web process holds no key and reads no state: every question and every change goes to
  the broker (broker.py) as one of a fixed set of typed requests, which checks again who
  asks and what they may do. Here the same checks run first only to answer early (a 403 or
  a login page before a body is read).
- Sessions: the broker keeps them; the cookie carries the broker's session id, signed
  (Starlette's SessionMiddleware, itsdangerous). CSRF is asgi-csrf's signed double-submit
  token, in a hidden field of every form (no JavaScript needed). Both cookies are `__Host-`
  cookies when served over HTTPS: a unit's own site on a sibling name (`jiaoyu.<county
  domain>`) can run PHP and set cookies for the county domain, and the `__Host-` prefix is
  what keeps it from planting a session or a token here.
- Every route declares its gate (`Pages.needs`, pages.py) and checks `roles.may` for the
  unit it is on: a person of one unit gets 403 on every page of another, whether that unit
  exists or not. The routes live in routes/, one module per capability.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware

from controlplane.console import guard, views
from controlplane.console.broker import Broker
from controlplane.console.pages import HEADERS, Pages
from controlplane.console.routes import all_routes
from controlplane.console.transport import Local
from controlplane.core.county import County
from controlplane.people.store import SESSION_HOURS

__all__ = ["HEADERS", "build"]


def build(backend: Any, secure: bool = True,
          unit_view: Callable[[County, str], Mapping[str, Any]] = views.unit,
          behind_nginx: bool = False, read_messages: Any = None) -> guard.Guard:
    """The console's web process. `backend`: its broker, over the socket
    (transport.Client) or in this process (a County: transport.Local around a Broker, with
    `unit_view`, what a unit's page shows); `secure`: served over HTTPS (the cookies say
    so); `behind_nginx`: take only requests that carry the nodes' proxy secret (guard.py);
    `read_messages`: how the in-process broker reads the nodes' messages (tests)."""
    link = Local(Broker(backend, secure, unit_view, **(
        {"read_messages": read_messages} if read_messages else {}))) \
        if isinstance(backend, County) else backend
    facts = link.call("facts")
    pages = Pages(link, facts, secure)
    prefix = pages.prefix
    app = Starlette(routes=all_routes(pages), middleware=[
        Middleware(SessionMiddleware, secret_key=facts["keys"]["session"],
                   session_cookie=f"{prefix}govhost-session",
                   max_age=SESSION_HOURS * 3600, same_site="strict", https_only=secure)])
    protected = asgi_csrf(app, signing_secret=facts["keys"]["csrf"],
                          cookie_name=f"{prefix}csrftoken", cookie_secure=secure,
                          cookie_samesite="Strict",
                          always_protect={"/login", "/logout", "/password", "/request"},
                          always_set_cookie=False, skip_if_scope=_checks_its_own_token)
    upload_limit = facts["max_upload_mb"] << 20
    outer = guard.Guard(protected, facts["keys"]["proxy"] if behind_nginx else None,
                        upload_limit + (2 << 20))
    outer.routes = app.routes          # type: ignore[attr-defined]  # for the tests
    return outer


def _checks_its_own_token(scope: Mapping[str, Any]) -> bool:
    """The upload form is multipart with a file: asgi-csrf's own multipart reader does not
    work with today's python-multipart, so that route (exactly that route, no other path
    that happens to end the same way) compares the form's token with asgi-csrf's signed
    cookie token itself, after Starlette has read the form."""
    return scope["method"] == "POST" and bool(guard.UPLOAD_ROUTE.match(scope["path"]))
