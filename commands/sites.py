"""`govhost` commands: Sites: validate, plan, apply, status; the units."""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

import typer
from rich.markup import escape

from commands.output import call, county, emit, err, fail, human_size, note, out, table
from controlplane.core import errors

app = typer.Typer()
unit_app = typer.Typer(help="Units (departments, townships) and their sites.", no_args_is_help=True)
app.add_typer(unit_app, name="unit")
# The old name, for scripts written before `unit`: the same commands, not in --help.
app.add_typer(unit_app, name="tenant", hidden=True)


@app.command()
def validate(as_json: bool = typer.Option(False, "--json")) -> None:
    """Load and check the whole inventory; list every problem found."""
    try:
        inv = county().inv
        st = county().open_state()
        from controlplane.sites.plan import compute_placement
        compute_placement(inv, st.drained(), st.placements())
    except errors.GovhostError as exc:
        fail(exc, as_json)
        return
    summary = {"valid": True, "tenants": len(inv.tenants), "nodes": len(inv.hosts.nodes),
               "domain": inv.cluster.domain}
    if as_json:
        emit(summary)
    else:
        out.print(f"[green]ok[/]: {summary['tenants']} units, {summary['nodes']} nodes, "
                  f"domain {summary['domain']}")


def _print_plan(plan) -> None:
    t = table("Nodes", "node", "release now", "release after", "add", "change", "remove", "note")
    for n in plan.nodes:
        t.add_row(n.node, n.old_release or "-", n.new_release, str(len(n.added)),
                  str(len(n.changed)), str(len(n.removed)),
                  ("drained; " if n.drained else "") + ("" if n.needed else "no change"))
    out.print(t)
    if plan.tenants:
        tt = table("Units",
                   "unit", "action", "replicas before", "replicas after", "nodes touched")
        shown = plan.tenants[:200]
        for c in shown:
            tt.add_row(c.tenant, c.action, ",".join(c.replicas_before) or "-",
                       ",".join(c.replicas_after) or "-", ",".join(c.nodes) or "-")
        out.print(tt)
        if len(plan.tenants) > len(shown):
            out.print(f"… and {len(plan.tenants) - len(shown)} more unit changes (--json)")
    out.print("[green]No changes.[/]" if plan.empty else
              f"Plan: {sum(n.needed for n in plan.nodes)} node(s) get a new release, "
              f"{len(plan.tenants)} unit change(s).")


