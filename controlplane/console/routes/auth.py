"""Logging in and out, the password change, and a new person's enrolment link."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import Refused
from controlplane.console.pages import Pages
from controlplane.people.roles import PeopleError
from controlplane.people.store import DEVICE_DAYS


def safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def routes(p: Pages) -> list[Route]:
    device_cookie = f"{p.prefix}govhost-device"

    async def login_page(request: Request) -> Response:
        return p.render(request, "login.html.j2", error="", wait=0, name="",
                        next=safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", "")).strip()
        result = await p.ask("login", heavy=True, name=name,
                             password=str(form.get("password", "")),
                             code=str(form.get("code", "")), source=p.source(request),
                             device=request.cookies.get(device_cookie, "")[:100])
        if not result["ok"]:
            return p.render(request, "login.html.j2", 401, error=result["code"],
                            wait=int(result["wait"] + 0.999), name=name,
                            next=safe_next(str(form.get("next", ""))))
        request.session.clear()
        request.session.update({"sid": result["sid"], "must_change": result["must_change"]})
        target = "/password" if result["must_change"] else \
            safe_next(str(form.get("next", "")))
        resp = p.go(target)
        if result.get("device"):          # this browser, known from now on for this person
            resp.set_cookie(device_cookie, result["device"], max_age=DEVICE_DAYS * 86400,
                            path="/", secure=p.secure, httponly=True, samesite="strict")
        return resp

    async def logout(request: Request) -> Response:
        """Ends every session of the person (a copied cookie included), not only this one."""
        if p.sid(request):
            try:
                await p.ask("logout", sid=p.sid(request))
            except Refused:
                pass
        request.session.clear()
        return p.go("/login")

    async def password(request: Request) -> Response:
        """The one page a person who owes a password change may see (no `needs`: that gate
        would send them here)."""
        me = await p.current(request)
        if me is None:
            return p.login_first(request)
        if request.method == "GET":
            return p.render(request, "password.html.j2", error="")
        form = await request.form()
        new = str(form.get("new", ""))
        if new != str(form.get("again", "")):
            return p.render(request, "password.html.j2", 400, error="两次输入的新密码不一致。")
        try:
            await p.ask("password", heavy=True, sid=p.sid(request),
                        old=str(form.get("old", "")), new=new, source=p.source(request))
        except Refused as exc:
            return p.refused(request, exc)
        except PeopleError as exc:
            return p.render(request, "password.html.j2", 400, error=str(exc))
        # Every other session of the person ended with the change; this one goes on.
        request.session["must_change"] = False
        return p.go("/")

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
                    await p.ask("enrol", heavy=True, token=token, new=new)
                    return p.go("/login")      # done: log in
                except PeopleError as exc:
                    error = str(exc)
        got = await p.ask("enrolment", token=token)    # the form (again, with what was wrong)
        if got is None:
            return p.missing(request, "这个链接已经用过、已过期或不存在。请联系本单位管理员。")
        return p.render(request, "enrol.html.j2", 400 if error else 200, issued=got,
                        error=error, token=token)

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/password", password, methods=["GET", "POST"]),
        Route("/enrol/{token}", enrol, methods=["GET", "POST"]),
    ]
