"""`govhost` commands: tamper protection (网页防篡改) on the nodes."""
from __future__ import annotations

import time

import typer
from rich.markup import escape

from commands.output import call, county, emit, out, table, when

app = typer.Typer()
tamper_app = typer.Typer(help="Live files changed behind govhost's back, found and put back "
                         "by each node's watcher.", no_args_is_help=True)
app.add_typer(tamper_app, name="tamper")


@tamper_app.command("list")
def tamper_list(hours: float = typer.Option(168, "--hours", help="How far back (hours)."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Every incident of the last HOURS on every node, and each watcher's health."""
    from controlplane.nodes import tamper
    res = call(lambda: tamper.incidents(county(), hours), as_json=as_json)
    if as_json:
        emit(res)
        return
    t = table("Tamper watchers", "node", "watching", "last full check", "incidents",
              "not put back")
    for node, r in sorted(res.items()):
        if "error" in r:
            t.add_row(node, f"[red]{r['error']}[/]", "", "", "")
            continue
        s = r.get("state", {})
        alive = s.get("heartbeat") and time.time() - s["heartbeat"] < 60
        open_ = sum(len(v) for v in s.get("unrepaired", {}).values())
        t.add_row(node, (f"{len(s.get('watching', {}))} releases" if alive
                         else "[red]watcher not running[/]"),
                  when(s.get("last_full_check")), str(len(r["incidents"])),
                  f"[red]{open_}[/]" if open_ else "0")
    out.print(t)
    rows = sorted((i for r in res.values() for i in r.get("incidents", [])),
                  key=lambda i: i["at"])
    if rows:
        t = table("Incidents", "when", "node", "unit", "file", "change", "live for", "put back",
                  "words written", "evidence")
        for i in rows:
            t.add_row(when(i["at"]), i["node"], i["tenant"], i["file"], i["change"],
                      f"{i['live_seconds']:.1f} s" if i.get("live_seconds") is not None else "",
                      "yes" if i["restored"] else f"[red]no: {i['why']}[/]",
                      _words(i.get("words", [])), i.get("evidence") or "")
        out.print(t)


def _words(found: list[dict]) -> str:
    """A changed page's words on the county's lists: block ones in red, with place and line."""
    return ", ".join(
        f"{'[red]' if f['severity'] == 'block' else ''}{escape(f['found'])} "
        f"({f['severity']}, {f['place']} {f['line']}){'[/]' if f['severity'] == 'block' else ''}"
        for f in found[:5]) + (f" … {len(found) - 5} more" if len(found) > 5 else "")
