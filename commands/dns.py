"""`govhost` commands: The county DNS plan."""
from __future__ import annotations

import sys

import typer

from commands.output import call, county, emit

app = typer.Typer()
dns_app = typer.Typer(help="The county DNS plan (A and AAAA records of every site name).",
                      no_args_is_help=True)
app.add_typer(dns_app, name="dns")


@dns_app.command("plan")
def dns_plan_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """The records the county's DNS must hold: every name on every web node (A, and AAAA
    where nodes have `address6`), as zone-file lines."""
    from dataclasses import asdict

    from controlplane.dns import plan as dns_plan
    inv = call(lambda: county().inv, as_json=as_json)
    if as_json:
        emit([asdict(r) for r in dns_plan.records(inv)])
    else:
        sys.stdout.write(dns_plan.zone_lines(inv))
