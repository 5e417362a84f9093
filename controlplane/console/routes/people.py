"""The unit admin's page: the unit's people and roles, and its SFTP keys."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import Refused
from controlplane.console.pages import Pages
from controlplane.core import mail
from controlplane.core.errors import GovhostError
from controlplane.people.roles import PeopleError, Person


def routes(p: Pages) -> list[Route]:
    async def people_page(request: Request, unit: str, status: int = 200,
                          **ctx: Any) -> Response:
        got = await p.ask("people_list", sid=p.sid(request), unit=unit)
        return p.render(request, "people.html.j2", status, unit=unit, rows=got["rows"],
                        title=got["title"], keys=got["keys"],
                        **{"error": "", "done": None, **ctx})

    @p.needs("manage_people", unit=True)
    async def unit_people(request: Request, me: Person) -> Response:
        name = request.path_params["unit"]
        try:
            if request.method == "GET":
                return await people_page(request, name)
            form = await request.form()
            action, who = str(form.get("action", "")), str(form.get("person", ""))
            try:
                if action == "add":
                    done = await p.ask("person_add", sid=p.sid(request), unit=name,
                                       name=str(form.get("name", "")),
                                       display=str(form.get("display", "")),
                                       email=str(form.get("email", "")),
                                       role=str(form.get("role", "")))
                else:
                    done = await p.ask("person_act", sid=p.sid(request), unit=name,
                                       person=who, action=action)
            except (PeopleError, mail.MailError) as exc:
                return await people_page(request, name, 400, error=str(exc))
            return await people_page(request, name, done=done)
        except Refused as exc:
            return p.refused(request, exc)

    @p.needs("manage_people", unit=True)
    async def unit_sftp_keys(request: Request, me: Person) -> Response:
        name = request.path_params["unit"]
        form = await request.form()
        lines = [k.strip() for k in str(form.get("keys", "")).splitlines() if k.strip()]
        try:
            try:
                done = await p.ask("sftp_keys", sid=p.sid(request), unit=name, lines=lines)
            except Refused:
                raise
            except GovhostError as exc:
                return await people_page(request, name, 400, error=str(exc))
            return await people_page(request, name, done=(
                "SFTP keys changed and applied" if done["applied"] else
                "SFTP keys changed; apply did not complete: "
                f"{done.get('error') or done['result']}"))
        except Refused as exc:
            return p.refused(request, exc)

    return [
        Route("/units/{unit}/people", unit_people, methods=["GET", "POST"]),
        Route("/units/{unit}/sftp-keys", unit_sftp_keys, methods=["POST"]),
    ]
