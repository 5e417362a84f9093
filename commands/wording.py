"""`govhost` commands: the county's word lists (错敏词) against the live sites."""
from __future__ import annotations

import sys

import typer

from commands.output import call, county, emit, note, out, table

app = typer.Typer()
wording_app = typer.Typer(help="Wording checks: the county's word lists (inventory/wording/) "
                          "against what units publish.", no_args_is_help=True)
app.add_typer(wording_app, name="wording")


@wording_app.command("lists")
def wording_lists(as_json: bool = typer.Option(False, "--json")) -> None:
    """The word lists the inventory holds, with their entries per severity."""
    inv = call(lambda: county().inv, as_json=as_json)
    rows = []
    for source, wl in sorted(inv.wording.items()):
        sev = [e.severity or wl.severity for e in wl.entries]
        rows.append({"list": source, "description": wl.description or "",
                     "traditional": wl.traditional, "entries": len(wl.entries),
                     **{s: sev.count(s) for s in ("block", "review", "note")}})
    if as_json:
        emit(rows)
        return
    t = table("Word lists", "list", "entries", "block", "review", "note", "traditional",
              "description")
    for r in rows:
        t.add_row(r["list"], str(r["entries"]), str(r["block"]), str(r["review"]), str(r["note"]),
                  "yes" if r["traditional"] else "", r["description"])
    out.print(t)


@wording_app.command("check")
def wording_check(as_json: bool = typer.Option(False, "--json")) -> None:
    """Check every unit's live site against the lists now (after a list change: only files
    not yet read under the current lists are read). Exits 1 when a live site holds a `block`
    or `review` word."""
    from commands.content import show_wording
    from controlplane.wording import check
    res = call(lambda: check.check_live(county(), say=note), as_json=as_json)
    serious = check.serious(res)
    errors = {t: u["error"] for t, u in res["units"].items() if u.get("error")}
    if as_json:
        emit(res)
    elif res["lists"] is None:
        out.print("the inventory has no word lists (inventory/wording/*.yaml)")
    else:
        t = table("Wording on the live sites", "unit", "release", "block", "review", "note")
        for name, u in sorted(res["units"].items()):
            c = check.counts(u.get("findings", []))
            t.add_row(name, u.get("release") or ("[red]error[/]" if u.get("error") else "-"),
                      *(str(c[s]) for s in ("block", "review", "note")))
        out.print(t)
        for name, u in sorted(res["units"].items()):
            if u.get("findings"):
                out.print(f"[bold]{name}[/]", highlight=False)
                show_wording(u["findings"])
        for name, e in sorted(errors.items()):
            out.print(f"[red]{name}[/]: {e}", highlight=False)
    if serious or errors:
        sys.exit(1)
