"""How the units handle their citizens' messages: who must answer each (the unit written
to, or the one it was forwarded to), by when, answers through the unit's review chain, the
county's overdue list, and the reminder and alert mails.

The messages themselves live on the nodes (collect.py). The control machine keeps an
index of them in the state store (number, unit, day, subject; never the text, name or
contact), refreshed each time the nodes are read (a unit's console list, `govhost messages
list`, the hourly `govhost messages remind`), so the county's overdue list is read from the
state alone, without SSH.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable, Iterable, Mapping

from controlplane.core import mail, paths
from controlplane.core.county import County
from controlplane.core.manifest import MessagesSettings
from controlplane.core.state.messages import MessagesStateError
from controlplane.messages import answers, collect
from controlplane.messages.collect import Message, MessagesError
from controlplane.messages.deadlines import LATE, Deadline, Standing, county_midnight_utc, deadline
from controlplane.people import chains, review
from govhost_node import messages as rules

# collect.collect, or a test's stand-in: (county, number=None, unit=None, placed=()) ->
# (messages, unreadable nodes)
Reader = Callable[..., tuple[list[Message], dict[str, str]]]
REASON_MAX = 200


@dataclass(frozen=True)
class Entry:
    """One message as the units handle it (no text, name or contact)."""
    number: str
    unit: str                   # where the citizen wrote: its page shows the answer
    owner: str                  # the unit that must answer it now
    received: str               # UTC, as the node wrote it
    subject: str
    deadline: Deadline
    standing: Standing
    answered_at: float | None
    draft: int | None           # an answer waiting for the owner's review chain
    forwards: tuple[Mapping[str, Any], ...]

    def view(self) -> dict[str, Any]:
        d = self.deadline
        return {"number": self.number, "unit": self.unit, "owner": self.owner,
                "received": self.received, "day": d.received.isoformat(),
                "subject": self.subject, "due": d.due.isoformat(),
                "veto": d.veto.isoformat(), "standing": self.standing,
                "answered_at": self.answered_at, "draft": self.draft,
                "forwards": [dict(f) for f in self.forwards]}


def entries(index: Iterable[Mapping[str, Any]], answered: Mapping[str, float],
            routes: Mapping[str, list[Mapping[str, Any]]], drafts: Mapping[str, int],
            settings: MessagesSettings, today: date, open_only: bool = False) -> list[Entry]:
    """Every indexed message (`open_only`: every unanswered one) with its owner, deadline
    and standing (pure)."""
    out = []
    # the county's day, so the deadline, is the same for every message of one UTC hour
    # (UTC+8 has whole hours): a county's thousands of messages need a few hundred
    by_hour: dict[str, Deadline] = {}
    for row in index:
        number = row["number"]
        if open_only and number in answered:
            continue
        fwd = tuple(routes.get(number, ()))
        hour = row["received"][:13]
        d = by_hour.get(hour)
        if d is None:
            d = by_hour[hour] = deadline(row["received"], settings)
        out.append(Entry(number=number, unit=row["unit"],
                         owner=fwd[-1]["to_unit"] if fwd else row["unit"],
                         received=row["received"], subject=row["subject"], deadline=d,
                         standing=d.standing(number in answered, today),
                         answered_at=answered.get(number), draft=drafts.get(number),
                         forwards=fwd))
    return out


def refresh(county: County, read: Reader | None = None, number: str | None = None,
            unit: str | None = None, since: str | None = None
            ) -> tuple[list[Message], dict[str, str]]:
    """Read the messages from the nodes (`number`: that one only; `unit`: those its staff
    see, written to it or forwarded to it; `since`: those of that day (YYYYMMDD) or later;
    `read`: collect.collect unless a test stands in for them) and bring the control
    machine's index up to date."""
    if since is not None:
        found, failed = (read or collect.collect)(county, since=since)
    elif unit is None:
        found, failed = (read or collect.collect)(county, number=number)
    else:
        with county.state() as st:
            placed = st.forwarded_to(unit)
        found, failed = (read or collect.collect)(county, unit=unit, placed=placed)
    with county.state() as st:
        st.index_messages({"number": m.number, "unit": m.unit, "received": m.received,
                           "subject": m.subject} for m in found)
    return found, failed


