"""`govhost` commands: citizens' messages to their units (docs/messages.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.text import Text

from commands.output import call, county, emit, err, fail, out, table
from controlplane.core import errors

app = typer.Typer()
messages_app = typer.Typer(help="Citizens' messages to the units (留言): read them from the "
                           "nodes that keep them.", no_args_is_help=True)
app.add_typer(messages_app, name="messages")


def _warn_unread(failed: dict[str, str]) -> None:
    for node, why in sorted(failed.items()):
        err.print(f"[yellow]note[/]: {node} could not be read ({escape(why)}); every message is kept "
                  "on two nodes, so the list is whole unless another node is down too",
                  highlight=False)


STANDING = {"answered": "[green]answered[/]", "open": "open", "due_soon": "[yellow]due soon[/]",
            "overdue": "[red]overdue[/]", "alert": "[red bold]alert[/]",
            "veto": "[red bold]over 3 months[/]"}


@messages_app.command("list")
def messages_list(unit: Optional[str] = typer.Option(None, "--unit", help="Only the messages "
                                                     "this unit must answer or forwarded."),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Every message the nodes hold, oldest first: number, the unit that must answer it,
    time, subject, due date, standing and the nodes that keep it. No contact details
    (`show` gives them, and the audit log records it)."""
    import time

    from controlplane.messages import inbox
    from controlplane.messages.deadlines import today_in_county
    c = county()
    found, failed = call(lambda: inbox.refresh(c, unit=unit), as_json=as_json)
    entries = {e.number: e for e in inbox.known(c, today_in_county(time.time()), unit=unit)}
    found = [m for m in found if unit is None or unit in (m.unit, entries[m.number].owner)]
    if as_json:
        emit({"messages": [{**m.public(), **entries[m.number].view()} for m in found],
              "unreadable_nodes": failed})
        return
    t = table(f"messages ({len(found)})", "number", "unit", "received (UTC+8)", "subject",
              "due", "standing", "kept on")
    for m in found:
        e = entries[m.number]
        # the subject is the citizen's: text, never Rich markup ("[link=…]", "[/]" that
        # would stop the list for every unit) nor an :emoji: code
        t.add_row(m.number, m.unit if e.owner == m.unit else f"{m.unit} → {e.owner}",
                  m.received_local(), Text(m.subject), e.deadline.due.isoformat(),
                  STANDING[e.standing] + (" · held" if m.review_words else ""),
                  ",".join(m.stored_on) + (" [red]copies differ[/]" if m.differs else ""))
    out.print(t)
    _warn_unread(failed)


@messages_app.command("overdue")
def messages_overdue(as_json: bool = typer.Option(False, "--json")) -> None:
    """The county's overdue list: every unit's messages past their due date, oldest first
    (from the control machine's index, as the last read of the nodes left it)."""
    import time

    from controlplane.messages import inbox
    from controlplane.messages.deadlines import today_in_county
    rows = call(lambda: inbox.overdue(county(), today_in_county(time.time())),
                as_json=as_json)
    if as_json:
        emit({"overdue": [e.view() for e in rows]})
        return
    t = table(f"overdue messages ({len(rows)})", "number", "unit to answer", "received",
              "due", "standing", "subject")
    for e in rows:
        t.add_row(e.number, e.owner, e.deadline.received.isoformat(),
                  e.deadline.due.isoformat(), STANDING[e.standing], Text(e.subject))
    out.print(t)


