"""A release waiting for review: its page, the decision, and the signed preview link."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import Refused
from controlplane.console.pages import Pages
from controlplane.core.errors import GovhostError
from controlplane.people import roles
from controlplane.people.roles import Person

NO_RELEASE = "没有这个版本。"


def routes(p: Pages) -> list[Route]:
    async def show(request: Request, error: str = "", done: Any = None,
                   status: int = 200) -> Response:
        """A pending (or decided) release: its chain, what it changes, its wording
        findings, and the decision form for the person whose level is waiting."""
        name, rid = request.path_params["unit"], request.path_params["release"]
        try:
            got = await p.ask("review_show", sid=p.sid(request), unit=name, release=rid)
        except Refused as exc:
            return p.refused(request, exc, NO_RELEASE)
        r = got["r"]
        return p.render(request, "review.html.j2", status, unit=name, r=r, title=got["title"],
                        error=error, done=done,
                        steps={s["level"]: s for s in (r["review"] or {}).get("steps", [])},
                        may_decide=got["may_decide"], why_not=got["why_not"])

    @p.needs("view_unit", unit=True)
    async def review_page(request: Request, me: Person) -> Response:
        return await show(request)

    @p.needs("view_unit", unit=True)
    async def review_decide(request: Request, me: Person) -> Response:
        name, rid = request.path_params["unit"], request.path_params["release"]
        if not (roles.may(me, "review_unit", name) or roles.may(me, "review_county", name)):
            return p.forbidden(request)
        return await p.decide(request, "review_decide", show, NO_RELEASE, release=rid)

    @p.needs("view_unit", unit=True)
    async def preview_open(request: Request, me: Person) -> Response:
        """A signed link to the release on the unit's preview host, issued to this person
        (audited): the browser is sent there at once; the link ends after
        `console.preview_minutes`. Issuing is a POST with the form's token (a GET, which any
        page can make a browser send, changes nothing: it leads to the review page)."""
        name, rid = request.path_params["unit"], request.path_params["release"]
        try:
            if request.method == "GET":
                await p.ask("review_show", sid=p.sid(request), unit=name, release=rid)
                return p.go(f"/units/{name}/reviews/{rid}")
            link_ = await p.ask("preview_link", sid=p.sid(request), unit=name, release=rid)
        except Refused as exc:
            return p.refused(request, exc, NO_RELEASE)
        except GovhostError as exc:
            return p.missing(request, str(exc))
        return p.go(str(link_["url"]))

    return [
        Route("/units/{unit}/reviews/{release}", review_page, methods=["GET"]),
        Route("/units/{unit}/reviews/{release}", review_decide, methods=["POST"]),
        Route("/units/{unit}/preview/{release}", preview_open, methods=["GET", "POST"]),
    ]