def known(county: County, today: date, open_only: bool = False,
          number: str | None = None, unit: str | None = None) -> list[Entry]:
    """Every message the index holds (`open_only`: unanswered; `number`: that one only;
    `unit`: those written or ever forwarded to it, a superset of what `of_unit` keeps),
    from the state store alone."""
    with county.state() as st:
        if unit is not None:
            index, answered, routes, drafts = st.unit_messages(unit)
        else:
            if number is not None:
                index = st.message_index(number)
                answered = {a["number"]: a["answered_at"]
                            for a in st.message_answers(number=number)}
            elif open_only:         # the answered are left out by the query, not read
                index, answered = st.unanswered(), {}
            else:
                index, answered = st.message_index(), st.answered_at()
            routes = st.routes(number)
            drafts = {d["number"]: d["id"] for d in st.drafts(number, status="pending")}
    return entries(index, answered, routes, drafts, county.inv.cluster.messages, today,
                   open_only)


def of_unit(entries_: Iterable[Entry], unit: str) -> list[Entry]:
    """What a unit's staff see: what it must answer, and what was written to it and
    forwarded on (shown as such)."""
    return [e for e in entries_ if unit in (e.owner, e.unit)]


def overdue(county: County, today: date) -> list[Entry]:
    """The county's overdue list (past the due date, alerted, or vetoed), oldest first,
    from the state store alone. Only messages received at least `due_workdays` days ago
    can be overdue (a working day is a day at least): the rest are not read."""
    settings = county.inv.cluster.messages
    before = county_midnight_utc(today - timedelta(days=settings.due_workdays))
    with county.state() as st:
        index = st.unanswered_before(before)
        routes = st.routes()
        drafts = {d["number"]: d["id"] for d in st.drafts(status="pending")}
    return [e for e in entries(index, {}, routes, drafts, settings, today)
            if e.standing in LATE]


def _find(county: County, number: str, read: Reader | None) -> Message:
    """One message from the nodes, and into the index: a page or an answer reads only its
    own (every message of the county read, sent and merged was 1.8 s a node at 40,000)."""
    found, _ = refresh(county, read, number)
    return collect.find(found, number)


def _entry(county: County, number: str, today: date) -> Entry:
    found = next(iter(known(county, today, number=number)), None)
    if found is None:
        raise MessagesError(f"no message {number!r}")
    return found


def one(county: County, unit: str | None, number: str, by: str, today: date,
        read: Reader | None = None) -> dict[str, Any]:
    """One message whole, with the citizen's contact, for the staff of `unit` when it must
    answer it (None: the county), audited (messages.read); its answer and any answer
    waiting for review. The unit written to, once it forwarded the message on, sees it
    without the name and contact, and not the other unit's answer under review."""
    m = _find(county, number, read)
    e = _entry(county, number, today)
    if unit is not None and unit not in (e.owner, e.unit):
        raise MessagesError(f"no message {number!r}")
    handles = unit is None or unit == e.owner
    with county.state() as st:
        if handles:
            st.audit("messages.read", m.number, {"unit": m.unit, "contact": "shown",
                                                 "as": unit or "county"}, who=by)
        given = next(iter(st.message_answers(number=number)), None)
        pending = [d for d in st.drafts(number) if d["status"] == "pending"] if handles \
            else []
        chain = _chain(st, pending[0]) if pending else None
    shown = {**m.public(), "received_local": m.received_local(),
             **({"contact": m.contact} if handles else {"name": "", "contact": ""})}
    return {"message": shown, "entry": e.view(),
            "answer": {k: given[k] for k in ("answer", "answered_by", "answered_at",
                                             "publish")} if given else None,
            "draft": pending[0] if pending else None,
            "review": chains.chain_view(chain) if chain else None}


