"""The console as an ASGI application (Starlette): sessions, CSRF, login, and the pages.

- Sessions are signed cookies (Starlette's SessionMiddleware, itsdangerous) that end after
  `SESSION_HOURS` and after `IDLE_MINUTES` without a request. CSRF is asgi-csrf's signed
  double-submit token, in a hidden field of every form (no JavaScript needed). Both cookies
  are `__Host-` cookies when served over HTTPS: a unit's own site on a sibling name
  (`jiaoyu.<county domain>`) can run PHP and set cookies for the county domain, and the
  `__Host-` prefix is what keeps it from planting a session or a token here.
- Every route checks `roles.may` for the unit it is on: a person of one unit gets 403 on
  every page of another, whether that unit exists or not.
- Pages call the same functions as the CLI (views.py); nothing here runs a second copy of
  status, publish or review.
"""
from __future__ import annotations

import hmac
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

import anyio
import anyio.to_thread
import jinja2
from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from controlplane.console import guard, i18n, views
from controlplane.content import releases, upload_area, uploads
from controlplane.core import mail, paths, secrets
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.units import console_host, preview_host
from controlplane.onboarding import form as request_form
from controlplane.onboarding import keys as unit_keys
from controlplane.onboarding import queue as requests_queue
from controlplane.people import roles
from controlplane.people.roles import PeopleError, Person
from controlplane.people.store import ENROL_HOURS, People

SESSION_HOURS = 8
MAX_SINGLE_FILES = 200          # files chosen at once in the browser
IDLE_MINUTES = 30
HEAVY_AT_ONCE = 2               # password hashes and zip checks at once (2 cores)
HEADERS = guard.HEADERS
STYLESHEET = (Path(__file__).parent / "static" / "console.css").read_bytes()
UPLOAD_JS = (Path(__file__).parent / "static" / "upload.js").read_bytes()
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.TEMPLATES)),
                          autoescape=True, undefined=jinja2.StrictUndefined)
_env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) \
    if ts else "-"


