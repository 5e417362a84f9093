"""The county's overview and a unit's page (and the console's stylesheet)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import Refused
from controlplane.console.pages import STATIC, Pages
from controlplane.people import roles
from controlplane.people.roles import Person

STYLESHEET = (STATIC / "console.css").read_bytes()


def routes(p: Pages) -> list[Route]:
    @p.needs()
    async def home(request: Request, me: Person) -> Response:
        if not roles.may(me, "view_county"):
            return p.go(f"/units/{me.unit}")
        asked = request.query_params.get("page", "1")
        page = int(asked) if asked.isdecimal() and len(asked) < 7 else 1
        try:
            got = await p.ask("overview", sid=p.sid(request), page=page)
        except Refused as exc:
            return p.refused(request, exc)
        return p.render(request, "overview.html.j2", **got)

    @p.needs("view_unit", unit=True)
    async def unit_page(request: Request, me: Person) -> Response:
        name = request.path_params["unit"]
        try:
            got = await p.ask("unit", sid=p.sid(request), unit=name)
        except Refused as exc:
            return p.refused(request, exc)
        return p.render(request, "unit.html.j2", u=got["u"], can=got["can"])

    async def stylesheet(request: Request) -> Response:
        return p.asset(STYLESHEET, "text/css")

    return [
        Route("/", home),
        Route("/static/console.css", stylesheet),
        Route("/units/{unit}", unit_page),
    ]
