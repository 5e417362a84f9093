"""Citizens' messages in the console (docs/messages.md): a unit's list, one message with
its answer form, the review of an answer, forwarding, and the county's overdue list."""
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

NO_MESSAGE = "没有这条留言。"
NUMBER = "{number:str}"


def routes(p: Pages) -> list[Route]:
    @p.needs("read_messages", unit=True)
    async def inbox_page(request: Request, me: Person) -> Response:
        name = request.path_params["unit"]
        try:
            got = await p.ask("messages_list", sid=p.sid(request), unit=name)
        except Refused as exc:
            return p.refused(request, exc)
        except GovhostError as exc:
            return p.failed(request, str(exc))
        return p.render(request, "messages.html.j2", unit=name, **got)

    async def show(request: Request, error: str = "", done: Any = None,
                   status: int = 200) -> Response:
        """One message, whole (the contact read is audited), with what the person may do."""
        name, number = request.path_params["unit"], request.path_params["number"]
        try:
            got = await p.ask("message_show", sid=p.sid(request), unit=name, number=number)
        except Refused as exc:
            return p.refused(request, exc, NO_MESSAGE)
        except GovhostError as exc:
            return p.failed(request, str(exc))
        review = got["review"]
        return p.render(request, "message.html.j2", status, unit=name, error=error,
                        done=done, steps={s["level"]: s for s in (review or {}).get(
                            "steps", [])}, **got)

    @p.needs("read_messages", unit=True)
    async def message_page(request: Request, me: Person) -> Response:
        return await show(request)

    @p.needs("answer_messages", unit=True)
    async def answer(request: Request, me: Person) -> Response:
        form = await request.form()
        try:
            done = await p.ask("message_answer", sid=p.sid(request),
                               unit=request.path_params["unit"],
                               number=request.path_params["number"],
                               text=str(form.get("answer", "")),
                               publish=form.get("private") != "1")
        except Refused as exc:
            return p.refused(request, exc, NO_MESSAGE)
        except GovhostError as exc:
            return await show(request, str(exc), status=400)
        return await show(request, done=done)

    @p.needs("read_messages", unit=True)
    async def decide(request: Request, me: Person) -> Response:
        name = request.path_params["unit"]
        if not (roles.may(me, "review_unit", name) or roles.may(me, "review_county", name)):
            return p.forbidden(request)
        return await p.decide(request, "message_decide", show, NO_MESSAGE,
                              number=request.path_params["number"])

    @p.needs("forward_messages", unit=True)
    async def forward(request: Request, me: Person) -> Response:
        form = await request.form()
        try:
            done = await p.ask("message_forward", sid=p.sid(request),
                               unit=request.path_params["unit"],
                               number=request.path_params["number"],
                               to=str(form.get("to", "")), reason=str(form.get("reason", "")))
        except Refused as exc:
            return p.refused(request, exc, NO_MESSAGE)
        except GovhostError as exc:
            return await show(request, str(exc), status=400)
        return await show(request, done={"forwarded": done})

    @p.needs("route_messages")
    async def overdue_page(request: Request, me: Person) -> Response:
        number = request.query_params.get("page", "1")
        try:
            got = await p.ask("messages_overdue", sid=p.sid(request),
                              page=int(number) if number.isascii() and number.isdigit()
                              and len(number) < 6 else 1)
        except Refused as exc:
            return p.refused(request, exc)
        return p.render(request, "overdue.html.j2", **got)

    base = "/units/{unit}/messages"
    return [
        Route(base, inbox_page, methods=["GET"]),
        Route(f"{base}/{NUMBER}", message_page, methods=["GET"]),
        Route(f"{base}/{NUMBER}/answer", answer, methods=["POST"]),
        Route(f"{base}/{NUMBER}/review", decide, methods=["POST"]),
        Route(f"{base}/{NUMBER}/forward", forward, methods=["POST"]),
        Route("/messages/overdue", overdue_page, methods=["GET"]),
    ]