def _chain(st: Any, draft: Mapping[str, Any]) -> review.Chain:
    row = st.review_chain(draft["unit"], f"answer:{draft['id']}")
    return chains.chain_from(row, draft["at"], "answer")


def _reason(text: str) -> str:
    try:
        clean = rules.clean(text, multiline=False)
    except ValueError as exc:
        raise MessagesError(f"the reason {exc}") from None
    if not clean or len(clean) > REASON_MAX:
        raise MessagesError(f"give a reason of 1 to {REASON_MAX} characters: the unit it "
                            "goes to reads it")
    return clean


def forward(county: County, number: str, to_unit: str, reason: str, by: str,
            unit: str | None, today: date, read: Reader | None = None
            ) -> dict[str, Any]:
    """Forward an unanswered message to the unit that must answer it (转办). `unit`: the
    unit whose staff forward it (they must be its owner); None: the county routes it."""
    why = _reason(reason)
    _find(county, number, read)
    e = _entry(county, number, today)
    if unit is not None and e.owner != unit:
        raise MessagesError(f"no message {number!r}")
    if county.inv.tenant(to_unit) is None:
        raise MessagesError(f"no unit named {to_unit!r}; `govhost unit list` shows them")
    if to_unit == e.owner:
        raise MessagesError(f"{number} is {to_unit}'s to answer already")
    try:        # answered, or an answer waiting for review: refused in the same transaction
        with county.state() as st:
            st.add_route(number, e.owner, to_unit, why, by)
    except MessagesStateError as exc:
        raise MessagesError(str(exc)) from None
    return {"number": number, "from": e.owner, "to": to_unit, "reason": why}


def _trusted(m: Message, e: Entry) -> None:
    """The nodes' copy must be the message the index knows: its unit, and one content."""
    if m.unit != e.unit or m.differs:
        raise MessagesError(f"{m.number}: the nodes' copies differ or name another unit than "
                            "before; ask the county to look (`govhost messages show`)")


def levels_for(county: County, e: Entry) -> tuple[str, ...]:
    """The review chain of an answer: the answering unit's, and the county's level too
    where the unit written to has one (its site shows the answer)."""
    owner = county.inv.tenant(e.owner)
    levels = list(owner.review.levels) if owner is not None else []
    written = county.inv.tenant(e.unit)
    if written is not None and "county" in written.review.levels and "county" not in levels:
        levels.append("county")
    return tuple(levels)


def propose(county: County, unit: str, number: str, text: str, publish: bool, by: str,
            today: date, read: Reader | None = None) -> dict[str, Any]:
    """A unit's answer: given at once where the answer needs no review (`levels_for`),
    else kept until every level of the chain approves it (`decide`)."""
    body = answers.checked(text)
    m = _find(county, number, read)
    e = _entry(county, number, today)
    if e.owner != unit:
        raise MessagesError(f"no message {number!r}")
    _trusted(m, e)
    levels = levels_for(county, e)
    if not levels:
        done = answers.record(county, m, body, publish, by, owner=unit)
        return {**done, "status": "answered"}
    try:
        with county.state() as st:
            did = st.add_draft(number, unit, body, publish, by, levels)
    except MessagesStateError as exc:
        raise MessagesError(str(exc)) from None
    return {"number": number, "unit": m.unit, "publish": publish, "status": "pending",
            "draft": did, "levels": list(levels)}


def refusal(county: County, unit: str, number: str, who: str,
            kinds: frozenset[str]) -> str | None:
    """Why `who` may not decide the answer waiting on `number` now (four eyes), or None."""
    with county.state() as st:
        pending = [d for d in st.drafts(number, "pending") if d["unit"] == unit]
        if not pending:
            return "no answer is waiting for review"
        chain = _chain(st, pending[0])
        return chain.refusal(who, kinds, True, chains.ties(st, chain, who))