@app.command()
def plan(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show, per node and per unit, what apply would add, change and remove."""
    from controlplane.sites.apply import prepare
    try:
        st = county().open_state()
        _, p = prepare(county(), st)
    except errors.GovhostError as exc:
        fail(exc, as_json)
        return
    emit(p.to_json()) if as_json else _print_plan(p)


@app.command()
def apply(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Converge every node to the inventory: canary first, probed, rolled back on failure."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from controlplane.converge import service

    def confirm(p) -> bool:
        if yes or as_json:
            return True
        if not sys.stdin.isatty():
            err.print("refusing to apply without confirmation: pass --yes")
            return False
        _print_plan(p)
        return typer.confirm("Apply these changes?")

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                        console=err, disable=as_json or not err.is_terminal, transient=True)
    task = progress.add_task("apply", total=None)

    def say(node: str, step: str, outcome: str) -> None:
        progress.update(task, description=f"{step} {node}: {outcome}")
        if not err.is_terminal and not as_json:
            err.print(f"  {node:>4} {step:<9} {outcome}", highlight=False)

    try:
        with progress:
            result = service.apply(county(), progress=say, confirm=confirm, say=note)
    except errors.GovhostError as exc:
        fail(exc, as_json)
        return
    if as_json:
        emit(result.to_json())
    else:
        t = table(f"apply run {result.run_id}: {result.result} in {result.seconds:.1f} s",
                  "node", "result", "release", "message")
        style = {"applied": "green", "unchanged": "dim", "failed": "red", "unreachable": "red",
                 "refused": "red", "skipped": "yellow"}
        for n in result.nodes:
            t.add_row(n.node, f"[{style.get(n.result, '')}]{n.result}[/]", n.release or "-",
                      n.message[:300])
        if result.phases:           # where the time went, for a run that felt slow
            t.caption = "time: " + " · ".join(f"{part} {s:.1f} s" for part, s
                                               in result.phases.items())
        out.print(t)
        _print_content_moves(result)
        if result.refused_tenants:
            err.print(f"[red]refused unit(s)[/]: {', '.join(result.refused_tenants)}; "
                      "every node keeps serving its previous release")
        if result.result == "unchanged":
            out.print("No changes.")
        _print_after(result.after)
    if not result.ok:
        raise typer.Exit(1)


def _print_after(after: dict) -> None:
    """What followed the apply (converge.service.follow_up): its problems, and a new check
    of the live county when the word lists changed."""
    for problem in after.get("problems", []):
        err.print(f"[yellow]after apply[/]: {escape(problem)}", highlight=False)
    if after.get("wording"):
        err.print(f"wording: the word lists changed; the live county was checked again: "
                  f"{after['wording']['serious']} finding(s) to correct (`govhost wording "
                  "check`)", highlight=False)


def _print_content_moves(result) -> None:
    """What content travelled to new replicas, and what could not."""
    if result.content:
        t = table("content moved to replicas before they serve", "unit", "from", "to",
                  "releases", "bytes", "result")
        for m in result.content:
            t.add_row(m["tenant"], m["from"], m["to"], str(len(m["releases"])),
                      human_size(m["bytes"]), "ok" if m["ok"] else f"[red]{m['error'][:120]}[/]")
        out.print(t)
    if result.kept_placement:
        err.print(f"[yellow]kept the old replicas of[/] {', '.join(result.kept_placement)}: "
                  "their content could not reach the new ones (see above); apply again later")
    for unit, rid in sorted(result.stranded.items()):
        err.print(f"[red]{unit}[/]: no node holds its live release {rid} intact; restore it "
                  f"with `govhost backup restore {unit}` (or `govhost node replace`)")


@app.command()
def status(
    unit: Optional[str] = typer.Argument(None, help="Show one unit in detail."),
    as_json: bool = typer.Option(False, "--json"),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="HTTP-probe every unit on every node."),
) -> None:
    """Nodes and units: placement, releases, reachability, traffic, and what is wrong."""
    from controlplane.sites import status as status_mod
    data = call(status_mod.gather, county(), probe, unit, as_json=as_json)
    if as_json:
        emit(data)
        return
    if unit is None:
        _print_nodes(data["nodes"])
        _print_floating(data["floating"])
        _print_units(data["tenants"], [n["node"] for n in data["nodes"]], probe)
    else:
        _print_unit(data["tenants"][0], data["nodes"], probe)
    _print_problems(data["problems"])
    if data["lock"]:
        out.print(f"apply lock held: {data['lock']}", highlight=False)


def _print_nodes(nodes: list[dict]) -> None:
    t = table("Nodes", "node", "address", "reachable", "booted", "nginx", "agent", "tamper",
              "live release", "desired", "replicas", "note")
    for n in nodes:
        booted = time.strftime("%m-%d %H:%M", time.localtime(n["boot_time"])) \
            if n.get("boot_time") else "-"
        t.add_row(n["node"], n["address"], "[green]yes[/]" if n["reachable"] else "[red]no[/]",
                  booted, "running" if n["nginx_running"] else "[red]stopped[/]",
                  "running" if n["agent_running"] else "[yellow]down[/]",
                  ("[red]down[/]" if not n.get("tamper_watcher") else
                   f"[yellow]{n['config_tampered']} put back[/]" if n.get("config_tampered")
                   else "watching") if n["reachable"] else "-",
                  n["release_live"] or "-", n["release_desired"], str(n["replicas"]),
                  ("drained " if n["drained"] else "") +
                  ("" if n.get("vrrp") in (None, "running", "released") else
                   f"[yellow]VRRP {n['vrrp']}[/] ") +
                  ("" if n["in_sync"] else "[yellow]drift: run apply[/]"))
    out.print(t)


def _print_floating(rows: list[dict]) -> None:
    if not rows:
        return
    t = table("Floating addresses (DNS publishes these)", "address", "home", "held by")
    for r in rows:
        by = r["held_by"]
        cell = ("[red]nobody[/]" if not by else f"[red]{' and '.join(by)}[/]" if len(by) > 1
                else by[0] if by[0] == r["home"] else f"[yellow]{by[0]}[/]")
        t.add_row(r["address"], r["home"], cell)
    out.print(t)


def _code_cell(code: Any, probe: bool) -> str:
    if not probe:
        return "?"
    ok = isinstance(code, int) and 200 <= code < 400
    return f"[green]{code}[/]" if ok else f"[red]{code if code is not None else 'none'}[/]"


def _print_units(rows: list[dict], node_names: list[str], probe: bool) -> None:
    tt = table("Units", "unit", "host", "replicas", *node_names, "requests", "5xx", "disk",
               "tampered")
    for r in rows:
        cells = [_code_cell(r["answers"].get(n, "-"), probe) for n in node_names]
        tt.add_row(r["tenant"], r["host"], ",".join(r["replicas"]), *cells, str(r["requests"]),
                   f"[red]{r['errors_5xx']}[/]" if r["errors_5xx"] else "0",
                   human_size(r["disk_bytes"]))
    out.print(tt)


def _print_unit(r: dict, nodes: list[dict], probe: bool) -> None:
    out.print(f"[bold]{r['title']}[/] ({r['tenant']}, {r['kind']}, {r['site']} site)",
              highlight=False)
    out.print(f"  {r['host']}" + (f"  aliases: {', '.join(r['aliases'])}" if r["aliases"]
                                  else ""), highlight=False)
    out.print(f"  requests {r['requests']}, 5xx {r['errors_5xx']}, sent "
              f"{human_size(r['bytes_sent'])}, disk {human_size(r['disk_bytes'])}, tampered "
              f"files put back {r['tamper_incidents']}", highlight=False)
    t = table("Through each node", "node", "role", "answer", "ms")
    for n in nodes:
        role = "replica" if n["node"] in r["replicas"] else "proxy"
        t.add_row(n["node"], role, _code_cell(r["answers"].get(n["node"], "-"), probe),
                  str(r["latency_ms"].get(n["node"], "-")))
    out.print(t)


def _print_problems(problems: list[dict]) -> None:
    if not problems:
        out.print("[green]No problems.[/]")
        return
    colour = {"critical": "red", "warning": "yellow"}
    out.print(f"[bold]{len(problems)} problem(s):[/]")
    for p in problems:
        c = colour.get(p["severity"], "white")
        out.print(f"  [{c}]{p['severity']}[/] {escape(p['where'])}: {escape(p['what'])}",
                  highlight=False)


@unit_app.command("remove")
def unit_remove(name: str, yes: bool = typer.Option(False, "--yes"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Archive and delete a removed unit's data and accounts on every node (after its
    manifest was deleted and applied)."""
    from controlplane.content import releases as content
    if not yes and not typer.confirm(f"archive and delete {name}'s files and accounts?"):
        raise typer.Exit(1)
    res = call(content.remove, county(), name, note, as_json=as_json)
    if as_json:
        emit(res)
    else:
        for node, r in res["nodes"].items():
            if "archive" in r:
                out.print(f"{node}: archived to {r['archive']}; accounts removed: "
                          f"{', '.join(r['accounts']) or 'none'}", highlight=False)
            if "database" in r:
                out.print(f"{node}: database {r['database']['removed']} dumped to "
                          f"{r['database']['archive']} and dropped", highlight=False)
        if not res["nodes"]:
            out.print(f"nothing of {name} was left on any node", highlight=False)


@unit_app.command("list")
def unit_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List every unit with its kind, host name and replicas."""
    from controlplane.sites import apply as apply_mod
    try:
        inv, placement = apply_mod.placement(county(), county().open_state())
    except errors.GovhostError as exc:
        fail(exc, as_json)
        return
    rows = [{"name": t.name, "title": t.title, "kind": t.kind, "host": inv.site_host(t),
             "site": t.site.type, "replicas": list(placement[t.name]),
             "aliases": list(t.aliases), "sections": [s.name for s in t.sections]}
            for t in inv.tenants]
    if as_json:
        emit(rows)
        return
    t = table(f"{len(rows)} units",
              "name", "title", "kind", "host", "site", "replicas", "sections")
    for r in rows:
        t.add_row(r["name"], r["title"], r["kind"], r["host"], r["site"],
                  ",".join(r["replicas"]), ",".join(r["sections"]))
    out.print(t)


@unit_app.command("show")
def unit_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one unit's manifest, host names and placement."""
    from controlplane.sites import apply as apply_mod
    try:
        inv, placement = apply_mod.placement(county(), county().open_state())
    except errors.GovhostError as exc:
        fail(exc, as_json)
        return
    t = inv.tenant(name)
    if t is None:
        fail(errors.GovhostError(f"no unit named {name!r} in {county().root}/tenants"), as_json)
        return
    data = {"manifest": t.model_dump(mode="json"), "file": inv.sources[t.name],
            "hosts": [inv.site_host(t), *t.aliases], "replicas": list(placement[t.name]),
            "rate_limit": inv.rate_limit(t).model_dump()}
    if as_json:
        emit(data)
        return
    out.print(f"[bold]{t.title}[/] ({t.name}, {t.kind}) — {data['file']}")
    out.print(f"hosts:     {', '.join(data['hosts'])}")
    out.print(f"site:      {t.site.type}")
    out.print(f"replicas:  {', '.join(data['replicas'])}")
    rl = data["rate_limit"]
    out.print(f"rate:      {rl['requests_per_second']} r/s, burst {rl['burst']}")
    out.print(f"contact:   {t.contact.name} <{t.contact.email}> {t.contact.phone}")
    for s in t.sections:
        out.print(f"section:   /{s.name}/ {s.title}")
