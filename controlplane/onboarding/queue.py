"""The queue of site requests: checked as `govhost validate` checks, decided by an operator.

A request is checked against the county as it is now: its manifest is checked with the
county's manifests as the loader checks them (trial.py; so a name another unit holds, a
reserved name or a bad e-mail are refused with the field), and the plan it would cause is
computed as `govhost plan` does. An operator's approval checks it again (the county may have
changed since), writes the manifest into inventory/tenants/ (atomically, never over an
existing file) and applies; a return closes it with a comment the requester reads on the
request's own page (a secret link given at submission).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from controlplane.converge import service
from controlplane.core.county import County
from controlplane.core.errors import GovhostError, Problem
from controlplane.onboarding import form, trial

PER_SOURCE_PER_HOUR = 5
_FILE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RequestError(GovhostError):
    """A request that cannot be taken or decided; nothing was changed."""


@dataclass
class Checked:
    """A request checked against the county: its manifest, problems and the plan."""

    doc: dict[str, Any]
    yaml: str
    problems: list[Problem] = field(default_factory=list)
    plan: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_field(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.problems:
            msg = f"{p.field}: {p.message}" if p.field else p.message
            out.setdefault(form.form_field(p), []).append(msg)
        return out


def check(county: County, req: form.SiteRequest) -> Checked:
    """The request's manifest validated with the county's inventory, and its plan."""
    doc, problems = form.manifest(req)
    text = form.to_yaml(doc)
    name = doc["name"]
    if not _FILE_NAME.fullmatch(name):
        problems.append(Problem("form", "name", f"{name!r} is not a second-level name: "
                                "lower-case letters, digits and hyphens, e.g. jiaoyu"))
        return Checked(doc, text, problems)
    if (county.root / "tenants" / f"{name}.yaml").exists():
        problems.append(Problem("form", "name", f"{name}.{county.inv.cluster.domain} is "
                                "taken by a unit already"))
        return Checked(doc, text, problems)
    tried = trial.run(county, name, text)
    return Checked(doc, text, problems + tried.problems,
                   None if problems or tried.problems else tried.plan)


def submit(county: County, req: form.SiteRequest, source: str) -> dict[str, Any]:
    """Queue a request that checks out; its id and the secret for its status page (given
    once). Refused with the problems by field when it does not, or when one address sends
    more than PER_SOURCE_PER_HOUR requests an hour."""
    with county.state() as st:
        if st.requests_from(source, time.time() - 3600) >= PER_SOURCE_PER_HOUR:
            raise RequestError(f"more than {PER_SOURCE_PER_HOUR} requests from {source} in "
                               "an hour; try again later or call the county's data center")
    checked = check(county, req)
    if not checked.ok:
        return {"ok": False, "problems": checked.by_field(), "yaml": checked.yaml}
    secret = secrets.token_urlsafe(18)
    with county.state() as st:
        rid = st.add_site_request(checked.doc["name"], checked.yaml, req.values,
                                  checked.doc["contact"]["name"], source, _hash(secret))
    return {"ok": True, "id": rid, "secret": secret, "name": checked.doc["name"]}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def for_requester(county: County, rid: int, secret: str) -> dict[str, Any] | None:
    """The request, for whoever holds its secret (None otherwise: no such request or a wrong
    secret look the same)."""
    with county.state() as st:
        rec = st.site_request(rid)
    if rec is None or not hmac.compare_digest(rec["token"], _hash(secret)):
        return None
    return _public(rec)


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("token", "form")}


def listing(county: County, status: str | None = "pending") -> list[dict[str, Any]]:
    with county.state() as st:
        return [_public(r) for r in st.site_requests(status)]


def show(county: County, rid: int) -> dict[str, Any]:
    """A request with its manifest checked again against today's county, and its plan."""
    with county.state() as st:
        rec = st.site_request(rid)
    if rec is None:
        raise RequestError(f"no site request {rid}; `govhost request list` shows them")
    out = _public(rec)
    out["manifest_sha256"] = text_digest(rec["manifest"])
    if rec["status"] == "pending":
        checked = _recheck(county, rec)
        out.update(problems=checked.by_field(), plan=checked.plan)
    return out


def _recheck(county: County, rec: dict[str, Any]) -> Checked:
    return check(county, form.SiteRequest(json.loads(rec["form"])))


def text_digest(text: str) -> str:
    """What the decision page sends back: the manifest text the operator was shown."""
    return hashlib.sha256(text.encode()).hexdigest()


def approve(county: County, rid: int, by: str, shown: str,
            progress: Callable[[str, str, str], None] | None = None) -> dict[str, Any]:
    """Land the request's manifest in inventory/tenants/ and apply. The operator approves
    the exact text shown (`shown`: its text_digest): the text that lands is that text, and
    it must be what the form's values make today. The manifest is checked again first; an
    apply that fails leaves the manifest in place (the county's next apply goes on from
    there) and says so."""
    with county.exclusive("site-requests", lambda _: RequestError(
            "another operator is deciding a site request; try again in a moment")):
        with county.state() as st:
            rec = st.site_request(rid)
        if rec is None or rec["status"] != "pending":
            raise RequestError(f"site request {rid} is not waiting for a decision")
        checked = _recheck(county, rec)
        if not checked.ok:
            raise RequestError("the request no longer checks out: " + "; ".join(
                f"{p.field}: {p.message}" for p in checked.problems))
        if not hmac.compare_digest(shown, text_digest(rec["manifest"])) or \
                rec["manifest"] != checked.yaml:
            raise RequestError("the request changed since you looked at it; look again: "
                               "open the request, read the manifest shown, then approve")
        name = checked.doc["name"]
        target = county.root / "tenants" / f"{name}.yaml"
        try:
            trial.write(target, rec["manifest"], replace=False)
        except FileExistsError:
            raise RequestError(f"{target} exists already") from None
        with county.state() as st:
            if not st.decide_site_request(rid, "approved", by, ""):
                target.unlink()
                raise RequestError(f"site request {rid} was decided by someone else")
    county.refresh()
    try:
        result = service.apply(County(county.root, county.state_dir), progress=progress)
    except GovhostError as exc:
        return {"id": rid, "status": "approved", "name": name, "file": str(target),
                "applied": False, "error": str(exc)}
    return {"id": rid, "status": "approved", "name": name, "file": str(target),
            "applied": result.ok,
            "result": result.result, "run_id": result.run_id}


def send_back(county: County, rid: int, by: str, comment: str) -> dict[str, Any]:
    """Return a request to the unit with a comment that says what to change."""
    comment = comment.strip()
    if not comment:
        raise RequestError("say what the unit should change: a returned request needs a "
                           "comment")
    with county.state() as st:
        if not st.decide_site_request(rid, "returned", by, comment[:2000]):
            raise RequestError(f"site request {rid} is not waiting for a decision")
    return {"id": rid, "status": "returned", "comment": comment[:2000]}
