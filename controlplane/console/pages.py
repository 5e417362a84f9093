"""What every route of the console's web process shares: the broker call, the person behind
a request, the gate a route declares (`needs`), and the one place responses are made with
their headers.

A route is `async def handler(request, me)` under `@pages.needs(action, unit=...)`: the gate
runs before the handler sees the request, so no route can forget it. It answers early (a
login page, 403, 404) only to spare the broker; the broker checks every request again.
"""
from __future__ import annotations

import time
from functools import wraps
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote

import anyio
import anyio.to_thread
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from controlplane.console import guard, i18n
from controlplane.console.broker import HEAVY_AT_ONCE, Refused, person_from
from controlplane.core import templates
from controlplane.core.errors import GovhostError
from controlplane.people import roles
from controlplane.people.roles import Person

HEADERS = guard.HEADERS
_env = templates.environment("report", autoescape=True, undefined=jinja2.StrictUndefined)
_env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) \
    if ts else "-"

Handler = Callable[[Request, Person], Awaitable[Response]]


class Pages:
    """One console's shared parts: its link to the broker, the county's facts (units,
    domain, keys), and whether it is served over HTTPS."""

    def __init__(self, link: Any, facts: Mapping[str, Any], secure: bool) -> None:
        self.link = link
        self.facts = facts
        self.units: dict[str, Any] = facts["units"]
        self.secure = secure
        self.prefix = "__Host-" if secure else ""
        self._limiter: list[anyio.CapacityLimiter] = []

    # -- the broker
    async def ask(self, op: str, files: list[bytes] = (), heavy: bool = False,
                  **args: Any) -> Any:
        """One request to the broker, off the event loop. Heavy ones (password hashes, zip
        checks) queue behind a bound while every page still answers."""
        if heavy:
            if not self._limiter:
                self._limiter.append(anyio.CapacityLimiter(HEAVY_AT_ONCE))
            return await anyio.to_thread.run_sync(
                lambda: self.link.call(op, list(files), **args), limiter=self._limiter[0])
        return await anyio.to_thread.run_sync(lambda: self.link.call(op, list(files), **args))

    @staticmethod
    def sid(request: Request) -> str:
        return str(request.session.get("sid", ""))

    @staticmethod
    def source(request: Request) -> str:
        return request.client.host if request.client else "-"

    # -- responses
    def render(self, request: Request, template: str, status: int = 200, **ctx: Any
               ) -> Response:
        """A page with the security headers; a page whose form leads to its unit's preview
        host (a review's preview button: a POST answered with a redirect there) says so in
        its Content-Security-Policy, which otherwise keeps forms on the console."""
        facts = self.facts
        lang = i18n.pick(request.query_params.get("lang"), request.cookies.get("lang"),
                         request.headers.get("accept-language"))
        html = _env.get_template(f"console/{template}").render(
            _=i18n.gettext(lang), lang=lang, csrftoken=request.scope["csrftoken"](),
            me=request.state.person if hasattr(request.state, "person") else None,
            county=facts["county"], path=request.url.path,
            preview=bool(facts["preview_zone"]), **ctx)
        headers = HEADERS
        if template in ("review.html.j2",) and facts["preview_zone"]:
            host = f"{ctx['unit']}.{facts['preview_zone']}"
            headers = {**HEADERS, "Content-Security-Policy": HEADERS[
                "Content-Security-Policy"].replace(
                    "form-action 'self'", f"form-action 'self' https://{host} http://{host}")}
        resp = HTMLResponse(html, status_code=status, headers=headers)
        if request.query_params.get("lang") in i18n.LANGUAGES:
            resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="strict",
                            secure=self.secure, httponly=True)
        return resp

    @staticmethod
    def asset(body: bytes, media_type: str) -> Response:
        return Response(body, media_type=media_type,
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    @staticmethod
    def go(target: str) -> Response:
        return RedirectResponse(target, status_code=303)

    def login_first(self, request: Request) -> Response:
        return self.go(f"/login?next={quote(request.url.path)}")

    def forbidden(self, request: Request) -> Response:
        return self.render(request, "error.html.j2", 403, code=403, message="无权访问此页面。")

    def missing(self, request: Request, message: str) -> Response:
        return self.render(request, "error.html.j2", 404, code=404, message=message)

    def failed(self, request: Request, message: str) -> Response:
        return self.render(request, "error.html.j2", 400, code=400, message=message)

    def refused(self, request: Request, exc: Refused, message: str = "没有这个单位。"
                ) -> Response:
        """The broker's own refusal as a page (it checked again what this side checked)."""
        if exc.kind == "login":
            request.session.clear()
            return self.login_first(request)
        if exc.kind == "password":
            return self.go("/password")
        if exc.kind == "missing":
            return self.missing(request, message)
        return self.forbidden(request)

    async def decide(self, request: Request, op: str, show: Callable[..., Awaitable[Response]],
                     missing: str, **ids: Any) -> Response:
        """An approve-or-reject form along a review chain (a release's, a rollback's): sent
        to the broker as `op` with `ids`; the page is shown again by `show` with the outcome,
        or with what was wrong (400)."""
        form = await request.form()
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return await show(request, "请选择通过或退回。", status=400)
        try:
            done = await self.ask(op, sid=self.sid(request), unit=request.path_params["unit"],
                                  approve=decision == "approve",
                                  comment=str(form.get("comment", "")), **ids)
        except Refused as exc:
            return self.refused(request, exc, missing)
        except GovhostError as exc:
            return await show(request, str(exc), status=400)
        return await show(request, done=done)

    # -- who asks
    async def current(self, request: Request) -> Person | None:
        """The logged-in person, or None (no session, or the broker ended it)."""
        if not self.sid(request):
            return None
        try:
            me = await self.ask("whoami_any", sid=self.sid(request))
        except Refused:
            request.session.clear()
            return None
        person = person_from(me)
        request.state.person = person
        request.session["must_change"] = me["must_change"]
        return person

    async def gate(self, request: Request, action: str | None = None, unit: bool = False
                   ) -> Person | Response:
        """The person, or the response that stops the request: the login page, the
        password change a new person owes, 403 where `action` is not theirs (on the unit of
        the path when `unit`), 404 for a unit that does not exist (after the 403: a person
        of one unit learns nothing about which others exist)."""
        me = await self.current(request)
        if me is None:
            return self.login_first(request)
        if request.session.get("must_change"):
            return self.go("/password")
        if action is None:
            return me
        if unit:
            name = request.path_params["unit"]
            if not roles.may(me, action, name):
                return self.forbidden(request)
            if name not in self.units:
                return self.missing(request, "没有这个单位。")
        elif not roles.may(me, action):
            return self.forbidden(request)
        return me

    def needs(self, action: str | None = None, unit: bool = False
              ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        """The route's gate, declared once with it: `None` for any logged-in person; an
        action of people.roles, on the path's unit when `unit`."""
        def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            @wraps(handler)
            async def gated(request: Request) -> Response:
                me = await self.gate(request, action, unit)
                if not isinstance(me, Person):
                    return me
                return await handler(request, me)
            gated.needs = (action, unit)            # type: ignore[attr-defined]  # tests
            return gated
        return wrap


STATIC = Path(__file__).parent / "static"
