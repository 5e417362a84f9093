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
- Every route checks `roles.may` for the unit it is on: a person of one unit gets 403 on
  every page of another, whether that unit exists or not.
"""
from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

import anyio
import anyio.to_thread
import jinja2
from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from controlplane.console import guard, i18n, views
from controlplane.console.broker import (
    HEAVY_AT_ONCE,
    MAX_SINGLE_FILES,
    Broker,
    Refused,
    person_from,
)
from controlplane.console.transport import Local
from controlplane.content import upload_area, uploads
from controlplane.core import mail, paths
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.onboarding import form as request_form
from controlplane.people import roles
from controlplane.people.roles import PeopleError, Person
from controlplane.people.store import DEVICE_DAYS, SESSION_HOURS

HEADERS = guard.HEADERS
STYLESHEET = (Path(__file__).parent / "static" / "console.css").read_bytes()
UPLOAD_JS = (Path(__file__).parent / "static" / "upload.js").read_bytes()
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.TEMPLATES)),
                          autoescape=True, undefined=jinja2.StrictUndefined)
_env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) \
    if ts else "-"


def build(backend: Any, secure: bool = True,
          unit_view: Callable[[County, str], Mapping[str, Any]] = views.unit,
          behind_nginx: bool = False) -> guard.Guard:
    """The console's web process. `backend`: its broker, over the socket
    (transport.Client) or in this process (a County: transport.Local around a Broker, with
    `unit_view`, what a unit's page shows); `secure`: served over HTTPS (the cookies say
    so); `behind_nginx`: take only requests that carry the nodes' proxy secret (guard.py)."""
    link = Local(Broker(backend, secure, unit_view)) if isinstance(backend, County) \
        else backend
    facts = link.call("facts")
    units: dict[str, Any] = facts["units"]
    prefix = "__Host-" if secure else ""
    device_cookie = f"{prefix}govhost-device"
    limiter: list[anyio.CapacityLimiter] = []

    async def ask(op: str, files: list[bytes] = (), heavy: bool = False, **args: Any) -> Any:
        """One request to the broker, off the event loop. Heavy ones (password hashes, zip
        checks) queue behind a bound while every page still answers."""
        if heavy:
            if not limiter:
                limiter.append(anyio.CapacityLimiter(HEAVY_AT_ONCE))
            return await anyio.to_thread.run_sync(
                lambda: link.call(op, list(files), **args), limiter=limiter[0])
        return await anyio.to_thread.run_sync(lambda: link.call(op, list(files), **args))

    def sid(request: Request) -> str:
        return str(request.session.get("sid", ""))

    def render(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        """A page with the security headers; a page whose form leads to its unit's preview
        host (a review's preview button: a POST answered with a redirect there) says so in
        its Content-Security-Policy, which otherwise keeps forms on the console."""
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
                            secure=secure, httponly=True)
        return resp

    def source(request: Request) -> str:
        return request.client.host if request.client else "-"

    async def current(request: Request, any_state: bool = False) -> Person | None:
        """The logged-in person, or None (no session, or the broker ended it)."""
        if not sid(request):
            return None
        try:
            me = await ask("whoami_any", sid=sid(request))
        except Refused:
            request.session.clear()
            return None
        person = person_from(me)
        request.state.person = person
        request.session["must_change"] = me["must_change"]
        return person

    def login_first(request: Request) -> Response:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    def forbidden(request: Request) -> Response:
        return render(request, "error.html.j2", 403, code=403, message="无权访问此页面。")

    def missing(request: Request, message: str) -> Response:
        return render(request, "error.html.j2", 404, code=404, message=message)

    def refused(request: Request, exc: Refused, message: str = "没有这个单位。") -> Response:
        """The broker's own refusal as a page (it checked again what this side checked)."""
        if exc.kind == "login":
            request.session.clear()
            return login_first(request)
        if exc.kind == "password":
            return RedirectResponse("/password", status_code=303)
        if exc.kind == "missing":
            return missing(request, message)
        return forbidden(request)

    async def login_page(request: Request) -> Response:
        return render(request, "login.html.j2", error="", wait=0, name="",
                      next=_safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()
        result = await ask("login", heavy=True, name=name,
                           password=str(form.get("password", "")),
                           code=str(form.get("code", "")), source=source(request),
                           device=request.cookies.get(device_cookie, "")[:100])
        if not result["ok"]:
            return render(request, "login.html.j2", 401, error=result["code"],
                          wait=int(result["wait"] + 0.999), name=name,
                          next=_safe_next(str(form.get("next", ""))))
        request.session.clear()
        request.session.update({"sid": result["sid"], "must_change": result["must_change"]})
        target = "/password" if result["must_change"] else \
            _safe_next(str(form.get("next", "")))
        resp = RedirectResponse(target, status_code=303)
        if result.get("device"):          # this browser, known from now on for this person
            resp.set_cookie(device_cookie, result["device"], max_age=DEVICE_DAYS * 86400,
                            path="/", secure=secure, httponly=True, samesite="strict")
        return resp

    async def logout(request: Request) -> Response:
        """Ends every session of the person (a copied cookie included), not only this one."""
        if sid(request):
            try:
                await ask("logout", sid=sid(request))
            except Refused:
                pass
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def password(request: Request) -> Response:
        me = await current(request)
        if me is None:
            return login_first(request)
        if request.method == "GET":
            return render(request, "password.html.j2", error="")
        form = await request.form()
        new = str(form.get("new", ""))
        if new != str(form.get("again", "")):
            return render(request, "password.html.j2", 400, error="两次输入的新密码不一致。")
        try:
            await ask("password", heavy=True, sid=sid(request),
                      old=str(form.get("old", "")), new=new, source=source(request))
        except Refused as exc:
            return refused(request, exc)
        except PeopleError as exc:
            return render(request, "password.html.j2", 400, error=str(exc))
        # Every other session of the person ended with the change; this one goes on.
        request.session["must_change"] = False
        return RedirectResponse("/", status_code=303)

    async def gate(request: Request) -> Person | Response:
        me = await current(request)
        if me is None:
            return login_first(request)
        if request.session.get("must_change"):
            return RedirectResponse("/password", status_code=303)
        return me

    async def unit_gate(request: Request, action: str) -> Person | Response:
        me = await gate(request)
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        if not roles.may(me, action, name):
            return forbidden(request)
        if name not in units:
            return missing(request, "没有这个单位。")
        return me

    async def county_gate(request: Request, action: str) -> Person | Response:
        me = await gate(request)
        if isinstance(me, Person) and not roles.may(me, action):
            return forbidden(request)
        return me

    async def home(request: Request) -> Response:
        me = await gate(request)
        if not isinstance(me, Person):
            return me
        if not roles.may(me, "view_county"):
            return RedirectResponse(f"/units/{me.unit}", status_code=303)
        try:
            rows = await ask("overview", sid=sid(request))
        except Refused as exc:
            return refused(request, exc)
        return render(request, "overview.html.j2", rows=rows)

    async def unit_page(request: Request) -> Response:
        me = await unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        try:
            got = await ask("unit", sid=sid(request), unit=name)
        except Refused as exc:
            return refused(request, exc)
        return render(request, "unit.html.j2", u=got["u"], can=got["can"])

    async def upload_page(request: Request) -> Response:
        me = await unit_gate(request, "upload")
        if not isinstance(me, Person):
            return me
        return render(request, "upload.html.j2", unit=request.path_params["unit"],
                      done=None, error="")

    async def upload(request: Request) -> Response:
        """A zip of the site into the upload area (what SFTP writes; it replaces what was
        there), or single files into one of its folders; checked (by the broker) first."""
        me = await unit_gate(request, "upload")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        quota = units[name]["quota_bytes"]
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > quota + (2 << 20):
            return render(request, "upload.html.j2", 413, unit=name, done=None,
                          error="the zip is larger than the unit's quota")
        form = await request.form(max_files=MAX_SINGLE_FILES, max_fields=6)
        if not _same_token(form.get("csrftoken"), request.scope["csrftoken"]()):
            return Response("CSRF token is missing or wrong", status_code=403)
        singles = [f for f in form.getlist("files")
                   if isinstance(f, StarletteUpload) and f.filename]
        f = form.get("site")
        error, done = "", None
        try:
            if singles:
                # Single files go into a folder of the upload area, next to what is there.
                got = [(str(x.filename), await x.read(quota + 1)) for x in singles]
                done = await ask("upload_files", [d for _, d in got], heavy=True,
                                 sid=sid(request), unit=name,
                                 folder=str(form.get("folder", "")),
                                 names=[n for n, _ in got])
            elif not isinstance(f, StarletteUpload) or not f.filename:
                error = "请选择一个 zip 文件。"
            else:
                data = await f.read(quota + (1 << 20) + 1)
                if len(data) > quota + (1 << 20):
                    raise uploads.UploadError("the zip is larger than the unit's quota")
                done = await ask("upload_zip", [data], heavy=True, sid=sid(request),
                                 unit=name, filename=str(f.filename))
        except Refused as exc:
            return refused(request, exc)
        except (upload_area.LinkInTheWay, GovhostError) as exc:
            error, done = str(exc), None
        finally:
            for x in (*singles, *([f] if isinstance(f, StarletteUpload) else [])):
                await x.close()
        return render(request, "upload.html.j2", 400 if error else 200, unit=name,
                      done=done, error=error)

    async def submit(request: Request) -> Response:
        """Publish the upload area: live at once, or waiting for the unit's review."""
        me = await unit_gate(request, "submit")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        try:
            res = await ask("submit", sid=sid(request), unit=name)
        except Refused as exc:
            return refused(request, exc)
        except GovhostError as exc:
            return render(request, "upload.html.j2", 400, unit=name, done=None,
                          error=str(exc))
        return render(request, "submitted.html.j2", unit=name, res=res)

    async def review_page(request: Request, error: str = "", done: Any = None,
                          status: int = 200) -> Response:
        """A pending (or decided) release: its chain, what it changes, its wording
        findings, and the decision form for the person whose level is waiting."""
        me = await unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, rid = request.path_params["unit"], request.path_params["release"]
        try:
            got = await ask("review_show", sid=sid(request), unit=name, release=rid)
        except Refused as exc:
            return refused(request, exc, "没有这个版本。")
        r = got["r"]
        return render(request, "review.html.j2", status, unit=name, r=r, title=got["title"],
                      error=error, done=done,
                      steps={s["level"]: s for s in (r["review"] or {}).get("steps", [])},
                      may_decide=got["may_decide"], why_not=got["why_not"])

    async def review_decide(request: Request) -> Response:
        me = await unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, rid = request.path_params["unit"], request.path_params["release"]
        if not (roles.may(me, "review_unit", name) or roles.may(me, "review_county", name)):
            return forbidden(request)
        form = await request.form()
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return await review_page(request, "请选择通过或退回。", status=400)
        try:
            done = await ask("review_decide", sid=sid(request), unit=name, release=rid,
                             approve=decision == "approve",
                             comment=str(form.get("comment", "")))
        except Refused as exc:
            return refused(request, exc, "没有这个版本。")
        except GovhostError as exc:
            return await review_page(request, str(exc), status=400)
        return await review_page(request, done=done)

    async def preview_open(request: Request) -> Response:
        """A signed link to the release on the unit's preview host, issued to this person
        (audited): the browser is sent there at once; the link ends after
        `console.preview_minutes`. Issuing is a POST with the form's token (a GET, which any
        page can make a browser send, changes nothing: it leads to the review page)."""
        me = await unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, rid = request.path_params["unit"], request.path_params["release"]
        try:
            if request.method == "GET":
                await ask("review_show", sid=sid(request), unit=name, release=rid)
                return RedirectResponse(f"/units/{name}/reviews/{rid}", status_code=303)
            link_ = await ask("preview_link", sid=sid(request), unit=name, release=rid)
        except Refused as exc:
            return refused(request, exc, "没有这个版本。")
        except GovhostError as exc:
            return missing(request, str(exc))
        return RedirectResponse(str(link_["url"]), status_code=303)

    async def rollback_propose(request: Request) -> Response:
        """An editor proposes an earlier release; it waits for the rollback's chain."""
        me = await unit_gate(request, "propose_rollback")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        form = await request.form()
        try:
            done = await ask("rollback_propose", sid=sid(request), unit=name,
                             release=str(form.get("release", "")))
        except Refused as exc:
            return refused(request, exc)
        except GovhostError as exc:
            return render(request, "error.html.j2", 400, code=400, message=str(exc))
        return RedirectResponse(f"/units/{name}/rollbacks/{done['proposal']}",
                                status_code=303)

    async def rollback_page(request: Request, error: str = "", done: Any = None,
                            status: int = 200) -> Response:
        me = await unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, pid = request.path_params["unit"], request.path_params["proposal"]
        try:
            got = await ask("rollback_show", sid=sid(request), unit=name, proposal=pid)
        except Refused as exc:
            return refused(request, exc, "没有这个回滚申请。")
        p = got["p"]
        return render(request, "rollback.html.j2", status, unit=name, p=p,
                      title=got["title"], error=error, done=done,
                      steps={s["level"]: s for s in p["review"]["steps"]},
                      may_decide=got["may_decide"], why_not=got["why_not"])

    async def rollback_decide(request: Request) -> Response:
        me = await unit_gate(request, "confirm_rollback")
        if not isinstance(me, Person):
            return me
        name, pid = request.path_params["unit"], request.path_params["proposal"]
        form = await request.form()
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return await rollback_page(request, "请选择通过或退回。", status=400)
        try:
            done = await ask("rollback_decide", sid=sid(request), unit=name, proposal=pid,
                             approve=decision == "approve",
                             comment=str(form.get("comment", "")))
        except Refused as exc:
            return refused(request, exc, "没有这个回滚申请。")
        except GovhostError as exc:
            return await rollback_page(request, str(exc), status=400)
        return await rollback_page(request, done=done)

    async def request_site(request: Request) -> Response:
        """A unit without a site asks for one (no account needed: it has none yet). The form
        is checked as `govhost validate` checks a manifest; a good one is queued for the
        county and the unit gets a secret link to follow it."""
        blank = dict.fromkeys(request_form.FIELDS, "")
        hint = facts["domain"]
        if request.method == "GET":
            return render(request, "request.html.j2", v=blank, problems={}, done=None,
                          domain_hint=hint)
        form = await request.form(max_files=0, max_fields=len(request_form.FIELDS) + 2)
        req = request_form.SiteRequest.from_form(form)
        try:
            res = await ask("request_submit", values=dict(req.values), source=source(request))
        except GovhostError as exc:
            return render(request, "request.html.j2", 429, v=req.values,
                          problems={"": [str(exc)]}, done=None, domain_hint=hint)
        if not res["ok"]:
            return render(request, "request.html.j2", 400, v=req.values,
                          problems=res["problems"], done=None, domain_hint=hint)
        return render(request, "request.html.j2", v=blank, problems={}, done=res,
                      domain_hint=hint,
                      follow=f"/requests/{res['id']}/status?k={res['secret']}")

    async def request_status(request: Request) -> Response:
        rec = await ask("request_status", rid=request.path_params["rid"],
                        secret=request.query_params.get("k", ""))
        if rec is None:
            return missing(request, "没有这个申请。")
        return render(request, "request_status.html.j2", r=rec,
                      host=f"{rec['name']}.{facts['domain']}")

    async def request_queue(request: Request) -> Response:
        me = await county_gate(request, "decide_requests")
        if not isinstance(me, Person):
            return me
        try:
            rows = await ask("request_list", sid=sid(request))
        except Refused as exc:
            return refused(request, exc)
        return render(request, "requests.html.j2", rows=rows)

    async def request_decide(request: Request) -> Response:
        """The operator's view of one request: the manifest, its plan, and the decision."""
        me = await county_gate(request, "decide_requests")
        if not isinstance(me, Person):
            return me
        rid = request.path_params["rid"]
        done, error, status = None, "", 200
        try:
            if request.method == "POST":
                form = await request.form()
                decision = str(form.get("decision", ""))
                try:
                    if decision == "approve":
                        done = await ask("request_approve", sid=sid(request), rid=rid,
                                         shown=str(form.get("manifest_sha256", "")))
                    elif decision == "return":
                        done = await ask("request_return", sid=sid(request), rid=rid,
                                         comment=str(form.get("comment", "")))
                    else:
                        error, status = "请选择批准或退回。", 400
                except Refused:
                    raise
                except GovhostError as exc:
                    error, status = str(exc), 400
            r = await ask("request_show", sid=sid(request), rid=rid)
        except Refused as exc:
            return refused(request, exc, "没有这个申请。")
        return render(request, "request_decide.html.j2", status, r=r, done=done, error=error,
                      domain=facts["domain"])

    async def people_page(request: Request, unit: str, status: int = 200,
                          **ctx: Any) -> Response:
        got = await ask("people_list", sid=sid(request), unit=unit)
        return render(request, "people.html.j2", status, unit=unit, rows=got["rows"],
                      title=got["title"], keys=got["keys"],
                      **{"error": "", "done": None, **ctx})

    async def enrol(request: Request) -> Response:
        """The person's own link: set the password, take the second factor's key once."""
        token = request.path_params["token"]
        error, got = "", None
        if request.method == "POST":
            form = await request.form()
            new, again = str(form.get("new", "")), str(form.get("again", ""))
            if new != again:
                error = "两次输入的新密码不一致。"
            else:
                try:
                    await ask("enrol", heavy=True, token=token, new=new)
                    return RedirectResponse("/login", status_code=303)      # done: log in
                except PeopleError as exc:
                    error = str(exc)
        got = await ask("enrolment", token=token)      # the form (again, with what was wrong)
        if got is None:
            return missing(request, "这个链接已经用过、已过期或不存在。请联系本单位管理员。")
        return render(request, "enrol.html.j2", 400 if error else 200, issued=got,
                      error=error, token=token)

    async def unit_people(request: Request) -> Response:
        """The unit admin's page: the unit's people and roles, and its SFTP keys."""
        me = await unit_gate(request, "manage_people")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        try:
            if request.method == "GET":
                return await people_page(request, name)
            form = await request.form()
            action, who = str(form.get("action", "")), str(form.get("person", ""))
            try:
                if action == "add":
                    done = await ask("person_add", sid=sid(request), unit=name,
                                     name=str(form.get("name", "")),
                                     display=str(form.get("display", "")),
                                     email=str(form.get("email", "")),
                                     role=str(form.get("role", "")))
                else:
                    done = await ask("person_act", sid=sid(request), unit=name, person=who,
                                     action=action)
            except (PeopleError, mail.MailError) as exc:
                return await people_page(request, name, 400, error=str(exc))
            return await people_page(request, name, done=done)
        except Refused as exc:
            return refused(request, exc)

    async def unit_sftp_keys(request: Request) -> Response:
        me = await unit_gate(request, "manage_people")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        form = await request.form()
        lines = [k.strip() for k in str(form.get("keys", "")).splitlines() if k.strip()]
        try:
            try:
                done = await ask("sftp_keys", sid=sid(request), unit=name, lines=lines)
            except Refused:
                raise
            except GovhostError as exc:
                return await people_page(request, name, 400, error=str(exc))
            return await people_page(request, name, done=(
                "SFTP keys changed and applied" if done["applied"] else
                "SFTP keys changed; apply did not complete: "
                f"{done.get('error') or done['result']}"))
        except Refused as exc:
            return refused(request, exc)

    async def upload_script(request: Request) -> Response:
        return Response(UPLOAD_JS, media_type="text/javascript",
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    async def stylesheet(request: Request) -> Response:
        return Response(STYLESHEET, media_type="text/css",
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    app = Starlette(routes=[
        Route("/", home),
        Route("/static/console.css", stylesheet),
        Route("/static/upload.js", upload_script),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/password", password, methods=["GET", "POST"]),
        Route("/request", request_site, methods=["GET", "POST"]),
        Route("/requests", request_queue, methods=["GET"]),
        Route("/requests/{rid:int}", request_decide, methods=["GET", "POST"]),
        Route("/requests/{rid:int}/status", request_status, methods=["GET"]),
        Route("/units/{unit}", unit_page),
        Route("/units/{unit}/people", unit_people, methods=["GET", "POST"]),
        Route("/enrol/{token}", enrol, methods=["GET", "POST"]),
        Route("/units/{unit}/sftp-keys", unit_sftp_keys, methods=["POST"]),
        Route("/units/{unit}/upload", upload_page, methods=["GET"]),
        Route("/units/{unit}/upload", upload, methods=["POST"]),
        Route("/units/{unit}/submit", submit, methods=["POST"]),
        Route("/units/{unit}/reviews/{release}", review_page, methods=["GET"]),
        Route("/units/{unit}/reviews/{release}", review_decide, methods=["POST"]),
        Route("/units/{unit}/preview/{release}", preview_open, methods=["GET", "POST"]),
        Route("/units/{unit}/rollbacks", rollback_propose, methods=["POST"]),
        Route("/units/{unit}/rollbacks/{proposal:int}", rollback_page, methods=["GET"]),
        Route("/units/{unit}/rollbacks/{proposal:int}", rollback_decide, methods=["POST"]),
    ], middleware=[Middleware(SessionMiddleware, secret_key=facts["keys"]["session"],
                              session_cookie=f"{prefix}govhost-session",
                              max_age=SESSION_HOURS * 3600, same_site="strict",
                              https_only=secure)])
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


def _same_token(sent: Any, expected: str) -> bool:
    return isinstance(sent, str) and bool(sent) and hmac.compare_digest(sent, expected)


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
