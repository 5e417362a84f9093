"""A rollback to an earlier release: proposed by an editor, decided along its chain."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import Refused
from controlplane.console.pages import Pages
from controlplane.core.errors import GovhostError
from controlplane.people.roles import Person

NO_PROPOSAL = "没有这个回滚申请。"


def routes(p: Pages) -> list[Route]:
    @p.needs("propose_rollback", unit=True)
    async def rollback_propose(request: Request, me: Person) -> Response:
        """An editor proposes an earlier release; it waits for the rollback's chain."""
        name = request.path_params["unit"]
        form = await request.form()
        try:
            done = await p.ask("rollback_propose", sid=p.sid(request), unit=name,
                               release=str(form.get("release", "")))
        except Refused as exc:
            return p.refused(request, exc)
        except GovhostError as exc:
            return p.failed(request, str(exc))
        return p.go(f"/units/{name}/rollbacks/{done['proposal']}")

    async def show(request: Request, error: str = "", done: Any = None,
                   status: int = 200) -> Response:
        name, pid = request.path_params["unit"], request.path_params["proposal"]
        try:
            got = await p.ask("rollback_show", sid=p.sid(request), unit=name, proposal=pid)
        except Refused as exc:
            return p.refused(request, exc, NO_PROPOSAL)
        prop = got["p"]
        return p.render(request, "rollback.html.j2", status, unit=name, p=prop,
                        title=got["title"], error=error, done=done,
                        steps={s["level"]: s for s in prop["review"]["steps"]},
                        may_decide=got["may_decide"], why_not=got["why_not"])

    @p.needs("view_unit", unit=True)
    async def rollback_page(request: Request, me: Person) -> Response:
        return await show(request)

    @p.needs("confirm_rollback", unit=True)
    async def rollback_decide(request: Request, me: Person) -> Response:
        return await p.decide(request, "rollback_decide", show, NO_PROPOSAL,
                              proposal=request.path_params["proposal"])

    return [
        Route("/units/{unit}/rollbacks", rollback_propose, methods=["POST"]),
        Route("/units/{unit}/rollbacks/{proposal:int}", rollback_page, methods=["GET"]),
        Route("/units/{unit}/rollbacks/{proposal:int}", rollback_decide, methods=["POST"]),
    ]
