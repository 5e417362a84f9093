"""A unit without a site asks for one (no account: it has none yet); the county decides."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import Refused
from controlplane.console.pages import Pages
from controlplane.core.errors import GovhostError
from controlplane.onboarding import form as request_form
from controlplane.people.roles import Person


def routes(p: Pages) -> list[Route]:
    domain = p.facts["domain"]

    async def request_site(request: Request) -> Response:
        """The form is checked as `govhost validate` checks a manifest; a good one is queued
        for the county and the unit gets a secret link to follow it."""
        blank = dict.fromkeys(request_form.FIELDS, "")
        if request.method == "GET":
            return p.render(request, "request.html.j2", v=blank, problems={}, done=None,
                            domain_hint=domain)
        form = await request.form(max_files=0, max_fields=len(request_form.FIELDS) + 2)
        req = request_form.SiteRequest.from_form(form)
        try:
            res = await p.ask("request_submit", values=dict(req.values),
                              source=p.source(request))
        except GovhostError as exc:
            return p.render(request, "request.html.j2", 429, v=req.values,
                            problems={"": [str(exc)]}, done=None, domain_hint=domain)
        if not res["ok"]:
            return p.render(request, "request.html.j2", 400, v=req.values,
                            problems=res["problems"], done=None, domain_hint=domain)
        return p.render(request, "request.html.j2", v=blank, problems={}, done=res,
                        domain_hint=domain,
                        follow=f"/requests/{res['id']}/status?k={res['secret']}")

    async def request_status(request: Request) -> Response:
        rec = await p.ask("request_status", rid=request.path_params["rid"],
                          secret=request.query_params.get("k", ""))
        if rec is None:
            return p.missing(request, "没有这个申请。")
        return p.render(request, "request_status.html.j2", r=rec, host=f"{rec['name']}.{domain}")

    @p.needs("decide_requests")
    async def request_queue(request: Request, me: Person) -> Response:
        try:
            rows = await p.ask("request_list", sid=p.sid(request))
        except Refused as exc:
            return p.refused(request, exc)
        return p.render(request, "requests.html.j2", rows=rows)

    @p.needs("decide_requests")
    async def request_decide(request: Request, me: Person) -> Response:
        """The operator's view of one request: the manifest, its plan, and the decision."""
        rid = request.path_params["rid"]
        done, error, status = None, "", 200
        try:
            if request.method == "POST":
                form = await request.form()
                decision = str(form.get("decision", ""))
                try:
                    if decision == "approve":
                        done = await p.ask("request_approve", sid=p.sid(request), rid=rid,
                                           shown=str(form.get("manifest_sha256", "")))
                    elif decision == "return":
                        done = await p.ask("request_return", sid=p.sid(request), rid=rid,
                                           comment=str(form.get("comment", "")))
                    else:
                        error, status = "请选择批准或退回。", 400
                except Refused:
                    raise
                except GovhostError as exc:
                    error, status = str(exc), 400
            r = await p.ask("request_show", sid=p.sid(request), rid=rid)
        except Refused as exc:
            return p.refused(request, exc, "没有这个申请。")
        return p.render(request, "request_decide.html.j2", status, r=r, done=done,
                        error=error, domain=domain)

    return [
        Route("/request", request_site, methods=["GET", "POST"]),
        Route("/requests", request_queue, methods=["GET"]),
        Route("/requests/{rid:int}", request_decide, methods=["GET", "POST"]),
        Route("/requests/{rid:int}/status", request_status, methods=["GET"]),
    ]