def decide(county: County, unit: str, number: str, approve: bool, by: str,
           kinds: frozenset[str], comment: str, read: Reader | None = None
           ) -> dict[str, Any]:
    """Decide the waiting level of the answer waiting on `number`; the last approval gives
    the answer (on every node), a rejection sends it back to be written again. The nodes
    are read before the last approval is written, so an approval never leaves an answer
    that cannot be given; an answer approved at every level whose giving failed (the state
    or the nodes, later) is given by the next decision on it."""
    with county.state() as st:
        pending = [d for d in st.drafts(number, "pending") if d["unit"] == unit]
        if not pending:
            raise MessagesError(f"{number} has no answer waiting for review")
        draft = pending[0]
        chain = _chain(st, draft)
    if chain.approved and not approve:
        raise MessagesError(f"{number}: this answer is approved at every level and waits to "
                            "be given; approve to give it")
    m = None
    if approve:
        m = _find(county, number, read)
        _trusted(m, _entry(county, number, date.today()))   # (the day: unused here)
    if not chain.approved:
        try:
            with county.state() as st:
                chain, _ = chains.record_step(st, unit, f"answer:{draft['id']}", chain, by,
                                              kinds, approve, review.clean_comment(comment),
                                              True)
                if chain.rejected:
                    st.set_draft_status(draft["id"], "rejected")
        except review.ReviewError as exc:
            raise MessagesError(f"{number}: {exc}") from None
    status = "rejected" if chain.rejected else "pending"
    result: dict[str, Any] = {"number": number, "draft": draft["id"]}
    if chain.approved:
        assert m is not None
        result.update(answers.record(county, m, draft["answer"], draft["publish"],
                                     draft["by"], owner=unit, draft=draft["id"]))
        with county.state() as st:
            st.set_draft_status(draft["id"], "done")
        status = "answered"
    return {**result, "status": status, "review": chains.chain_view(chain)}


Send = Callable[[Any, list[str], str, str], None]


def notices(entries_: Iterable[Entry]) -> list[tuple[Entry, str]]:
    """(message, kind) for every notice an unanswered message is owed now (pure): `remind`
    from its reminder day, `alert` from its alert day, `veto` past three months."""
    owed = []
    for e in entries_:
        if e.standing in ("due_soon", "overdue"):
            owed.append((e, "remind"))
        elif e.standing == "alert":
            owed += [(e, "remind"), (e, "alert")]
        elif e.standing == "veto":
            owed += [(e, "remind"), (e, "alert"), (e, "veto")]
    return owed


def forget_contacts(county: County, today: date) -> dict[str, Any]:
    """Empty the name and contact of every message older than the county's retention on
    every node (`govhost-messages forget`); node -> how many it emptied, or why it could
    not. A node that was down does it at the next run."""
    days = county.inv.cluster.messages.contact_retention_days
    before = county_midnight_utc(today - timedelta(days=days))
    names = [n.name for n in county.inv.hosts.nodes]
    got = collect.link(county).run_each(names, "forget", "--before", before, timeout=300,
                                        tool=paths.NODE_MESSAGES_TOOL)
    out: dict[str, Any] = {}
    for node, r in got.items():
        try:
            out[node] = int(json.loads(str(r))["forgotten"]) if isinstance(r, str) else \
                str(r)[-300:]
        except (ValueError, KeyError, TypeError):
            out[node] = f"unexpected answer: {str(r)[-200:]}"
    emptied = sum(v for v in out.values() if isinstance(v, int))
    if emptied:
        with county.state() as st:
            st.audit("messages.contacts_forgotten", "messages",
                     {"before": before, "nodes": out}, who="govhost")
    return {"before": before, "nodes": out}


# The hourly read asks for the messages numbered from this many days before today: a
# number carries the county's day by its node's clock, and the control machine's may differ.
READ_SLACK_DAYS = 3


