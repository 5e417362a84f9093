"""Putting a unit's site into its upload area from the browser, and publishing it."""
from __future__ import annotations

import hmac
from typing import Any

from starlette.datastructures import UploadFile as StarletteUpload
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.console.broker import MAX_SINGLE_FILES, Refused
from controlplane.console.pages import STATIC, Pages
from controlplane.content import upload_area, uploads
from controlplane.core.errors import GovhostError
from controlplane.people.roles import Person

UPLOAD_JS = (STATIC / "upload.js").read_bytes()


def same_token(sent: Any, expected: str) -> bool:
    return isinstance(sent, str) and bool(sent) and hmac.compare_digest(sent, expected)


def routes(p: Pages) -> list[Route]:
    @p.needs("upload", unit=True)
    async def upload_page(request: Request, me: Person) -> Response:
        return p.render(request, "upload.html.j2", unit=request.path_params["unit"],
                        done=None, error="")

    @p.needs("upload", unit=True)
    async def upload(request: Request, me: Person) -> Response:
        """A zip of the site into the upload area (what SFTP writes; it replaces what was
        there), or single files into one of its folders; checked (by the broker) first.
        This route checks the form's CSRF token itself (app._checks_its_own_token)."""
        name = request.path_params["unit"]
        quota = p.units[name]["quota_bytes"]
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > quota + (2 << 20):
            return p.render(request, "upload.html.j2", 413, unit=name, done=None,
                            error="the zip is larger than the unit's quota")
        form = await request.form(max_files=MAX_SINGLE_FILES, max_fields=6)
        if not same_token(form.get("csrftoken"), request.scope["csrftoken"]()):
            return Response("CSRF token is missing or wrong", status_code=403)
        singles = [f for f in form.getlist("files")
                   if isinstance(f, StarletteUpload) and f.filename]
        f = form.get("site")
        error, done = "", None
        try:
            if singles:
                # Single files go into a folder of the upload area, next to what is there.
                got = [(str(x.filename), await x.read(quota + 1)) for x in singles]
                done = await p.ask("upload_files", [d for _, d in got], heavy=True,
                                   sid=p.sid(request), unit=name,
                                   folder=str(form.get("folder", "")),
                                   names=[n for n, _ in got])
            elif not isinstance(f, StarletteUpload) or not f.filename:
                error = "请选择一个 zip 文件。"
            else:
                data = await f.read(quota + (1 << 20) + 1)
                if len(data) > quota + (1 << 20):
                    raise uploads.UploadError("the zip is larger than the unit's quota")
                done = await p.ask("upload_zip", [data], heavy=True, sid=p.sid(request),
                                   unit=name, filename=str(f.filename))
        except Refused as exc:
            return p.refused(request, exc)
        except (upload_area.LinkInTheWay, GovhostError) as exc:
            error, done = str(exc), None
        finally:
            for x in (*singles, *([f] if isinstance(f, StarletteUpload) else [])):
                await x.close()
        return p.render(request, "upload.html.j2", 400 if error else 200, unit=name,
                        done=done, error=error)

    @p.needs("submit", unit=True)
    async def submit(request: Request, me: Person) -> Response:
        """Publish the upload area: live at once, or waiting for the unit's review."""
        name = request.path_params["unit"]
        try:
            res = await p.ask("submit", sid=p.sid(request), unit=name)
        except Refused as exc:
            return p.refused(request, exc)
        except GovhostError as exc:
            return p.render(request, "upload.html.j2", 400, unit=name, done=None,
                            error=str(exc))
        return p.render(request, "submitted.html.j2", unit=name, res=res)

    async def upload_script(request: Request) -> Response:
        return p.asset(UPLOAD_JS, "text/javascript")

    return [
        Route("/static/upload.js", upload_script),
        Route("/units/{unit}/upload", upload_page, methods=["GET"]),
        Route("/units/{unit}/upload", upload, methods=["POST"]),
        Route("/units/{unit}/submit", submit, methods=["POST"]),
    ]
