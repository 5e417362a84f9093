"""`govhost security check`: every door, sshd, TLS, WAF, updates and secrets, judged; and
`govhost waf replay`: an old server's requests through a unit's WAF rules."""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from commands.output import call, county, emit, err, note, out, table

app = typer.Typer()
security_app = typer.Typer(help="Security: what is reachable from where, and what to fix.",
                           no_args_is_help=True)
app.add_typer(security_app, name="security")

COLOUR = {"critical": "bold red", "warning": "yellow", "info": "dim"}


@security_app.command("check")
def security_check(as_json: bool = typer.Option(False, "--json"),
                   testssl: bool = typer.Option(False, "--testssl",
                                                help="Also run testssl.sh on every site "
                                                "(minutes per site)."),
                   doors: bool = typer.Option(False, "--doors",
                                              help="Also print every door knocked on.")) -> None:
    """Knock on every node's ports from a public and a management source address, read
    sshd's settings, the modes of secrets and pending updates on every node, shake hands
    with every site and list WAF modes. Every finding says what to do. Exits 1 when a
    finding is critical (a door open that must not be, a readable key, ...)."""
    from controlplane.security import check
    if not as_json:
        note("knocking on doors, asking the nodes, shaking hands with the sites")
    report = call(lambda: check.run(county(), with_testssl=testssl), as_json=as_json)
    data = report.to_dict()
    if as_json:
        emit(data)
    else:
        if doors:
            t = table("Doors", "node", "port", "from", "should", "result")
            for d in report.doors:
                t.add_row(d.node, str(d.port), f"{d.seen_as} {d.source}",
                          "open" if d.expected else "closed",
                          f"[bold red]{d.result}[/]" if d.wrong else d.result)
            out.print(t)
        t = table("Security findings", "severity", "area", "where", "what", "to do")
        for f in report.findings:
            t.add_row(f"[{COLOUR[f.severity]}]{f.severity}[/]", f.area, escape(f.where),
                      escape(f.what), escape(f.todo))
        if report.findings:
            out.print(t)
        s = data["summary"]
        checked = ", ".join(f"{len(v)} {k}" for k, v in sorted(report.checked.items()))
        out.print(f"{s['critical']} critical, {s['warning']} warning(s), {s['info']} note(s); "
                  f"checked {checked}", highlight=False)
    if data["summary"]["critical"]:
        sys.exit(1)


waf_app = typer.Typer(help="The web application firewall: try a unit's rules before its "
                      "first public day.", no_args_is_help=True)
app.add_typer(waf_app, name="waf")


@waf_app.command("replay")
def waf_replay(unit: str = typer.Argument(..., help="The unit whose WAF rules judge."),
               access_log: Path = typer.Argument(..., help="The old server's access log "
                                                  "(nginx or Apache combined format)."),
               examples: int = typer.Option(3, "--examples", min=0, max=50,
                                            help="Requests shown per rule."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Run the old server's real requests through the unit's WAF rules (with its
    exclusions), offline on this machine's loopback, and list per rule the requests it would
    have refused: choose `exclude_rules` before the site's first public day."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from controlplane.security import waf_replay as replay_mod

    progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), console=err,
                        disable=as_json, transient=True)
    task = progress.add_task("replay", total=None)
    with progress:
        res = call(lambda: replay_mod.replay(
            county(), unit, access_log,
            progress=lambda done, total: progress.update(task, completed=done, total=total)),
            as_json=as_json)
    if as_json:
        emit(res)
        return
    t = table(f"{unit}: {res['refused']} of {res['replayed']} request(s) would be refused",
              "rule", "what", "refused", "pass if excluded", "for example")
    for r in res["rules"]:
        # the requests are the old server's visitors' words: printed, never read as markup
        t.add_row(str(r["rule"]), escape(r["message"]), str(r["refused"]),
                  str(r["pass_if_excluded"]),
                  escape("\n".join(f"{e['line']}: {e['request'][:100]}"
                                    for e in r["examples"][:examples])))
    if res["rules"]:
        out.print(t)
    else:
        out.print(f"[green]{unit}: none of {res['replayed']} request(s) would be refused[/]")
    if res["skipped"]:
        out.print(f"{res['skipped']} line(s) skipped, e.g. " + "; ".join(
            f"line {s['line']}: {s['why']}" for s in res["skipped_lines"][:3]),
            highlight=False, markup=False)
    out.print(f"note: {res['note']}. Exclude a rule only where its requests are the site's "
              "own (`waf: {mode: block, exclude_rules: [ID]}`), then replay again.",
              highlight=False, markup=False)