def build(county: County, secure: bool = True,
          unit_view: Callable[[County, str], Mapping[str, Any]] = views.unit,
          behind_nginx: bool = False) -> guard.Guard:
    """The console of `county`. `secure`: served over HTTPS (the cookies say so);
    `unit_view`: what a unit's page shows (views.unit: the live status through the nodes);
    `behind_nginx`: take only requests that carry the nodes' proxy secret (guard.py)."""
    inv = county.inv
    prefix = "__Host-" if secure else ""

    def people() -> People:
        return People(county.open_state(), inv.secret, inv.cluster.name)

    limiter: list[anyio.CapacityLimiter] = []

    async def heavy(work: Callable[[], Any]) -> Any:
        """Password hashing and zip checks: in worker threads, at most HEAVY_AT_ONCE at a
        time, so a flood of logins or uploads queues there while every page still answers."""
        if not limiter:
            limiter.append(anyio.CapacityLimiter(HEAVY_AT_ONCE))
        return await anyio.to_thread.run_sync(work, limiter=limiter[0])

    def render(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        """A page with the security headers; a page whose form leads to its unit's preview
        host (a review's preview button: a POST answered with a redirect there) says so in
        its Content-Security-Policy, which otherwise keeps forms on the console."""
        lang = i18n.pick(request.query_params.get("lang"), request.cookies.get("lang"),
                         request.headers.get("accept-language"))
        html = _env.get_template(f"console/{template}").render(
            _=i18n.gettext(lang), lang=lang, csrftoken=request.scope["csrftoken"](),
            me=request.state.person if hasattr(request.state, "person") else None,
            county=inv.cluster.name, path=request.url.path,
            preview=inv.cluster.console is not None, **ctx)
        headers = HEADERS
        if template in ("review.html.j2",) and inv.cluster.console is not None:
            host = preview_host(inv, ctx["unit"])
            headers = {**HEADERS, "Content-Security-Policy": HEADERS[
                "Content-Security-Policy"].replace(
                    "form-action 'self'", f"form-action 'self' https://{host} http://{host}")}
        resp = HTMLResponse(html, status_code=status, headers=headers)
        if request.query_params.get("lang") in i18n.LANGUAGES:
            resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="strict",
                            secure=secure, httponly=True)
        return resp

    def current(request: Request) -> Person | None:
        """The logged-in person, or None (no session, expired, idle, disabled)."""
        s = request.session
        now = time.time()
        name = s.get("user")
        if not name or now - s.get("since", 0) > SESSION_HOURS * 3600 \
                or now - s.get("seen", 0) > IDLE_MINUTES * 60:
            s.clear()
            return None
        p = people()
        try:
            person = p.get(name)
            ended = p.sessions_after(name) > s.get("since", 0)
        finally:
            p.st.close()
        if person is None or person.disabled or ended:
            s.clear()
            return None
        s["seen"] = now
        request.state.person = person
        return person

    def login_first(request: Request) -> Response:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    def forbidden(request: Request) -> Response:
        return render(request, "error.html.j2", 403, code=403,
                      message="无权访问此页面。")

    async def login_page(request: Request) -> Response:
        return render(request, "login.html.j2", error="", wait=0, name="",
                      next=_safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()
        def check() -> Any:
            p = people()
            try:
                return p.login(name, str(form.get("password", "")), str(form.get("code", "")),
                               request.client.host if request.client else "-")
            finally:
                p.st.close()
        result = await heavy(check)        # argon2: never in the event loop
        if not result.ok:
            return render(request, "login.html.j2", 401, error=result.code,
                          wait=int(result.wait + 0.999), name=name,
                          next=_safe_next(str(form.get("next", ""))))
        request.session.clear()
        now = time.time()
        request.session.update({"user": name, "since": now, "seen": now,
                                "must_change": result.must_change})
        target = "/password" if result.must_change else _safe_next(str(form.get("next", "")))
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request) -> Response:
        """Ends every session of the person (a copied cookie included), not only this one."""
        me = current(request)
        if me is not None:
            p = people()
            try:
                p.end_sessions(me.name)
            finally:
                p.st.close()
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def password(request: Request) -> Response:
        me = current(request)
        if me is None:
            return login_first(request)
        if request.method == "GET":
            return render(request, "password.html.j2", error="")
        form = await request.form()
        new = str(form.get("new", ""))
        if new != str(form.get("again", "")):
            return render(request, "password.html.j2", 400, error="两次输入的新密码不一致。")
        def change() -> str:
            p = people()
            try:
                p.change_password(me.name, str(form.get("old", "")), new,
                                  request.client.host if request.client else "-")
                return ""
            except PeopleError as exc:
                return str(exc)
            finally:
                p.st.close()
        error = await heavy(change)          # argon2: never in the event loop
        if error:
            return render(request, "password.html.j2", 400, error=error)
        # Every other session of the person ended with the change; this one goes on.
        request.session["since"] = time.time()
        request.session["must_change"] = False
        return RedirectResponse("/", status_code=303)

    def gate(request: Request) -> Person | Response:
        me = current(request)
        if me is None:
            return login_first(request)
        if request.session.get("must_change"):
            return RedirectResponse("/password", status_code=303)
        return me

    async def home(request: Request) -> Response:
        me = gate(request)
        if not isinstance(me, Person):
            return me
        if not roles.may(me, "view_county"):
            return RedirectResponse(f"/units/{me.unit}", status_code=303)
        return render(request, "overview.html.j2", rows=views.overview(county))

    async def unit_page(request: Request) -> Response:
        me = unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        return render(request, "unit.html.j2", u=unit_view(county, name),
                      can={a: roles.may(me, a, name) for a in roles.ACTIONS})

    def unit_gate(request: Request, action: str) -> Person | Response:
        me = gate(request)
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        if not roles.may(me, action, name):
            return forbidden(request)
        if county.inv.tenant(name) is None:
            return render(request, "error.html.j2", 404, code=404, message="没有这个单位。")
        return me

    async def upload_page(request: Request) -> Response:
        me = unit_gate(request, "upload")
        if not isinstance(me, Person):
            return me
        return render(request, "upload.html.j2", unit=request.path_params["unit"],
                      done=None, error="")

    async def upload(request: Request) -> Response:
        """A zip of the site into the upload area (what SFTP writes; it replaces what was
        there), or single files into one of its folders; checked first."""
        me = unit_gate(request, "upload")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        t = county.inv.tenant(name)
        limits = uploads.Limits(max_bytes=county.inv.quota_bytes(t))
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > limits.max_bytes + (2 << 20):
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
                got = [(str(x.filename), await x.read(limits.max_bytes + 1)) for x in singles]
                tar, paths_, size = await heavy(lambda: uploads.files_to_tar(
                    got, str(form.get("folder", "")), limits))
                await run_in_threadpool(upload_area.put, county, name, tar, False)
                done = {"files": len(paths_), "bytes": size, "paths": paths_, "zip": ""}
            elif not isinstance(f, StarletteUpload) or not f.filename:
                error = "请选择一个 zip 文件。"
            else:
                data = await f.read(limits.max_bytes + (1 << 20) + 1)
                if len(data) > limits.max_bytes + (1 << 20):
                    raise uploads.UploadError("the zip is larger than the unit's quota")
                tar, files, size = await heavy(lambda: uploads.to_tar(data, limits))
                await run_in_threadpool(upload_area.put, county, name, tar, True)
                done = {"files": files, "bytes": size, "zip": f.filename, "paths": []}
        except upload_area.LinkInTheWay as exc:
            # A link the unit made in its upload area: refused, and kept for the county.
            error, done = str(exc), None
            with county.state() as st:
                st.audit("content.upload.refused", name, {"reason": "link", "error": error},
                         who=me.name)
        except GovhostError as exc:
            error, done = str(exc), None
        finally:
            for x in (*singles, *([f] if isinstance(f, StarletteUpload) else [])):
                await x.close()
        if done:
            with county.state() as st:
                st.audit("content.upload", name, {"files": done["files"],
                                                  "bytes": done["bytes"],
                                                  "paths": done["paths"][:50]}, who=me.name)
        return render(request, "upload.html.j2", 400 if error else 200, unit=name,
                      done=done, error=error)

    async def submit(request: Request) -> Response:
        """Publish the upload area: live at once, or waiting for the unit's review."""
        me = unit_gate(request, "submit")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        try:
            res = await run_in_threadpool(releases.publish, county, name, by=me.name)
        except GovhostError as exc:
            return render(request, "upload.html.j2", 400, unit=name, done=None,
                          error=str(exc))
        return render(request, "submitted.html.j2", unit=name, res=res)

    def review_kinds(me: Person, unit: str) -> frozenset[str]:
        """The levels of a review chain `me` may decide on `unit`."""
        return frozenset(k for k, action in (("unit", "review_unit"),
                                             ("county", "review_county"))
                         if roles.may(me, action, unit))

    async def review_page(request: Request, error: str = "", done: Any = None,
                          status: int = 200) -> Response:
        """A pending (or decided) release: its chain, what it changes, its wording
        findings, and the decision form for the person whose level is waiting."""
        me = unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, rid = request.path_params["unit"], request.path_params["release"]
        try:
            r = releases.review_show(county, name, rid)
        except GovhostError:
            return render(request, "error.html.j2", 404, code=404, message="没有这个版本。")
        chain = r["review"]
        why_not = None
        if chain is not None and r["status"] == "pending":
            why_not = releases.refusal(county, releases.chain_of(county, name, rid),
                                       me.name, review_kinds(me, name))
        return render(request, "review.html.j2", status, unit=name, r=r,
                      title=county.inv.tenant(name).title, error=error, done=done,
                      steps={s["level"]: s for s in (chain or {}).get("steps", [])},
                      may_decide=r["status"] == "pending" and why_not is None,
                      why_not=why_not)

    async def review_decide(request: Request) -> Response:
        me = unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, rid = request.path_params["unit"], request.path_params["release"]
        kinds = review_kinds(me, name)
        if not kinds:
            return forbidden(request)
        form = await request.form()
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return await review_page(request, "请选择通过或退回。", status=400)
        bad = request_form.check_text("comment", str(form.get("comment", "")), True)
        if bad:
            return await review_page(request, bad, status=400)
        try:
            done = await run_in_threadpool(
                lambda: releases.decide(county, name, rid, decision == "approve", by=me.name,
                                        kinds=kinds, comment=str(form.get("comment", "")),
                                        four_eyes=True))
        except GovhostError as exc:
            return await review_page(request, str(exc), status=400)
        return await review_page(request, done=done)

    async def preview_open(request: Request) -> Response:
        """A signed link to the release on the preview host, issued to this person (audited):
        the browser is sent there at once; the link ends after `console.preview_minutes`.
        Issuing is a POST with the form's token (a GET, which any page can make a browser
        send, changes nothing: it leads to the review page and its button)."""
        me = unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, rid = request.path_params["unit"], request.path_params["release"]
        if request.method == "GET":
            try:
                releases.review_show(county, name, rid)
            except GovhostError:
                return render(request, "error.html.j2", 404, code=404, message="没有这个版本。")
            return RedirectResponse(f"/units/{name}/reviews/{rid}", status_code=303)
        try:
            link = await run_in_threadpool(releases.preview_link, county, name, rid, me.name)
        except GovhostError as exc:
            return render(request, "error.html.j2", 404, code=404, message=str(exc))
        return RedirectResponse(str(link["url"]), status_code=303)

    async def rollback_propose(request: Request) -> Response:
        """An editor proposes an earlier release; it waits for the rollback's chain."""
        me = unit_gate(request, "propose_rollback")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        form = await request.form()
        try:
            done = await run_in_threadpool(releases.propose_rollback, county, name,
                                           str(form.get("release", "")), me.name)
        except GovhostError as exc:
            return render(request, "error.html.j2", 400, code=400, message=str(exc))
        return RedirectResponse(f"/units/{name}/rollbacks/{done['proposal']}",
                                status_code=303)

    async def rollback_page(request: Request, error: str = "", done: Any = None,
                            status: int = 200) -> Response:
        me = unit_gate(request, "view_unit")
        if not isinstance(me, Person):
            return me
        name, pid = request.path_params["unit"], request.path_params["proposal"]
        found = next((p for p in releases.rollback_proposals(county, name)
                      if p["id"] == pid), None)
        if found is None:
            return render(request, "error.html.j2", 404, code=404, message="没有这个回滚申请。")
        why_not = None
        if found["status"] == "pending":
            why_not = releases.refusal(county, releases.rollback_chain(county, name, pid),
                                       me.name, review_kinds(me, name))
        return render(request, "rollback.html.j2", status, unit=name, p=found,
                      title=county.inv.tenant(name).title, error=error, done=done,
                      steps={s["level"]: s for s in found["review"]["steps"]},
                      may_decide=found["status"] == "pending" and why_not is None
                      and roles.may(me, "confirm_rollback", name), why_not=why_not)

    async def rollback_decide(request: Request) -> Response:
        me = unit_gate(request, "confirm_rollback")
        if not isinstance(me, Person):
            return me
        name, pid = request.path_params["unit"], request.path_params["proposal"]
        form = await request.form()
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return await rollback_page(request, "请选择通过或退回。", status=400)
        bad = request_form.check_text("comment", str(form.get("comment", "")), True)
        if bad:
            return await rollback_page(request, bad, status=400)
        try:
            done = await run_in_threadpool(
                lambda: releases.decide_rollback(county, name, pid, decision == "approve",
                                                 me.name, review_kinds(me, name),
                                                 str(form.get("comment", ""))))
        except GovhostError as exc:
            return await rollback_page(request, str(exc), status=400)
        return await rollback_page(request, done=done)

    async def request_site(request: Request) -> Response:
        """A unit without a site asks for one (no account needed: it has none yet). The form
        is checked as `govhost validate` checks a manifest; a good one is queued for the
        county and the unit gets a secret link to follow it."""
        blank = dict.fromkeys(request_form.FIELDS, "")
        hint = county.inv.cluster.domain
        if request.method == "GET":
            return render(request, "request.html.j2", v=blank, problems={}, done=None,
                          domain_hint=hint)
        form = await request.form(max_files=0, max_fields=len(request_form.FIELDS) + 2)
        req = request_form.SiteRequest.from_form(form)
        source = request.client.host if request.client else "-"
        try:
            res = await run_in_threadpool(requests_queue.submit, county, req, source)
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
        rec = requests_queue.for_requester(county, request.path_params["rid"],
                                           request.query_params.get("k", ""))
        if rec is None:
            return render(request, "error.html.j2", 404, code=404, message="没有这个申请。")
        return render(request, "request_status.html.j2", r=rec,
                      host=f"{rec['name']}.{county.inv.cluster.domain}")

    def county_gate(request: Request, action: str) -> Person | Response:
        me = gate(request)
        if isinstance(me, Person) and not roles.may(me, action):
            return forbidden(request)
        return me

    async def request_queue(request: Request) -> Response:
        me = county_gate(request, "decide_requests")
        if not isinstance(me, Person):
            return me
        return render(request, "requests.html.j2",
                      rows=requests_queue.listing(county, None))

    async def request_decide(request: Request) -> Response:
        """The operator's view of one request: the manifest, its plan, and the decision."""
        me = county_gate(request, "decide_requests")
        if not isinstance(me, Person):
            return me
        rid = request.path_params["rid"]
        done, error, status = None, "", 200
        if request.method == "POST":
            form = await request.form()
            decision = str(form.get("decision", ""))
            try:
                if decision == "approve":
                    done = await run_in_threadpool(requests_queue.approve, county, rid,
                                                   me.name, str(form.get("manifest_sha256",
                                                                         "")))
                elif decision == "return":
                    bad = request_form.check_text("comment", str(form.get("comment", "")),
                                                  True)
                    if bad:
                        raise GovhostError(bad)
                    done = requests_queue.send_back(county, rid, me.name,
                                                    str(form.get("comment", "")))
                else:
                    error, status = "请选择批准或退回。", 400
            except GovhostError as exc:
                error, status = str(exc), 400
        try:
            r = await run_in_threadpool(requests_queue.show, county, rid)
        except GovhostError:
            return render(request, "error.html.j2", 404, code=404, message="没有这个申请。")
        return render(request, "request_decide.html.j2", status, r=r, done=done, error=error,
                      domain=county.inv.cluster.domain)

    def people_page(request: Request, unit: str, status: int = 200, **ctx: Any) -> Response:
        p = people()
        try:
            rows = [{"person": q, **p.status(q.name)} for q in p.all() if q.unit == unit]
        finally:
            p.st.close()
        return render(request, "people.html.j2", status, unit=unit, rows=rows,
                      title=county.inv.tenant(unit).title,
                      keys=unit_keys.listing(county, unit),
                      **{"error": "", "done": None, **ctx})

    def mail_settings() -> Any:
        if inv.cluster.alerts is None:
            raise PeopleError("the county has no mail server (cluster.yaml `alerts:`), so the "
                              "console cannot send the link to set a password; ask the county "
                              "to do it with `govhost user add` or `govhost user reset`")
        return inv.cluster.alerts

    async def enrolment_mail(request: Request, p: People, person: Person, me: Person,
                             what: str) -> str:
        """A unit admin made or reset `person`: the one-time link to set the password (and
        take the second factor) goes to the person's own address, never to the admin's
        screen; the county is told. What the page says afterwards."""
        settings = mail_settings()
        verb = "添加" if what == "add" else "重置"
        done = "made" if what == "add" else "reset"
        # The county first: no link leaves unless the county has been told of the account.
        try:
            await anyio.to_thread.run_sync(lambda: mail.send(
                settings, list(settings.county),
                f"{inv.cluster.name}网站管理：{person.name} 的账号已{verb}",
                f"{me.name}（{me.unit or '县'}）{verb}了账号 {person.name}（{person.display}，"
                f"{person.unit}，{', '.join(sorted(person.roles))}）；设置密码的链接将发到 "
                f"{person.email}。\n"))
            token = p.enrolment_link(person.name, me.name)
            link = f"{'https' if secure else 'http'}://{console_host(inv)}/enrol/{token}"
            await anyio.to_thread.run_sync(lambda: mail.send(
                settings, [person.email], f"{inv.cluster.name}网站管理：设置您的密码",
                f"{person.display}：\n\n{me.display}（{me.name}）{verb}了您在"
                f"{inv.cluster.name}网站管理平台的账号 {person.name}。\n请在 {ENROL_HOURS} "
                f"小时内打开下面的链接，设置您自己的密码"
                f"{'和动态验证码' if person.needs_second_factor else ''}"
                f"（链接只能使用一次）：\n\n{link}\n\n如果您不知道此事，请不要打开链接，"
                "并告诉县里的运维人员。\n"))
        except mail.MailError as exc:
            raise mail.MailError(
                f"{person.name} was {done}, but no link reached {person.email}: {exc}. "
                f"Reset {person.name} here once the county's mail server works, or ask the "
                f"county to do it with `govhost user reset {person.name}`") from None
        with county.state() as st:
            st.audit("user.enrolment_mailed", person.name, {"to": person.email, "why": what},
                     who=me.name)
        return f"{person.name}: a link to set the password was mailed to {person.email}"

    async def enrol(request: Request) -> Response:
        """The person's own link: set the password, take the second factor's key once."""
        token = request.path_params["token"]

        def look() -> Any:
            p = people()
            try:
                if request.method == "POST":
                    return p.enrol(token, new) if new == again else "mismatch"
                return p.enrolment(token)
            finally:
                p.st.close()
        new = again = ""
        if request.method == "POST":
            form = await request.form()
            new, again = str(form.get("new", "")), str(form.get("again", ""))
        error = ""
        try:
            got = await heavy(look)
        except PeopleError as exc:
            got, error = None, str(exc)
        if got == "mismatch":
            got, error = None, "两次输入的新密码不一致。"
        if isinstance(got, str):
            return RedirectResponse("/login", status_code=303)      # done: log in
        if got is None and error:
            p_ = people()
            try:
                got = p_.enrolment(token)           # the form again, with what was wrong
            finally:
                p_.st.close()
        if got is None:
            return render(request, "error.html.j2", 404, code=404,
                          message="这个链接已经用过、已过期或不存在。请联系本单位管理员。")
        return render(request, "enrol.html.j2", 400 if error else 200, issued=got,
                      error=error, token=token)

    async def unit_people(request: Request) -> Response:
        """The unit admin's page: the unit's people and roles, and its SFTP keys."""
        me = unit_gate(request, "manage_people")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        if request.method == "GET":
            return people_page(request, name)
        form = await request.form()
        action, who = str(form.get("action", "")), str(form.get("person", ""))
        p = people()
        try:
            if action == "add":
                role = str(form.get("role", ""))
                if role not in roles.UNIT_ROLES:
                    raise PeopleError(f"choose one of {', '.join(sorted(roles.UNIT_ROLES))}")
                for key in ("name", "display", "email"):
                    bad = request_form.check_text(key, str(form.get(key, "")))
                    if bad:
                        raise PeopleError(bad)
                address = str(form.get("email", "")).strip()
                if not _EMAIL.fullmatch(address):
                    raise PeopleError("give the person's own e-mail address: the link to set "
                                      "their password is mailed there, and only there")
                mail_settings()
                added = p.add(str(form.get("name", "")).strip(),
                              str(form.get("display", "")), name, [role],
                              frozenset(t.name for t in county.inv.tenants), address,
                              by=me.name)
                return people_page(request, name, done=await enrolment_mail(
                    request, p, added.person, me, "add"))
            target = p.get(who)
            if target is None or target.unit != name:
                return forbidden(request)        # never a person of another unit
            if action in ("disable", "enable"):
                if target.name == me.name:
                    raise PeopleError("you cannot disable yourself; ask another admin of "
                                      "the unit or the county")
                p.set_disabled(who, action == "disable", by=me.name)
                return people_page(request, name, done=f"{who}: {action}d")
            if action == "reset":
                if not _EMAIL.fullmatch(target.email or ""):
                    raise PeopleError(f"{who} has no e-mail address for the link; ask the "
                                      f"county to reset the account (`govhost user reset`)")
                mail_settings()
                p.reset(who, by=me.name)          # the new credentials are never shown here
                return people_page(request, name, done=await enrolment_mail(
                    request, p, target, me, "reset"))
            raise PeopleError("unknown action")
        except (PeopleError, mail.MailError) as exc:
            return people_page(request, name, 400, error=str(exc))
        finally:
            p.st.close()

    async def unit_sftp_keys(request: Request) -> Response:
        me = unit_gate(request, "manage_people")
        if not isinstance(me, Person):
            return me
        name = request.path_params["unit"]
        form = await request.form()
        lines = [k.strip() for k in str(form.get("keys", "")).splitlines() if k.strip()]
        try:
            done = await run_in_threadpool(unit_keys.replace, county, name, lines, me.name)
        except GovhostError as exc:
            return people_page(request, name, 400, error=str(exc))
        return people_page(request, name, done=(
            "SFTP keys changed and applied" if done["applied"] else
            f"SFTP keys changed; apply did not complete: {done.get('error') or done['result']}"))

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
    ], middleware=[Middleware(SessionMiddleware,
                              secret_key=secrets.derive(inv.secret, "console-session", 64),
                              session_cookie=f"{prefix}govhost-session",
                              max_age=SESSION_HOURS * 3600, same_site="strict",
                              https_only=secure)])
    protected = asgi_csrf(app, signing_secret=secrets.derive(inv.secret, "console-csrf", 64),
                          cookie_name=f"{prefix}csrftoken", cookie_secure=secure,
                          cookie_samesite="Strict",
                          always_protect={"/login", "/logout", "/password", "/request"},
                          always_set_cookie=False, skip_if_scope=_checks_its_own_token)
    console = inv.cluster.console
    upload_limit = (console.max_upload_mb if console else 1024) << 20
    outer = guard.Guard(protected, guard.proxy_secret(inv.secret) if behind_nginx else None,
                        upload_limit + (2 << 20))
    outer.routes = app.routes          # type: ignore[attr-defined]  # for the tests
    return outer


def _checks_its_own_token(scope: Mapping[str, Any]) -> bool:
    """The upload form is multipart with a file: asgi-csrf's own multipart reader does not
    work with today's python-multipart, so that route (exactly that route, no other path
    that happens to end the same way) compares the form's token with asgi-csrf's signed
    cookie token itself, after Starlette has read the form."""
    return scope["method"] == "POST" and bool(guard.UPLOAD_ROUTE.match(scope["path"]))


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9-]+\.)+[A-Za-z]{2,63}")


def _same_token(sent: Any, expected: str) -> bool:
    return isinstance(sent, str) and bool(sent) and hmac.compare_digest(sent, expected)


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