def refresh_for_reminders(county: County, today: date, read: Reader | None = None
                          ) -> dict[str, str]:
    """The hourly reminder's read of the nodes: every message at the first run of the
    county's day (and again each hour until every node has answered one), then only those
    numbered from a few days before today. Every message was read every hour before: 0.9 s
    of each node, 19 MB sent and 2.5 s to merge at 40,000 messages, and the spools grow for
    ever. The nodes that could not be read, with why."""
    day = today.strftime("%Y%m%d")
    with county.state() as st:
        whole = st.messages_read_whole()
    if whole == day:            # not `>=`: a day marked while the clock ran ahead must not
        #                         hold off the whole reads once it is put right
        since = (today - timedelta(days=READ_SLACK_DAYS)).strftime("%Y%m%d")
        return refresh(county, read, since=since)[1]
    _, failed = refresh(county, read)
    if not failed:
        with county.state() as st:
            st.mark_messages_read_whole(day)
    return failed


def remind(county: County, today: date, send: Send = mail.send,
           read: Reader | None = None) -> dict[str, Any]:
    """Read the nodes, then mail each notice owed once: the owner unit's contact before
    the due date; the county and the unit at the alert day and past three months. A notice
    whose mail fails is tried again next time."""
    failed = refresh_for_reminders(county, today, read)
    settings = county.inv.cluster.alerts
    owed = notices(known(county, today, open_only=True))
    if settings is None:
        return {"sent": 0, "owed": len(owed), "failed": [], "unreadable_nodes": failed,
                "note": "the county has no mail server (cluster.yaml `alerts:`): no notice "
                        "was sent"}
    sent, failed_mail = 0, []
    name = county.inv.cluster.name
    units = {t.name: t for t in county.inv.tenants}
    # One connection; the notices that went out before are skipped by one read of them
    # (a connection and a transaction a notice still owed, every hour, took 4.9 s at 8,000
    # unanswered messages). Each new one is still claimed on its own before it is mailed:
    # two reminders at once send it once.
    with county.state() as st:
        done = st.notices_sent()
        for e, kind in owed:
            key = f"{kind}:{e.owner}"      # a message forwarded on is owed its own notices
            if (e.number, key) in done or not st.notice_once(e.number, key):
                continue
            t = units.get(e.owner)
            unit_to = [t.contact.email] if t is not None else []
            to = unit_to if kind == "remind" else [*settings.county, *unit_to]
            subject, body = _notice_text(name, e, kind)
            try:
                send(settings, to, subject, body)
                sent += 1
            except mail.MailError as exc:
                failed_mail.append({"number": e.number, "kind": kind, "error": str(exc)})
                st.forget_notice(e.number, key)
    return {"sent": sent, "owed": len(owed), "failed": failed_mail,
            "unreadable_nodes": failed}


def _notice_text(county_name: str, e: Entry, kind: str) -> tuple[str, str]:
    """The mail of one notice: the number, subject and dates, never the text or contact."""
    d = e.deadline
    try:                # as the nodes took it; cleaned again in case a node's copy is not
        subject = rules.clean(e.subject, multiline=False)
    except ValueError:
        subject = "（主题含不可显示的字符）"
    what = {"remind": f"群众留言 {e.number} 请于 {d.due.isoformat()} 前答复",
            "alert": f"群众留言 {e.number} 已超过 {(d.alert - d.received).days} 天未答复",
            "veto": f"群众留言 {e.number} 已超过三个月未答复（单项否决）"}[kind]
    body = (f"{county_name}网站管理平台\n\n{what}。\n\n"
            f"编号：{e.number}\n单位：{e.owner}\n收到：{d.received.isoformat()}\n"
            f"答复期限：{d.due.isoformat()}\n超过三个月：{d.veto.isoformat()} 起\n"
            f"主题：{subject}\n\n请登录网站管理平台查看并答复。\n")
    return f"{county_name}网站管理：{what}", body
