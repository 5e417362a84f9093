"""The console's privileged half: a fixed set of typed requests, each checked here again.

The console faces the internet; the control plane holds the cluster's SSH key, secret and
state. They are split (docs/console.md, "Two processes"): the web process (app.py) runs as
its own account without keys and can read nothing of the state; for everything else it asks
this broker, which runs as root beside it, over a Unix socket only that account may open
(transport.py). The broker trusts nothing the web process says about who is asking:

- It keeps the sessions. A login (name, password, second factor, checked here) gives the web
  process an unguessable session id; every later request names that id, and the broker finds
  the person, their roles and whether the session has ended (idle, too old, logged out,
  password changed elsewhere, person disabled) itself.
- Each request (`OPS`) declares the action it needs (`roles.may`) and whether that action is
  on the unit the request names; the broker checks it, the unit's existence and every
  argument's type before anything runs, and the form rules (`form.check_text`) on every text.
- A web process taken over by an attacker can therefore do only what the people who log in
  through it while it is taken may do, and nothing on behalf of anyone else: no state read,
  no SSH, no secret, no other unit.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from controlplane.console import views
from controlplane.content import releases, upload_area, uploads
from controlplane.core import mail, secrets
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.units import console_host, preview_zone
from controlplane.messages import collect, inbox
from controlplane.messages.deadlines import today_in_county
from controlplane.onboarding import form as request_form
from controlplane.onboarding import keys as unit_keys
from controlplane.onboarding import queue as requests_queue
from controlplane.people import roles
from controlplane.people.roles import PeopleError, Person
from controlplane.people.store import ENROL_HOURS, People

HEAVY_AT_ONCE = 2               # password hashes and zip checks at once (2 cores)
NODE_READS = 2                  # reads of every node's messages at once (SSH)
MAX_SINGLE_FILES = 200
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9-]+\.)+[A-Za-z]{2,63}")


class Refused(GovhostError):
    """The broker's own refusals, by kind: the web process turns them into pages."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind        # login, password, forbidden, missing, bad


@dataclass(frozen=True)
class Op:
    """One request the web process may make: the action it needs (None: anyone, e.g. the
    login form; "person": anyone logged in), whether the action is on the request's `unit`,
    and the type of every argument."""
    name: str
    needs: str | None
    on_unit: bool
    args: Mapping[str, type]
    fn: Callable[..., Any]
    heavy: bool = False
    blobs: bool = False


OPS: dict[str, Op] = {}


