"""`govhost` commands: the county DNS plan, and pushing it to the county's DNS server."""
from __future__ import annotations

import sys
from dataclasses import asdict

import typer

from commands.output import call, county, emit, fail, out, table
from controlplane.core import errors

app = typer.Typer()
dns_app = typer.Typer(help="The county DNS plan (A and AAAA records of every site name), and "
                      "pushing it to the county's DNS server.",
                      no_args_is_help=True)
app.add_typer(dns_app, name="dns")


@dns_app.command("plan")
def dns_plan_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """The records the county's DNS must hold: every name on every web node (A, and AAAA
    where nodes have `address6`), as zone-file lines."""
    from controlplane.dns import plan as dns_plan
    inv = call(lambda: county().inv, as_json=as_json)
    if as_json:
        emit([asdict(r) for r in dns_plan.records(inv)])
    else:
        sys.stdout.write(dns_plan.zone_lines(inv))


@dns_app.command("push")
def dns_push_cmd(dry_run: bool = typer.Option(False, "--dry-run",
                                              help="Show what would change; send nothing."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Bring the county's DNS server (cluster.yaml `dns:`) to the plan: every name whose A or
    AAAA records differ is replaced in TSIG-signed RFC 2136 updates. A second run changes
    nothing."""
    from controlplane.dns import plan as dns_plan
    from controlplane.dns import publish
    from controlplane.dns.update import DnsUpdateError

    inv = call(lambda: county().inv, as_json=as_json)
    cfg = inv.cluster.dns
    if cfg is None:
        fail(errors.GovhostError("cluster.yaml has no `dns:` section (server, zone, "
                                 "tsig_key_name, tsig_secret_file): govhost has no DNS server "
                                 "to update; `govhost dns plan` prints the records to enter "
                                 "by hand"), as_json)
    want, outside = publish.wanted(dns_plan.records(inv), cfg.zone)
    try:
        have = publish.current(cfg, want)
        todo = publish.changes(want, have, inv.cluster.dns_ttl)
        sent = 0 if dry_run or not todo else publish.push(cfg, todo, inv.cluster.dns_ttl)
    except DnsUpdateError as exc:
        fail(errors.GovhostError(str(exc)), as_json)
    res = {"zone": cfg.zone, "server": f"{cfg.server}:{cfg.port}", "dry_run": dry_run,
           "changes": [asdict(c) for c in todo], "unchanged": len(want) - len(todo),
           "updates_sent": sent, "outside_zone": outside,
           "aliases_on_server": sorted({n for (n, _), a in have.items() if a.cname})}
    if as_json:
        emit(res)
        return
    t = table(f"DNS {cfg.zone} at {cfg.server}:{cfg.port}"
              + (" (dry run: nothing sent)" if dry_run else ""), "name", "type", "now", "after")
    for c in todo:
        t.add_row(c.name, c.type, " ".join(c.now) or "-", " ".join(c.after))
    if todo:
        out.print(t)
    if res["aliases_on_server"]:
        out.print("CNAMEs on the server, left alone: " + ", ".join(res["aliases_on_server"]),
                  highlight=False)
    out.print(f"{len(todo)} record set(s) {'to change' if dry_run else 'changed'}, "
              f"{res['unchanged']} already right"
              + (f"; outside {cfg.zone}, left to their own zone: {', '.join(outside)}"
                 if outside else ""), highlight=False)
