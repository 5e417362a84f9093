"""`govhost security check`: every door, sshd, TLS, WAF, updates and secrets, judged."""
from __future__ import annotations

import sys

import typer

from commands.output import call, county, emit, note, out, table

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
            t.add_row(f"[{COLOUR[f.severity]}]{f.severity}[/]", f.area, f.where, f.what,
                      f.todo)
        if report.findings:
            out.print(t)
        s = data["summary"]
        checked = ", ".join(f"{len(v)} {k}" for k, v in sorted(report.checked.items()))
        out.print(f"{s['critical']} critical, {s['warning']} warning(s), {s['info']} note(s); "
                  f"checked {checked}", highlight=False)
    if data["summary"]["critical"]:
        sys.exit(1)