def op(needs: str | None, on_unit: bool = False, heavy: bool = False, blobs: bool = False,
       **args: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the function below as the request of its name: it needs `needs` (see Op)."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__
        OPS[name] = Op(name, needs, on_unit, {**({"unit": str} if on_unit else {}), **args},
                       fn, heavy, blobs)
        return fn
    return register


def person_dict(p: Person) -> dict[str, Any]:
    return {"name": p.name, "display": p.display, "unit": p.unit, "roles": sorted(p.roles),
            "email": p.email, "disabled": p.disabled,
            "needs_second_factor": p.needs_second_factor}


def person_from(d: Mapping[str, Any]) -> Person:
    return Person(d["name"], d["display"], d["unit"], frozenset(d["roles"]), d["email"],
                  d["disabled"])


def plain(value: Any) -> Any:
    """`value` as JSON takes it: Persons and dataclasses as dicts, sets sorted."""
    if isinstance(value, Person):
        return person_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Broker:
    """The privileged side of one county's console (see the module's docstring)."""

    def __init__(self, county: County, secure: bool = True,
                 unit_view: Callable[[County, str], Mapping[str, Any]] = views.unit,
                 read_messages: inbox.Reader | None = None,
                 clock: Callable[[], float] = time.time):
        self.county = county
        self.secure = secure
        self.unit_view = unit_view
        self.clock = clock
        # Reading the nodes' messages is SSH to every node: at most NODE_READS at once, on a
        # bound of its own (a hung node must not hold up logins behind the password hashes).
        reads = threading.BoundedSemaphore(NODE_READS)
        source = read_messages or collect.collect    # the nodes' messages (tests: a stand-in)

        def read(county: County, **which: Any) -> Any:
            with reads:
                return source(county, **which)
        self.read_messages = read
        self._heavy = threading.BoundedSemaphore(HEAVY_AT_ONCE)

    # -- the one entry point ---------------------------------------------------------------
    def call(self, name: str, args: Mapping[str, Any], blobs: list[bytes] = ()) -> Any:
        """Run request `name` with `args` (JSON values) and `blobs` (uploaded files) after
        checking who asks and what they may do; its answer as JSON values."""
        spec = OPS.get(name)
        if spec is None:
            raise Refused("bad", f"no such request: {name!r}")
        args = dict(args)
        sid = args.pop("sid", None)
        if spec.needs is not None and not isinstance(sid, str):
            raise Refused("login", "log in first")
        want = set(spec.args)
        if set(args) != want:
            raise Refused("bad", f"{name}: expected {sorted(want)}, got {sorted(args)}")
        for key, typ in spec.args.items():
            if not isinstance(args[key], typ) or (typ is int and isinstance(args[key], bool)):
                raise Refused("bad", f"{name}: {key} must be {typ.__name__}")
            if typ is list and not all(isinstance(x, str) for x in args[key]):
                raise Refused("bad", f"{name}: {key} must be a list of text")
        if blobs and not spec.blobs:
            raise Refused("bad", f"{name} takes no files")
        me, must_change = None, False
        if spec.needs is not None:
            me, must_change = self._person(str(sid), allow_must_change=spec.needs == "password")
            unit = args.get("unit") if spec.on_unit else None
            if spec.needs not in ("person", "password") and not roles.may(
                    me, spec.needs, unit):
                raise Refused("forbidden", "you may not do this")
            if spec.on_unit and self.county.inv.tenant(unit) is None:
                raise Refused("missing", "no such unit")
        kwargs = {**args, **({"me": me, "sid": sid} if spec.needs is not None else {}),
                  # what the session says besides the person, for the requests that take it
                  **({"must_change": must_change} if spec.needs == "password" else {}),
                  **({"blobs": list(blobs)} if spec.blobs else {})}
        if spec.heavy:
            with self._heavy:
                return plain(spec.fn(self, **kwargs))
        return plain(spec.fn(self, **kwargs))

    # -- sessions --------------------------------------------------------------------------
    def _people(self) -> People:
        inv = self.county.inv
        return People(self.county.open_state(), inv.secret, inv.cluster.name)

    def _person(self, sid: str, allow_must_change: bool = False) -> tuple[Person, bool]:
        """The session's person, and whether they must change their password first."""
        found = self._guarded(lambda p: p.session(sid))
        if found is None:
            raise Refused("login", "log in first")
        person, must_change = found
        if must_change and not allow_must_change:
            raise Refused("password", "change your password first")
        return person, must_change

    def _guarded(self, fn: Callable[[People], Any]) -> Any:
        p = self._people()
        try:
            return fn(p)
        finally:
            p.st.close()

    def _audit(self, action: str, target: str, detail: Mapping[str, Any], who: str) -> None:
        with self.county.state() as st:
            st.audit(action, target, dict(detail), who=who)

    def _unit_title(self, unit: str) -> str:
        t = self.county.inv.tenant(unit)
        return t.title if t is not None else unit


def _check(key: str, value: str, multiline: bool = False) -> None:
    bad = request_form.check_text(key, value, multiline)
    if bad:
        raise GovhostError(bad)


# -- what the web process needs to know ------------------------------------------------------
DEFAULT_LISTEN = "127.0.0.1:8090"


def listen_of(inv: Any) -> str:
    """Where the console listens: cluster.yaml's console address and port, which every
    node's nginx proxies console.<domain> to."""
    return inv.cluster.console.listen if inv.cluster.console else DEFAULT_LISTEN


@op(None)
def facts(b: Broker) -> dict[str, Any]:
    """The county as the pages show it, and the keys the web process signs its cookies with
    (each derived one way from the cluster secret, which never leaves here)."""
    inv = b.county.inv
    console = inv.cluster.console
    return {
        "county": inv.cluster.name, "domain": inv.cluster.domain, "listen": listen_of(inv),
        "console_host": console_host(inv) if console else "",
        "preview_zone": preview_zone(inv) if console else "",
        "max_upload_mb": console.max_upload_mb if console else 1024,
        "units": {t.name: {"title": t.title, "quota_bytes": inv.quota_bytes(t)}
                  for t in inv.tenants},
        "keys": {"session": secrets.derive(inv.secret, "console-session", 64),
                 "csrf": secrets.derive(inv.secret, "console-csrf", 64),
                 "proxy": secrets.console_proxy(inv.secret)},
    }


# -- logging in and out ----------------------------------------------------------------------
@op(None, heavy=True, name=str, password=str, code=str, source=str, device=str)
def login(b: Broker, name: str, password: str, code: str, source: str,
          device: str) -> dict[str, Any]:
    """`device`: the browser's device cookie (People.login); a new one comes back for a
    browser not yet known for this person."""
    if request_form.check_text("name", name) or not _source_ok(source) or len(device) > 100:
        raise Refused("bad", "login: a name on one line and the visitor's address")
    result = b._guarded(lambda p: p.login(name, password, code, source, session=True,
                                          device=device))
    if not result.ok:
        return {"ok": False, "code": result.code, "wait": result.wait}
    return {"ok": True, "must_change": result.must_change, "sid": result.session,
            "device": result.device}


def _source_ok(source: str) -> bool:
    """The visitor's address as the web process saw it (an address, "-" for no client):
    short and on one line, since it is kept in the login records."""
    return 0 < len(source) <= 64 and request_form.check_text("source", source) is None


@op("password")
def whoami_any(b: Broker, me: Person, sid: str, must_change: bool) -> dict[str, Any]:
    """Who is logged in, also while they must still change their password."""
    return {**person_dict(me), "must_change": must_change}


@op("password")
def logout(b: Broker, me: Person, sid: str, must_change: bool) -> None:
    """Ends every session of the person (a copied cookie included), not only this one."""
    b._guarded(lambda p: p.end_sessions(me.name))


@op("password", heavy=True, old=str, new=str, source=str)
def password(b: Broker, me: Person, sid: str, must_change: bool, old: str, new: str,
             source: str) -> None:
    """Every other session of the person ends with the change; this one goes on."""
    if not _source_ok(source):
        raise Refused("bad", "password: the visitor's address")

    def change(p: People) -> None:
        p.session_renewed(sid, me.name, p.change_password(me.name, old, new, source))
    b._guarded(change)


# -- units: pages, uploads, publishing, review -----------------------------------------------
@op("view_county", page=int)
def overview(b: Broker, me: Person, sid: str, page: int) -> dict[str, Any]:
    return views.overview_page(views.overview(b.county), page)


@op("view_unit", on_unit=True)
def unit(b: Broker, me: Person, sid: str, unit: str) -> dict[str, Any]:
    return {"u": b.unit_view(b.county, unit),
            "can": {a: roles.may(me, a, unit) for a in roles.ACTIONS}}


def _put(b: Broker, me: Person, unit: str, make: Callable[[uploads.Limits], tuple],
         replace: bool) -> tuple:
    t = b.county.inv.tenant(unit)
    limits = uploads.Limits(max_bytes=b.county.inv.quota_bytes(t))
    tar, what, size = make(limits)
    try:
        upload_area.put(b.county, unit, tar, replace)
    except upload_area.LinkInTheWay as exc:
        # A link the unit made in its upload area: refused, and kept for the county.
        b._audit("content.upload.refused", unit, {"reason": "link", "error": str(exc)},
                 me.name)
        raise
    return what, size


@op("upload", on_unit=True, heavy=True, blobs=True, folder=str, names=list)
def upload_files(b: Broker, me: Person, sid: str, unit: str, folder: str, names: list,
                 blobs: list[bytes]) -> dict[str, Any]:
    """Single files into one folder of the upload area, next to what is there."""
    if len(names) != len(blobs) or not names or len(names) > MAX_SINGLE_FILES:
        raise Refused("bad", "one name for each file, at most "
                             f"{MAX_SINGLE_FILES} files")
    for key, value in (("folder", folder), *(("file name", n) for n in names)):
        _check(key, value)     # no bidi override or line separator in a name people read
    paths, size = _put(b, me, unit, lambda limits: uploads.files_to_tar(
        list(zip(names, blobs)), folder, limits), False)
    done = {"files": len(paths), "bytes": size, "paths": paths, "zip": ""}
    b._audit("content.upload", unit, {"files": len(paths), "bytes": size,
                                      "paths": paths[:50]}, me.name)
    return done


@op("upload", on_unit=True, heavy=True, blobs=True, filename=str)
def upload_zip(b: Broker, me: Person, sid: str, unit: str, filename: str,
               blobs: list[bytes]) -> dict[str, Any]:
    """A zip of the site into the upload area (what SFTP writes; it replaces what was
    there), checked first."""
    if len(blobs) != 1:
        raise Refused("bad", "one zip file")
    _check("file name", filename)
    t = b.county.inv.tenant(unit)
    if len(blobs[0]) > b.county.inv.quota_bytes(t) + (1 << 20):
        raise uploads.UploadError("the zip is larger than the unit's quota")
    files, size = _put(b, me, unit, lambda limits: uploads.to_tar(blobs[0], limits), True)
    b._audit("content.upload", unit, {"files": files, "bytes": size, "paths": []}, me.name)
    return {"files": files, "bytes": size, "zip": filename, "paths": []}


@op("submit", on_unit=True)
def submit(b: Broker, me: Person, sid: str, unit: str) -> dict[str, Any]:
    return releases.publish(b.county, unit, by=me.name)


def _kinds(me: Person, unit: str) -> frozenset[str]:
    """The levels of a review chain `me` may decide on `unit`."""
    return frozenset(k for k, action in (("unit", "review_unit"), ("county", "review_county"))
                     if roles.may(me, action, unit))


@op("view_unit", on_unit=True, release=str)
def review_show(b: Broker, me: Person, sid: str, unit: str, release: str) -> dict[str, Any]:
    """A release, its chain, and whether `me` may decide its waiting level (and if not, why)."""
    try:
        r = releases.review_show(b.county, unit, release)
    except GovhostError:
        raise Refused("missing", "no such release") from None
    why_not = None
    if r["review"] is not None and r["status"] == "pending":
        why_not = releases.refusal(b.county, releases.chain_of(b.county, unit, release),
                                   me.name, _kinds(me, unit))
    return {"r": r, "why_not": why_not, "title": b._unit_title(unit),
            "may_decide": r["status"] == "pending" and why_not is None}


@op("view_unit", on_unit=True, release=str, approve=bool, comment=str)
def review_decide(b: Broker, me: Person, sid: str, unit: str, release: str, approve: bool,
                  comment: str) -> dict[str, Any]:
    kinds = _kinds(me, unit)
    if not kinds:
        raise Refused("forbidden", "you may not review this unit")
    _check("comment", comment, True)
    return releases.decide(b.county, unit, release, approve, by=me.name, kinds=kinds,
                           comment=comment, four_eyes=True)


@op("view_unit", on_unit=True, release=str)
def preview_link(b: Broker, me: Person, sid: str, unit: str, release: str) -> dict[str, Any]:
    """A signed link to the release on the unit's preview host, in `me`'s name (audited)."""
    return releases.preview_link(b.county, unit, release, me.name)


@op("propose_rollback", on_unit=True, release=str)
def rollback_propose(b: Broker, me: Person, sid: str, unit: str, release: str
                     ) -> dict[str, Any]:
    return releases.propose_rollback(b.county, unit, release, me.name)


@op("view_unit", on_unit=True, proposal=int)
def rollback_show(b: Broker, me: Person, sid: str, unit: str, proposal: int
                  ) -> dict[str, Any]:
    found = next((p for p in releases.rollback_proposals(b.county, unit)
                  if p["id"] == proposal), None)
    if found is None:
        raise Refused("missing", "no such rollback proposal")
    why_not = None
    if found["status"] == "pending":
        why_not = releases.refusal(b.county, releases.rollback_chain(b.county, unit, proposal),
                                   me.name, _kinds(me, unit))
    return {"p": found, "why_not": why_not, "title": b._unit_title(unit),
            "may_decide": found["status"] == "pending" and why_not is None
            and roles.may(me, "confirm_rollback", unit)}


@op("confirm_rollback", on_unit=True, proposal=int, approve=bool, comment=str)
def rollback_decide(b: Broker, me: Person, sid: str, unit: str, proposal: int, approve: bool,
                    comment: str) -> dict[str, Any]:
    _check("comment", comment, True)
    return releases.decide_rollback(b.county, unit, proposal, approve, me.name,
                                    _kinds(me, unit), comment)


# -- citizens' messages (docs/messages.md) ---------------------------------------------------
def _today(b: Broker) -> Any:
    return today_in_county(b.clock())


@op("read_messages", on_unit=True)
def messages_list(b: Broker, me: Person, sid: str, unit: str) -> dict[str, Any]:
    """The unit's messages, read from the nodes now: what it must answer and what it
    forwarded, each with its due date, standing and the review words that hold it. No
    text, name or contact."""
    found, failed = inbox.refresh(b.county, b.read_messages, unit=unit)
    held = {m.number: list(m.review_words) for m in found if m.review_words}
    rows = inbox.of_unit(inbox.known(b.county, _today(b), unit=unit), unit)
    return {"rows": [{**e.view(), "held": held.get(e.number, [])}
                     for e in sorted(rows, key=lambda e: e.number, reverse=True)],
            "unreadable": sorted(failed), "title": b._unit_title(unit),
            "units": {t.name: t.title for t in b.county.inv.tenants},
            "can": {a: roles.may(me, a, unit) for a in
                    ("answer_messages", "forward_messages")}}


@op("read_messages", on_unit=True, number=str)
def message_show(b: Broker, me: Person, sid: str, unit: str, number: str) -> dict[str, Any]:
    """One message whole, with the citizen's contact (audited in `me`'s name), its answer or
    the answer waiting for review, and what `me` may do with it."""
    try:
        got = inbox.one(b.county, unit, number, me.name, _today(b), b.read_messages)
    except collect.MessagesError:
        raise Refused("missing", "no such message") from None
    why_not = None
    if got["draft"] is not None:
        why_not = inbox.refusal(b.county, unit, number, me.name, _kinds(me, unit))
    owner = got["entry"]["owner"] == unit
    return {**got, "title": b._unit_title(unit),
            "units": {t.name: t.title for t in b.county.inv.tenants if t.name != unit},
            "may_answer": owner and roles.may(me, "answer_messages", unit)
            and got["answer"] is None and got["draft"] is None,
            "may_forward": owner and roles.may(me, "forward_messages", unit)
            and got["answer"] is None and got["draft"] is None,
            "may_decide": got["draft"] is not None and why_not is None, "why_not": why_not}


@op("answer_messages", on_unit=True, number=str, text=str, publish=bool)
def message_answer(b: Broker, me: Person, sid: str, unit: str, number: str, text: str,
                   publish: bool) -> dict[str, Any]:
    """The unit's answer: given on every node, or kept for the unit's review chain."""
    return inbox.propose(b.county, unit, number, text, publish, me.name, _today(b),
                         b.read_messages)


@op("read_messages", on_unit=True, number=str, approve=bool, comment=str)
def message_decide(b: Broker, me: Person, sid: str, unit: str, number: str, approve: bool,
                   comment: str) -> dict[str, Any]:
    """One level of the review chain of an answer (four eyes: never its writer)."""
    kinds = _kinds(me, unit)
    if not kinds:
        raise Refused("forbidden", "you may not review this unit")
    _check("comment", comment, True)
    return inbox.decide(b.county, unit, number, approve, me.name, kinds, comment,
                        b.read_messages)


@op("forward_messages", on_unit=True, number=str, to=str, reason=str)
def message_forward(b: Broker, me: Person, sid: str, unit: str, number: str, to: str,
                    reason: str) -> dict[str, Any]:
    """Forward a message the unit must answer to the unit that should (转办): its editors
    from the unit's page, an operator from any unit's page (routing a misdirected one)."""
    return inbox.forward(b.county, number, to, reason, me.name, unit, _today(b),
                         b.read_messages)


@op("route_messages", page=int)
def messages_overdue(b: Broker, me: Person, sid: str, page: int) -> dict[str, Any]:
    """The county's overdue list, from the state store alone (no SSH): per unit, how many
    are overdue, alerted and past three months, and the oldest; then every such message,
    oldest first, OVERDUE_PAGE a page."""
    rows = inbox.overdue(b.county, _today(b))
    per_unit: dict[str, dict[str, Any]] = {}
    for e in rows:
        u = per_unit.setdefault(e.owner, {"unit": e.owner, "overdue": 0, "alert": 0,
                                          "veto": 0, "oldest": e.deadline.received})
        u[e.standing] += 1
    pages = max(1, -(-len(rows) // OVERDUE_PAGE))
    page = min(max(page, 1), pages)
    shown = rows[(page - 1) * OVERDUE_PAGE:page * OVERDUE_PAGE]
    return {"rows": [e.view() for e in shown], "total": len(rows), "page": page,
            "pages": pages,
            "per_unit": sorted(({**u, "oldest": u["oldest"].isoformat()}
                                for u in per_unit.values()),
                               key=lambda u: (-u["veto"], -u["alert"], u["oldest"])),
            "units": {t.name: t.title for t in b.county.inv.tenants}}


OVERDUE_PAGE = 100


# -- site requests ---------------------------------------------------------------------------
@op(None, values=dict, source=str)
def request_submit(b: Broker, values: dict, source: str) -> dict[str, Any]:
    if not all(isinstance(v, str) for v in values.values()):
        raise Refused("bad", "request_submit: every field is text")
    return requests_queue.submit(b.county, request_form.SiteRequest.from_form(values), source)


@op(None, rid=int, secret=str)
def request_status(b: Broker, rid: int, secret: str) -> dict[str, Any] | None:
    return requests_queue.for_requester(b.county, rid, secret)


@op("decide_requests")
def request_list(b: Broker, me: Person, sid: str) -> list[dict[str, Any]]:
    return requests_queue.listing(b.county, None)


@op("decide_requests", rid=int)
def request_show(b: Broker, me: Person, sid: str, rid: int) -> dict[str, Any]:
    try:
        return requests_queue.show(b.county, rid)
    except GovhostError:
        raise Refused("missing", "no such request") from None


@op("decide_requests", rid=int, shown=str)
def request_approve(b: Broker, me: Person, sid: str, rid: int, shown: str) -> dict[str, Any]:
    return requests_queue.approve(b.county, rid, me.name, shown)


@op("decide_requests", rid=int, comment=str)
def request_return(b: Broker, me: Person, sid: str, rid: int, comment: str) -> dict[str, Any]:
    _check("comment", comment, True)
    return requests_queue.send_back(b.county, rid, me.name, comment)


# -- a unit's people and SFTP keys -----------------------------------------------------------
@op("manage_people", on_unit=True)
def people_list(b: Broker, me: Person, sid: str, unit: str) -> dict[str, Any]:
    rows = b._guarded(lambda p: [{"person": q, **p.status(q.name)} for q in p.of_unit(unit)])
    return {"rows": rows, "keys": unit_keys.listing(b.county, unit),
            "title": b._unit_title(unit)}


def _mail_settings(b: Broker) -> Any:
    alerts = b.county.inv.cluster.alerts
    if alerts is None:
        raise PeopleError("the county has no mail server (cluster.yaml `alerts:`), so the "
                          "console cannot send the link to set a password; ask the county "
                          "to do it with `govhost user add` or `govhost user reset`")
    return alerts


def _enrolment_mail(b: Broker, p: People, person: Person, me: Person, what: str) -> str:
    """A unit admin made or reset `person`: the one-time link to set the password (and take
    the second factor) goes to the person's own address, never to the admin's screen; the
    county is told first. What the page says afterwards."""
    inv = b.county.inv
    settings = _mail_settings(b)
    verb = "添加" if what == "add" else "重置"
    done = "made" if what == "add" else "reset"
    try:
        mail.send(settings, list(settings.county),
                  f"{inv.cluster.name}网站管理：{person.name} 的账号已{verb}",
                  f"{me.name}（{me.unit or '县'}）{verb}了账号 {person.name}（{person.display}，"
                  f"{person.unit}，{', '.join(sorted(person.roles))}）；设置密码的链接将发到 "
                  f"{person.email}。\n")
        token = p.enrolment_link(person.name, me.name)
        link = f"{'https' if b.secure else 'http'}://{console_host(inv)}/enrol/{token}"
        mail.send(settings, [person.email], f"{inv.cluster.name}网站管理：设置您的密码",
                  f"{person.display}：\n\n{me.display}（{me.name}）{verb}了您在"
                  f"{inv.cluster.name}网站管理平台的账号 {person.name}。\n请在 {ENROL_HOURS} "
                  f"小时内打开下面的链接，设置您自己的密码"
                  f"{'和动态验证码' if person.needs_second_factor else ''}"
                  f"（链接只能使用一次）：\n\n{link}\n\n如果您不知道此事，请不要打开链接，"
                  "并告诉县里的运维人员。\n")
    except mail.MailError as exc:
        raise mail.MailError(
            f"{person.name} was {done}, but no link reached {person.email}: {exc}. "
            f"Reset {person.name} here once the county's mail server works, or ask the "
            f"county to do it with `govhost user reset {person.name}`") from None
    b._audit("user.enrolment_mailed", person.name, {"to": person.email, "why": what}, me.name)
    return f"{person.name}: a link to set the password was mailed to {person.email}"


@op("manage_people", on_unit=True, name=str, display=str, email=str, role=str)
def person_add(b: Broker, me: Person, sid: str, unit: str, name: str, display: str,
               email: str, role: str) -> str:
    if role not in roles.UNIT_ROLES:
        raise PeopleError(f"choose one of {', '.join(sorted(roles.UNIT_ROLES))}")
    for key, value in (("name", name), ("display", display), ("email", email)):
        bad = request_form.check_text(key, value)
        if bad:
            raise PeopleError(bad)
    address = email.strip()
    if not _EMAIL.fullmatch(address):
        raise PeopleError("give the person's own e-mail address: the link to set their "
                          "password is mailed there, and only there")
    _mail_settings(b)

    def add(p: People) -> str:
        added = p.add(name.strip(), display, unit, [role],
                      frozenset(t.name for t in b.county.inv.tenants), address, by=me.name)
        return _enrolment_mail(b, p, added.person, me, "add")
    return b._guarded(add)


@op("manage_people", on_unit=True, person=str, action=str)
def person_act(b: Broker, me: Person, sid: str, unit: str, person: str, action: str) -> str:
    def act(p: People) -> str:
        target = p.get(person)
        if target is None or target.unit != unit:
            raise Refused("forbidden", "never a person of another unit")
        if action in ("disable", "enable"):
            if target.name == me.name:
                raise PeopleError("you cannot disable yourself; ask another admin of the "
                                  "unit or the county")
            p.set_disabled(person, action == "disable", by=me.name)
            return f"{person}: {action}d"
        if action == "reset":
            if not _EMAIL.fullmatch(target.email or ""):
                raise PeopleError(f"{person} has no e-mail address for the link; ask the "
                                  "county to reset the account (`govhost user reset`)")
            _mail_settings(b)
            p.reset(person, by=me.name)          # the new credentials are never shown
            return _enrolment_mail(b, p, target, me, "reset")
        raise PeopleError("unknown action")
    return b._guarded(act)


@op("manage_people", on_unit=True, lines=list)
def sftp_keys(b: Broker, me: Person, sid: str, unit: str, lines: list) -> dict[str, Any]:
    return unit_keys.replace(b.county, unit, lines, me.name)


# -- enrolment (the person's own link) -------------------------------------------------------
@op(None, token=str)
def enrolment(b: Broker, token: str) -> Any:
    return b._guarded(lambda p: p.enrolment(token))


@op(None, heavy=True, token=str, new=str)
def enrol(b: Broker, token: str, new: str) -> str:
    return b._guarded(lambda p: p.enrol(token, new))