@messages_app.command("forward")
def messages_forward(number: str = typer.Argument(..., help="The message's number."),
                     to: str = typer.Option(..., "--to", help="The unit that must answer it."),
                     reason: str = typer.Option(..., "--reason", help="Why (the unit reads "
                                                "it), one line."),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """Forward a misdirected message to the unit that must answer it (转办; audited). Its
    answer is still shown where the citizen wrote."""
    import time

    from controlplane.core.state import actor
    from controlplane.messages import inbox
    from controlplane.messages.deadlines import today_in_county
    done = call(lambda: inbox.forward(county(), number, to, reason, actor(), None,
                                      today_in_county(time.time())), as_json=as_json)
    if as_json:
        emit(done)
    else:
        out.print(f"{done['number']}: forwarded from {done['from']} to {done['to']}",
                  highlight=False)


@messages_app.command("remind")
def messages_remind(as_json: bool = typer.Option(False, "--json")) -> None:
    """Read the nodes and mail the notices now owed, each once: the unit before a
    message's due date, the county and the unit at the alert day and past three months;
    then empty, on every node, the names and contacts older than the county's retention.
    The control machine's timer runs it hourly (`govhost monitoring install`)."""
    import time

    from controlplane.messages import inbox
    from controlplane.messages.deadlines import today_in_county
    c = county()
    today = today_in_county(time.time())
    res = call(lambda: inbox.remind(c, today), as_json=as_json)
    res["contacts"] = call(lambda: inbox.forget_contacts(c, today), as_json=as_json)
    if as_json:
        emit(res)
    else:
        out.print(f"notices owed {res['owed']}, sent now {res['sent']}"
                  + (f"; {res['note']}" if res.get("note") else ""), highlight=False)
        for f in res["failed"]:
            err.print(f"[yellow]note[/]: {f['number']} {f['kind']}: {escape(f['error'])}; "
                      "tried again next time", highlight=False)
        for node, got in sorted(res["contacts"]["nodes"].items()):
            if isinstance(got, int):
                if got:
                    out.print(f"{node}: {got} contact(s) older than "
                              f"{res['contacts']['before']} emptied", highlight=False)
            else:
                err.print(f"[yellow]note[/]: {node}: contacts not emptied ({escape(got)}); "
                          "tried again next time", highlight=False)
        _warn_unread(res["unreadable_nodes"])
    if res["failed"] or any(not isinstance(v, int)
                            for v in res["contacts"]["nodes"].values()):
        raise typer.Exit(1)


@messages_app.command("show")
def messages_show(number: str = typer.Argument(..., help="The message's number, "
                                               "e.g. JY-20261205-1-000042."),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """One message whole, with the citizen's contact details; the audit log records who
    read them."""
    from controlplane.messages import collect
    c = county()
    found, failed = call(lambda: collect.collect(c, number), as_json=as_json)
    m = call(lambda: collect.find(found, number), as_json=as_json)
    with c.state() as st:
        st.audit("messages.read", m.number, {"unit": m.unit, "contact": "shown"})
    if as_json:
        emit({**m.public(), "contact": m.contact})
        return
    out.print(f"[bold]{m.number}[/]  {m.unit}  {m.received_local()} (UTC+8)  "
              f"kept on {', '.join(m.stored_on)}", highlight=False)
    out.print(f"subject: {m.subject}", markup=False, highlight=False, emoji=False)
    out.print(f"name:    {m.name or '-'}", markup=False, highlight=False, emoji=False)
    out.print(f"contact: {m.contact}", markup=False, highlight=False, emoji=False)
    if m.review_words:
        out.print(f"held:    {'、'.join(m.review_words)} (the county's review lists)",
                  markup=False, highlight=False, emoji=False)
    out.print("", m.text, sep="\n", markup=False, highlight=False, emoji=False)
    _warn_unread(failed)


@messages_app.command("answer")
def messages_answer(number: str = typer.Argument(..., help="The message's number."),
                    text: Optional[str] = typer.Option(None, "--text", help="The answer."),
                    from_file: Optional[Path] = typer.Option(None, "--file",
                                                             help="The answer, from a file."),
                    private: bool = typer.Option(False, "--not-public", help="Shown to the "
                                                 "citizen by their link only, not on the "
                                                 "unit's page (不予公开)."),
                    publish_held: bool = typer.Option(False, "--publish-held", help="Publish "
                                                      "a message held for its review words "
                                                      "(read it first)."),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Answer a message: recorded (and audited), shown on the unit's page unless
    --not-public, and to the citizen by their reading link, on every node. A message held
    for words of the county's review lists needs --not-public or --publish-held."""
    from controlplane.core.state import actor
    from controlplane.messages import answers
    if (text is None) == (from_file is None):
        fail(errors.GovhostError("give the answer with --text or --file (one of them)"),
             as_json)
    body = text if text is not None else call(lambda: _read(from_file), as_json=as_json)
    res = call(lambda: answers.answer(county(), number, body, not private, actor(),
                                      publish_held), as_json=as_json)
    failed = {n: why for n, why in res["nodes"].items() if why != "ok"}
    if as_json:
        emit(res)
    else:
        out.print(f"answered {res['number']} ({res['unit']}, "
                  f"{'public' if res['publish'] else 'not public'}); on "
                  f"{len(res['nodes']) - len(failed)} of {len(res['nodes'])} nodes",
                  highlight=False)
        for node, why in sorted(failed.items()):
            err.print(f"[yellow]note[/]: {node} did not take it ({escape(why)}); "
                      "`govhost messages sync` sends it again", highlight=False)
    if failed:
        raise typer.Exit(1)


@messages_app.command("sync")
def messages_sync(as_json: bool = typer.Option(False, "--json")) -> None:
    """Send every unit's answers to every node again (after a node was down or replaced)."""
    from controlplane.messages import answers
    res = call(lambda: answers.sync(county()), as_json=as_json)
    failed = sorted({n for nodes in res.values() for n, why in nodes.items() if why != "ok"})
    if as_json:
        emit({"units": res, "failed_nodes": failed})
    else:
        out.print(f"answers of {len(res)} unit(s) sent; "
                  + (f"failed on {', '.join(failed)}" if failed else "every node took them"),
                  highlight=False)
    if failed:
        raise typer.Exit(1)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.GovhostError(f"cannot read the answer from {path}: {exc}") from None
