"""The `govhost` command: parse arguments, call the control plane, print the result.

Formatting for people (tables, progress) and for scripts (--json) lives here only.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from controlplane.core import errors

app = typer.Typer(help="govhost: consolidated county government web hosting.",
                  no_args_is_help=True, add_completion=False)
tenant_app = typer.Typer(help="Tenants (units) and their sites.", no_args_is_help=True)
node_app = typer.Typer(help="Cluster nodes.", no_args_is_help=True)
lab_app = typer.Typer(help="The lab cluster on this machine (systemd-nspawn machines on 127.0.1.N).",
                      no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(node_app, name="node")
app.add_typer(lab_app, name="lab")
review_app = typer.Typer(help="Content releases waiting for review (tenants with "
                          "`review: required`).", no_args_is_help=True)
app.add_typer(review_app, name="review")
monitoring_app = typer.Typer(help="Prometheus configuration, alert rules and dashboards.",
                             no_args_is_help=True)
app.add_typer(monitoring_app, name="monitoring")
backup_app = typer.Typer(help="Backups (restic): run, list, restore, verify, drill, off-site.",
                         no_args_is_help=True)
app.add_typer(backup_app, name="backup")
compliance_app = typer.Typer(help="The national inspection indicators, checked for every unit.",
                             no_args_is_help=True)
app.add_typer(compliance_app, name="compliance")
cert_app = typer.Typer(help="HTTPS certificates: ACME, the county CA, imported ones; renewal.",
                       no_args_is_help=True)
app.add_typer(cert_app, name="cert")
ca_app = typer.Typer(help="The county's internal CA.", no_args_is_help=True)
cert_app.add_typer(ca_app, name="ca")
dns_app = typer.Typer(help="The county DNS plan (A and AAAA records of every site name).",
                      no_args_is_help=True)
app.add_typer(dns_app, name="dns")
services_app = typer.Typer(help="The lab's county services: Pebble (ACME CA) and BIND (DNS).",
                           no_args_is_help=True)
lab_app.add_typer(services_app, name="services")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for logs and grep


class Ctx:
    inventory: Path = Path("inventory")
    debug: bool = False


CTX = Ctx()


@app.callback()
def _global(
    inventory: Path = typer.Option(Path("inventory"), "--inventory", "-i",
                                   envvar="GOVHOST_INVENTORY",
                                   help="Inventory directory (cluster.yaml, hosts.yaml, tenants/)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    CTX.inventory = inventory
    CTX.debug = debug


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _fail(exc: Exception, as_json: bool = False) -> None:
    if CTX.debug:
        raise exc
    if as_json:
        payload: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, errors.ManifestError):
            payload["problems"] = [vars(p) for p in exc.problems]
        _emit(payload)
    elif isinstance(exc, errors.ManifestError):
        err.print(f"[bold red]inventory refused[/]: {len(exc.problems)} problem(s); "
                  "nothing was changed", highlight=False)
        for p in exc.problems:
            err.print(f"  {p}", highlight=False, markup=False)
    else:
        err.print(f"[bold red]error[/]: {exc}", highlight=False)
    raise typer.Exit(1)


T = TypeVar("T")


def _call(fn: Callable[..., T], *args: Any, as_json: bool = False) -> T:
    """One call into the control plane: its GovhostError becomes the CLI's error and exit 1."""
    try:
        return fn(*args)
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        raise   # not reached: _fail exits


def _state():
    from controlplane.core.state import open_state
    return open_state(CTX.inventory)


@app.command()
def validate(as_json: bool = typer.Option(False, "--json")) -> None:
    """Load and check the whole inventory; list every problem found."""
    from controlplane.core import inventory
    try:
        inv = inventory.load(CTX.inventory)
        st = _state()
        from controlplane.sites.plan import compute_placement
        compute_placement(inv, st.drained(), st.placements())
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        return
    summary = {"valid": True, "tenants": len(inv.tenants), "nodes": len(inv.hosts.nodes),
               "domain": inv.cluster.domain}
    if as_json:
        _emit(summary)
    else:
        out.print(f"[green]ok[/]: {summary['tenants']} tenants, {summary['nodes']} nodes, "
                  f"domain {summary['domain']}")


def _print_plan(plan) -> None:
    t = _table("Nodes", "node", "release now", "release after", "add", "change", "remove", "note")
    for n in plan.nodes:
        t.add_row(n.node, n.old_release or "-", n.new_release, str(len(n.added)),
                  str(len(n.changed)), str(len(n.removed)),
                  ("drained; " if n.drained else "") + ("" if n.needed else "no change"))
    out.print(t)
    if plan.tenants:
        tt = _table("Tenants",
                    "tenant", "action", "replicas before", "replicas after", "nodes touched")
        shown = plan.tenants[:200]
        for c in shown:
            tt.add_row(c.tenant, c.action, ",".join(c.replicas_before) or "-",
                       ",".join(c.replicas_after) or "-", ",".join(c.nodes) or "-")
        out.print(tt)
        if len(plan.tenants) > len(shown):
            out.print(f"… and {len(plan.tenants) - len(shown)} more tenant changes (--json)")
    out.print("[green]No changes.[/]" if plan.empty else
              f"Plan: {sum(n.needed for n in plan.nodes)} node(s) get a new release, "
              f"{len(plan.tenants)} tenant change(s).")


@app.command()
def plan(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show, per node and per tenant, what apply would add, change and remove."""
    from controlplane.sites.apply import prepare
    try:
        st = _state()
        _, p = prepare(CTX.inventory, st)
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        return
    _emit(p.to_json()) if as_json else _print_plan(p)


@app.command()
def apply(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Converge every node to the inventory: canary first, probed, rolled back on failure."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from controlplane.sites import apply as apply_mod

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
            result = apply_mod.apply(CTX.inventory, progress=say, confirm=confirm)
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit(result.to_json())
    else:
        t = _table(f"apply run {result.run_id}: {result.result} in {result.seconds:.1f} s",
                   "node", "result", "release", "message")
        style = {"applied": "green", "unchanged": "dim", "failed": "red", "unreachable": "red",
                 "refused": "red", "skipped": "yellow"}
        for n in result.nodes:
            t.add_row(n.node, f"[{style.get(n.result, '')}]{n.result}[/]", n.release or "-",
                      n.message[:300])
        out.print(t)
        _print_content_moves(result)
        if result.refused_tenants:
            err.print(f"[red]refused tenant(s)[/]: {', '.join(result.refused_tenants)}; "
                      "every node keeps serving its previous release")
        if result.result == "unchanged":
            out.print("No changes.")
    if not result.ok:
        raise typer.Exit(1)


def _print_content_moves(result) -> None:
    """What content travelled to new replicas, and what could not."""
    if result.content:
        t = _table("content moved to replicas before they serve", "unit", "from", "to",
                   "releases", "bytes", "result")
        for m in result.content:
            t.add_row(m["tenant"], m["from"], m["to"], str(len(m["releases"])),
                      _size(m["bytes"]), "ok" if m["ok"] else f"[red]{m['error'][:120]}[/]")
        out.print(t)
    if result.kept_placement:
        err.print(f"[yellow]kept the old replicas of[/] {', '.join(result.kept_placement)}: "
                  "their content could not reach the new ones (see above); apply again later")
    for tenant, rid in sorted(result.stranded.items()):
        err.print(f"[red]{tenant}[/]: no node holds its live release {rid} intact; restore it "
                  f"with `govhost backup restore {tenant}` (or `govhost node replace`)")


@app.command()
def status(
    tenant: Optional[str] = typer.Argument(None, help="Show one unit in detail."),
    as_json: bool = typer.Option(False, "--json"),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="HTTP-probe every tenant on every node."),
) -> None:
    """Nodes and tenants: placement, releases, reachability, traffic, and what is wrong."""
    from controlplane.sites import status as status_mod
    data = _call(status_mod.gather, CTX.inventory, probe, tenant, as_json=as_json)
    if as_json:
        _emit(data)
        return
    if tenant is None:
        _print_nodes(data["nodes"])
        _print_tenants(data["tenants"], [n["node"] for n in data["nodes"]], probe)
    else:
        _print_tenant(data["tenants"][0], data["nodes"], probe)
    _print_problems(data["problems"])
    if data["lock"]:
        out.print(f"apply lock held: {data['lock']}", highlight=False)


def _print_nodes(nodes: list[dict]) -> None:
    t = _table("Nodes", "node", "address", "reachable", "booted", "nginx", "agent",
               "live release", "desired", "replicas", "note")
    for n in nodes:
        booted = time.strftime("%m-%d %H:%M", time.localtime(n["boot_time"])) \
            if n.get("boot_time") else "-"
        t.add_row(n["node"], n["address"], "[green]yes[/]" if n["reachable"] else "[red]no[/]",
                  booted, "running" if n["nginx_running"] else "[red]stopped[/]",
                  "running" if n["agent_running"] else "[yellow]down[/]",
                  n["release_live"] or "-", n["release_desired"], str(n["replicas"]),
                  ("drained " if n["drained"] else "") +
                  ("" if n["in_sync"] else "[yellow]drift: run apply[/]"))
    out.print(t)


def _code_cell(code: Any, probe: bool) -> str:
    if not probe:
        return "?"
    ok = isinstance(code, int) and 200 <= code < 400
    return f"[green]{code}[/]" if ok else f"[red]{code if code is not None else 'none'}[/]"


def _print_tenants(rows: list[dict], node_names: list[str], probe: bool) -> None:
    tt = _table("Tenants", "tenant", "host", "replicas", *node_names, "requests", "5xx", "disk")
    for r in rows:
        cells = [_code_cell(r["answers"].get(n, "-"), probe) for n in node_names]
        tt.add_row(r["tenant"], r["host"], ",".join(r["replicas"]), *cells, str(r["requests"]),
                   f"[red]{r['errors_5xx']}[/]" if r["errors_5xx"] else "0",
                   _size(r["disk_bytes"]))
    out.print(tt)


def _print_tenant(r: dict, nodes: list[dict], probe: bool) -> None:
    out.print(f"[bold]{r['title']}[/] ({r['tenant']}, {r['kind']}, {r['site']} site)",
              highlight=False)
    out.print(f"  {r['host']}" + (f"  aliases: {', '.join(r['aliases'])}" if r["aliases"]
                                  else ""), highlight=False)
    out.print(f"  requests {r['requests']}, 5xx {r['errors_5xx']}, sent "
              f"{_size(r['bytes_sent'])}, disk {_size(r['disk_bytes'])}", highlight=False)
    t = _table("Through each node", "node", "role", "answer", "ms")
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
        out.print(f"  [{c}]{p['severity']}[/] {p['where']}: {p['what']}", highlight=False)


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    return t


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command()
def exporter(
    listen: str = typer.Option("127.0.0.1:9270", help="address:port to serve /metrics on."),
    interval: float = typer.Option(30.0, help="Seconds between probe rounds."),
    workers: int = typer.Option(32, help="Concurrent probes."),
) -> None:
    """Serve Prometheus metrics: probes of every tenant on every node, apply state, lock."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    from controlplane.monitoring.exporter import GovhostCollector, Prober
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        _fail(errors.GovhostError(f"--listen {listen!r}: expected address:port"))
    try:
        prober = Prober(CTX.inventory, interval, workers)
        prober.probe_once()  # the first scrape already has data
    except errors.GovhostError as exc:
        _fail(exc)
        return
    registry = CollectorRegistry()
    registry.register(GovhostCollector(CTX.inventory, prober))
    prober.start()

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server(host.strip("[]"), int(port), make_wsgi_app(registry),
                         handler_class=Quiet)
    err.print(f"govhost exporter on http://{listen}/metrics, probing every {interval:g} s",
              highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        prober.stop()


@monitoring_app.command("render")
def monitoring_render(
    out_dir: Path = typer.Option(Path("monitoring"), "--out", help="Directory to write to."),
    exporter_address: str = typer.Option("127.0.0.1:9270", "--exporter",
                                         help="Where Prometheus finds `govhost exporter`."),
    scrape_interval: int = typer.Option(15, help="Seconds between scrapes."),
) -> None:
    """Write prometheus.yml for this cluster (exporter, node agents, node_exporter), the alert
    rules it loads and the Grafana dashboards."""
    from controlplane.core import inventory as inventory_mod
    from controlplane.monitoring import prometheus as monitoring
    inv = _call(inventory_mod.load, CTX.inventory)
    written = monitoring.write(out_dir, inv.hosts, exporter_address, scrape_interval)
    for path in written:
        out.print(f"wrote {path}", highlight=False)


@monitoring_app.command("install")
def monitoring_install(
    listen: str = typer.Option("127.0.0.1:9270", help="address:port for the exporter."),
    interval: float = typer.Option(30.0, help="Seconds between probe rounds."),
    unit_dir: Path = typer.Option(Path("/etc/systemd/system"), help="Where to write the unit."),
) -> None:
    """Install `govhost exporter` as a systemd service on this (control) machine, and the
    daily timer that backs up the control plane's state."""
    from controlplane.core import remote
    from controlplane.core.state import state_dir
    exe = Path(sys.argv[0]).resolve()
    inv = CTX.inventory.resolve()
    ok, error, changed = remote.run_local_playbook(
        "control.yml", state_dir(inv) / "runner-control",
        {"govhost_bin": str(exe), "govhost_inventory": str(inv), "govhost_listen": listen,
         "govhost_interval": interval, "govhost_unit_dir": str(unit_dir.resolve())})
    if not ok:
        _fail(errors.GovhostError(f"installing the exporter service failed: {error}"))
    has_systemd = (Path("/run/systemd/system").exists()
                   and unit_dir.resolve() == Path("/etc/systemd/system"))
    out.print(("wrote " if changed else "unchanged: ") +
              str(unit_dir.resolve() / "govhost-exporter.service") +
              ("; enabled and started" if has_systemd else
               "; this machine does not run systemd: start `govhost exporter` under its "
               "supervisor instead"), highlight=False)


def _say(msg: str) -> None:
    err.print(f"  {msg}", highlight=False)


@app.command()
def publish(tenant: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Publish TENANT's upload area as a new content release on all its replicas."""
    from controlplane.content import releases as content
    res = _call(content.publish, CTX.inventory, tenant, _say, as_json=as_json)
    if as_json:
        _emit(res)
        return
    out.print(f"{tenant}: release {res['release']} {res['status']} on {', '.join(res['nodes'])}"
              f" — {res['files']} files, {_size(res['bytes'])}; added {len(res['added'])}, "
              f"changed {len(res['changed'])}, removed {len(res['removed'])}", highlight=False)
    if res["skipped"]:
        out.print(f"[yellow]not published[/] (symlinks, special or hidden files): "
                  f"{', '.join(res['skipped'][:10])}", highlight=False)


@app.command()
def rollback(tenant: str, release: Optional[str] = typer.Argument(None),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Make an earlier content release live again (default: the one before the live one)."""
    from controlplane.content import releases as content
    res = _call(content.rollback, CTX.inventory, tenant, release, _say, as_json=as_json)
    if as_json:
        _emit(res)
    else:
        out.print(f"{tenant}: {res['live']} live again (was {res['was']})", highlight=False)


@app.command()
def releases(tenant: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """TENANT's content releases: size, files, who published, which is live."""
    from controlplane.content import releases as content
    rows = _call(content.releases, CTX.inventory, tenant, as_json=as_json)
    if as_json:
        _emit(rows)
        return
    t = _table(f"{tenant}: content releases",
               "release", "status", "files", "size", "published by", "at")
    for r in rows:
        t.add_row(r["id"], f"[green]{r['status']}[/]" if r["live"] else r["status"],
                  str(r["files"]), _size(r["bytes"]), r["published_by"],
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r["published_at"])))
    out.print(t)


@review_app.command("list")
def review_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Releases waiting for a decision."""
    from controlplane.content import releases as content
    rows = content.pending(CTX.inventory)
    if as_json:
        _emit(rows)
        return
    t = _table("Waiting for review",
               "tenant", "release", "files", "size", "published by", "added", "changed", "removed")
    for r in rows:
        c = r["changes"]
        t.add_row(r["tenant"], r["release_id"], str(r["files"]), _size(r["bytes"]), r["actor"],
                  str(len(c["added"])), str(len(c["changed"])), str(len(c["removed"])))
    out.print(t)


@review_app.command("show")
def review_show(tenant: str, release: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """What a pending release changes: files added, changed, removed, with sizes."""
    from controlplane.content import releases as content
    r = _call(content.review_show, CTX.inventory, tenant, release, as_json=as_json)
    if as_json:
        _emit(r)
        return
    out.print(f"{tenant} {release} ({r['status']}), published by {r['actor']}", highlight=False)
    for kind, colour in (("added", "green"), ("changed", "yellow")):
        for path, size in r["changes"][kind]:
            out.print(f"  [{colour}]{kind:<8}[/] {path} ({_size(size)})", highlight=False)
    for path in r["changes"]["removed"]:
        out.print(f"  [red]removed [/] {path}", highlight=False)


@review_app.command("approve")
def review_approve(tenant: str, release: str) -> None:
    """Make a pending release live."""
    _decide(tenant, release, True)


@review_app.command("reject")
def review_reject(tenant: str, release: str) -> None:
    """Discard a pending release; the live site stays as it is."""
    _decide(tenant, release, False)


def _decide(tenant: str, release: str, approve: bool) -> None:
    from controlplane.content import releases as content
    res = _call(content.decide, CTX.inventory, tenant, release, approve, _say)
    out.print(f"{tenant} {release}: {res['status']}", highlight=False)


@tenant_app.command("remove")
def tenant_remove(name: str, yes: bool = typer.Option(False, "--yes"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Archive and delete a removed tenant's data and accounts on every node (after its
    manifest was deleted and applied)."""
    from controlplane.content import releases as content
    if not yes and not typer.confirm(f"archive and delete {name}'s files and accounts?"):
        raise typer.Exit(1)
    res = _call(content.remove, CTX.inventory, name, _say, as_json=as_json)
    if as_json:
        _emit(res)
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


@tenant_app.command("list")
def tenant_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List every tenant with its kind, host name and replicas."""
    from controlplane.sites import apply as apply_mod
    try:
        inv, p = apply_mod.prepare(CTX.inventory, _state())
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        return
    rows = [{"name": t.name, "title": t.title, "kind": t.kind, "host": inv.site_host(t),
             "site": t.site.type, "replicas": list(p.placement[t.name]),
             "aliases": list(t.aliases), "sections": [s.name for s in t.sections]}
            for t in inv.tenants]
    if as_json:
        _emit(rows)
        return
    t = _table(f"{len(rows)} tenants",
               "name", "title", "kind", "host", "site", "replicas", "sections")
    for r in rows:
        t.add_row(r["name"], r["title"], r["kind"], r["host"], r["site"],
                  ",".join(r["replicas"]), ",".join(r["sections"]))
    out.print(t)


@tenant_app.command("show")
def tenant_show(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one tenant's manifest, host names and placement."""
    from controlplane.sites import apply as apply_mod
    try:
        inv, p = apply_mod.prepare(CTX.inventory, _state())
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        return
    t = inv.tenant(name)
    if t is None:
        _fail(errors.GovhostError(f"no tenant named {name!r} in {CTX.inventory}/tenants"), as_json)
        return
    data = {"manifest": t.model_dump(mode="json"), "file": inv.sources[t.name],
            "hosts": [inv.site_host(t), *t.aliases], "replicas": list(p.placement[t.name]),
            "rate_limit": inv.rate_limit(t).model_dump()}
    if as_json:
        _emit(data)
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


def _drain(name: str, drained: bool, as_json: bool) -> None:
    from controlplane.core import inventory
    try:
        inv = inventory.load(CTX.inventory)
        if name not in {n.name for n in inv.hosts.nodes}:
            raise errors.GovhostError(f"no node named {name!r} in hosts.yaml")
        st = _state()
        if drained:
            from controlplane.sites.plan import compute_placement
            # Refuse a drain the remaining nodes cannot absorb, before recording it.
            compute_placement(inv, st.drained() | {name}, st.placements())
        changed = st.set_drained(name, drained)
    except errors.GovhostError as exc:
        _fail(exc, as_json)
        return
    word = "drained" if drained else "undrained"
    if as_json:
        _emit({"node": name, "drained": drained, "changed": changed})
    else:
        out.print(f"{name} {word}" + ("" if changed else " already") +
                  "; run `govhost apply` to move replicas" if changed else f"{name} already {word}")


@node_app.command("drain")
def node_drain(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Move every replica off NAME at the next apply (it keeps answering by proxying)."""
    _drain(name, True, as_json)


@node_app.command("undrain")
def node_undrain(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Let NAME hold replicas again (new tenants; existing placements stay put)."""
    _drain(name, False, as_json)


def _node_life(fn, name: str, as_json: bool) -> None:
    from controlplane.nodes import lifecycle as nodes_mod
    say = (lambda msg: None) if as_json else (lambda msg: err.print(f"  {msg}", highlight=False))
    res = _call(getattr(nodes_mod, fn), CTX.inventory, name, say, as_json=as_json)
    if as_json:
        _emit(res)
    else:
        if "apply" in res:
            a = res["apply"]
            t = _table(f"apply run {a['run_id']}: {a['result']} in {a['seconds']:.1f} s",
                       "node", "result", "release", "message")
            for n in a["nodes"]:
                t.add_row(n["node"], n["result"], n["release"] or "-", n["message"][:300])
            out.print(t)
            moved = [m for m in a["content"] if m["ok"]]
            if moved:
                out.print(f"content copied from peers: {len(moved)} unit(s), "
                          f"{sum(len(m['releases']) for m in moved)} release(s), "
                          f"{_size(sum(m['bytes'] for m in moved))}")
            for m in a["content"]:
                if not m["ok"]:
                    err.print(f"[red]{m['tenant']}[/]: content to {m['to']} failed: {m['error']}")
        for r in res.get("restored", []):
            what = ", ".join(k for k in ("php_files", "database", "release") if r.get(k))
            out.print(f"restored {r['tenant']} ({what or r.get('what')}) from the backup"
                      + (f": [red]{r['error']}[/]" if r.get("error") else ""))
        if res.get("replicas") is not None:
            out.print(f"{name} holds {len(res['replicas'])} replica(s)")
        if res.get("next"):
            out.print(f"next: {res['next']}")
        out.print(f"{name}: {res['result']}")
    if res["result"] not in ("replaced", "added", "drained", "forgotten"):
        raise typer.Exit(1)


@node_app.command("replace")
def node_replace(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """NAME is a new machine on the same address (disk replaced, reinstalled): bootstrap it
    and bring back everything it ran — config, accounts, content from peers, PHP files and
    databases from the backup."""
    _node_life("replace", name, as_json)


@node_app.command("add")
def node_add(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A node newly listed in hosts.yaml joins: bootstrapped, then given replicas."""
    _node_life("add", name, as_json)


@node_app.command("remove")
def node_remove(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Drain NAME and move its replicas (content first); once it is deleted from hosts.yaml,
    run again to forget it."""
    _node_life("remove", name, as_json)


@lab_app.command("up")
def lab_up(nodes: int = typer.Option(3, "--nodes", "-n", help="How many nodes (n1..nN)."),
           kind: str = typer.Option(None, "--kind", help="machine (systemd-nspawn, default) or "
                                    "overlay (the host's root under an overlay; fast, no init)."),
           image: str = typer.Option(None, "--image", help="Machine nodes: bare (a freshly "
                                     "installed server, default) or warm (node packages "
                                     "already installed)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Start the lab nodes (idempotent: running nodes are left alone)."""
    from controlplane.lab import machines as lab
    ns = _call(lab.up, nodes, kind, image, as_json=as_json)
    _lab_print(ns, as_json)


@lab_app.command("down")
def lab_down(as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop every lab node and remove its disk (the cached images stay)."""
    from controlplane.lab import machines as lab
    n = lab.down()
    _emit({"stopped": n}) if as_json else out.print(f"lab down: {n} node(s) stopped")


@lab_app.command("status")
def lab_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the lab nodes and whether their sshd answers."""
    from controlplane.lab import machines as lab
    _lab_print(lab.nodes(), as_json)


@lab_app.command("stop")
def lab_stop(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Cut a node's power (its disk is kept)."""
    from controlplane.lab import machines as lab
    stopped = _call(lab.stop, name, as_json=as_json)
    _emit({"node": name, "stopped": stopped}) if as_json else \
        out.print(f"{name}: {'stopped' if stopped else 'was not running'}")


@lab_app.command("start")
def lab_start(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Power a stopped node on again, from its own disk."""
    from controlplane.lab import machines as lab
    _lab_print([_call(lab.start, name, as_json=as_json)], as_json)


@lab_app.command("reboot")
def lab_reboot(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """`systemctl reboot` inside a machine node; waits until it answers SSH again."""
    from controlplane.lab import machines as lab
    _lab_print([_call(lab.reboot, name, as_json=as_json)], as_json)


@lab_app.command("wipe")
def lab_wipe(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The node's disk dies: it comes back as a bare, freshly installed server on the same
    address. `govhost node replace NAME` then brings it back to what it ran."""
    from controlplane.lab import machines as lab
    _lab_print([_call(lab.wipe, name, as_json=as_json)], as_json)


@lab_app.command("image")
def lab_image(image: str = typer.Argument("bare", help="bare or warm"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Build (once) and show the cached root filesystem machine nodes boot from."""
    from controlplane.lab import machines as lab
    from controlplane.lab import image as images
    path = _call(images.ensure, lab.LAB_ROOT, image, err.print, as_json=as_json)
    _emit({"image": image, "rootfs": str(path)}) if as_json else out.print(f"{image}: {path}")


def _lab_print(ns, as_json: bool) -> None:
    from controlplane.lab import machines as lab
    if as_json:
        _emit(lab.as_json(ns))
        return
    t = _table("Lab nodes", "node", "address", "kind", "image", "boots", "pid", "running", "ssh")
    for n in ns:
        t.add_row(n.name, n.address, n.kind, n.image or "-", str(n.boots or "-"),
                  str(n.pid or "-"), "yes" if n.running else "[red]no[/]",
                  "open" if n.ssh_open else "[red]closed[/]")
    out.print(t)


# ------------------------------------------------------------------ backups

def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@backup_app.command("run")
def backup_run(tenants: list[str] = typer.Argument(None, help="Tenants (all when none)."),
               jobs: int = typer.Option(2, "--jobs", help="Snapshots made at once per node."),
               control_only: bool = typer.Option(False, "--control-only",
                                                 help="Only the control plane's state store "
                                                 "and inventory (its daily timer)."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Back up now: files from each tenant's first replica, databases from the db node, and
    (for a full run) the control plane's own state. Exit 1 if anything failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from controlplane.backup import run as backup

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, disable=as_json, transient=True)
    task = progress.add_task("backup", total=None)

    def on_result(r: dict) -> None:
        progress.update(task, advance=1, description=f"{r['tenant']} {r['kind']}")
        if not r["ok"]:
            progress.console.print(f"[red]failed[/] {r['tenant']} {r['kind']} on {r['node']}: "
                                   f"{r['error']}", highlight=False)

    with progress:
        res = _call(lambda: backup.run(
            CTX.inventory, tenants or (), on_result=on_result, jobs=jobs,
            control_only=control_only, on_start=lambda n: progress.update(task, total=n)),
            as_json=as_json)
    if as_json:
        _emit(res)
    else:
        t = _table(f"backup run {res['run']}: {res['ok']} ok, {res['failed']} failed",
                   "tenant", "kind", "node", "result", "snapshot", "files", "added", "seconds")
        for r in res["results"]:
            t.add_row(r["tenant"], r["kind"], r["node"],
                      "[green]ok[/]" if r["ok"] else "[red]failed[/]",
                      (r.get("snapshot") or "-")[:8], str(r.get("files", "-")),
                      _size(r.get("bytes_added") or 0), f"{r['seconds']:.1f}")
        out.print(t)
        for r in res["results"]:
            if not r["ok"]:
                err.print(f"[red]failed[/] {r['tenant']} {r['kind']} on {r['node']}: "
                          f"{r['error']}", highlight=False)
    if res["failed"]:
        raise typer.Exit(1)


@backup_app.command("list")
def backup_list(tenant: Optional[str] = typer.Argument(None),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """The snapshots in the repository (of TENANT), oldest first."""
    from controlplane.backup import run as backup
    snaps = [backup.describe(s) for s in _call(backup.snapshots, CTX.inventory, tenant,
                                               as_json=as_json)]
    if as_json:
        _emit(snaps)
        return
    t = _table(f"{len(snaps)} snapshot(s)", "id", "time", "tenant", "kind", "node", "run", "reason")
    for s in snaps:
        t.add_row(s["id"], s["time"][:19].replace("T", " ") + " UTC", s["tenant"], s["kind"],
                  s["node"], s["run"], s["reason"])
    out.print(t)


@backup_app.command("status")
def backup_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Per tenant: last successful backup and last error, as recorded on the nodes (timer
    runs included)."""
    from controlplane.backup import run as backup
    rows = _call(backup.status, CTX.inventory, as_json=as_json)
    if as_json:
        _emit(rows)
        return
    t = _table("backups", "tenant", "kind", "node", "last success", "age", "error")
    now = time.time()
    for r in rows:
        age = (f"{(now - r['last_success']) / 3600:.1f} h" if r["last_success"] else
               "[red]never[/]")
        t.add_row(r["tenant"], r["kind"], r["node"], _when(r["last_success"]), age,
                  f"[red]{r['error'][:80]}[/]" if r["error"] else "")
    out.print(t)


@backup_app.command("restore")
def backup_restore(
    tenant: str,
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Snapshot id (or prefix)."),
    at: Optional[str] = typer.Option(None, "--at", help="The last snapshot at or before this "
                                     "time, e.g. 2026-11-20T18:00 (local time unless a zone "
                                     "is given)."),
    to: Optional[Path] = typer.Option(None, "--to", help="Restore into this new directory on "
                                      "this machine instead of the live site."),
    no_db: bool = typer.Option(False, "--no-db", help="Leave the database alone."),
    no_safety_backup: bool = typer.Option(False, "--no-safety-backup",
                                          help="Do not back up the live state first."),
    yes: bool = typer.Option(False, "--yes", "-y"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore TENANT: to the live site as a new content release (undo with `govhost
    rollback`), with its upload area and database, or --to a directory."""
    from controlplane.backup import run as backup
    from controlplane.backup import plan as backup_plan
    if snapshot and at:
        _fail(errors.GovhostError("give --snapshot or --at, not both"), as_json)
    when = None
    if at:
        try:
            when = backup_plan.parse_time(at)
        except ValueError as exc:
            _fail(errors.GovhostError(str(exc)), as_json)
    if to is None and not (yes or as_json):
        if not sys.stdin.isatty():
            _fail(errors.GovhostError("a live restore replaces the site, its upload area and "
                                      "its database: pass --yes"), as_json)
        if not typer.confirm(f"Replace {tenant}'s live site, upload area and database?"):
            raise typer.Exit(1)
    res = _call(lambda: backup.restore(CTX.inventory, tenant, snapshot=snapshot, at=when, to=to,
                                       with_db=not no_db, safety_backup=not no_safety_backup,
                                       say=_say), as_json=as_json)
    if as_json:
        _emit(res)
    elif to is not None:
        out.print(f"{tenant}: snapshot {res['files_snapshot'][:8]} restored to {res['to']}"
                  + (f"; database dump {res['database_dump']}" if res.get("database_dump") else "")
                  + f" in {res['seconds']:.1f} s", highlight=False)
    else:
        out.print(f"{tenant}: snapshot {res['files_snapshot'][:8]} ({res['files_time'][:19]}) "
                  f"is live as release {res.get('release', '-')}"
                  + (f"; database {res['database']} restored" if res.get("database") else "")
                  + f" in {res['seconds']:.1f} s. Undo: `govhost rollback {tenant}`",
                  highlight=False)


@backup_app.command("drill")
def backup_drill(tenant: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Restore TENANT's latest snapshot into scratch space, compare file hashes and database
    row counts, and record the result and the time it took (the RTO)."""
    from controlplane.backup import run as backup
    res = _call(backup.drill, CTX.inventory, tenant, _say, as_json=as_json)
    if as_json:
        _emit(res)
    else:
        verdict = "[green]passed[/]" if res["ok"] else "[red]FAILED[/]"
        out.print(f"{tenant}: drill {verdict} on snapshot {res['snapshot'][:8]}; restore took "
                  f"{res['rto_seconds']:.1f} s")
    if not res["ok"]:
        raise typer.Exit(1)


@backup_app.command("verify")
def backup_verify(subset: Optional[int] = typer.Option(None, "--subset",
                                                       help="Percent of the data to read."),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the repository's structure and read a random part of its data (restic check)."""
    from controlplane.backup import run as backup
    res = _call(backup.verify, CTX.inventory, subset, as_json=as_json)
    if as_json:
        _emit(res)
    elif res["ok"]:
        out.print(f"[green]repository ok[/]: {res['subset_percent']} % of the data read in "
                  f"{res['seconds']:.1f} s")
    else:
        err.print(f"[red]repository damaged[/] (restic exit {res['exit']}):", highlight=False)
        for p in res["problems"]:
            err.print(f"  {p}", highlight=False, markup=False)
    if not res["ok"]:
        raise typer.Exit(1)


@backup_app.command("copy")
def backup_copy(as_json: bool = typer.Option(False, "--json")) -> None:
    """Copy new snapshots to the off-site repository (cluster.yaml backup.offsite)."""
    from controlplane.backup import run as backup
    res = _call(backup.copy_offsite, CTX.inventory, as_json=as_json)
    if as_json:
        _emit(res)
    else:
        out.print(f"off-site: {res['copied']} snapshot(s) copied in {res['seconds']:.1f} s; "
                  f"{res['snapshots']} there in all")


@backup_app.command("forget")
def backup_forget(no_prune: bool = typer.Option(False, "--no-prune"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Apply every tenant's retention policy (and prune what nothing uses any more)."""
    from controlplane.backup import run as backup
    res = _call(backup.forget, CTX.inventory, not no_prune, as_json=as_json)
    if as_json:
        _emit(res)
    else:
        out.print(f"{res['removed']} snapshot(s) forgotten, {res['kept']} kept"
                  + ("; repository pruned" if res["pruned"] else ""))


@backup_app.command("history")
def backup_history(tenant: Optional[str] = typer.Argument(None),
                   limit: int = typer.Option(50, "--limit"),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """The catalogue in the state store: backups made through govhost, drills and verifies."""
    from controlplane.backup import run as backup
    with backup.open_state_for(CTX.inventory) as st:
        rows, checks = st.backups(tenant, limit), st.checks(limit=limit)
    if tenant:
        checks = [c for c in checks if c["tenant"] in (tenant, None)]
    if as_json:
        _emit({"backups": rows, "checks": checks})
        return
    t = _table("backups",
               "finished", "tenant", "kind", "node", "result", "snapshot", "seconds", "added")
    for r in rows:
        t.add_row(_when(r["finished_at"]), r["tenant"], r["kind"], r["node"],
                  "[green]ok[/]" if r["ok"] else f"[red]{r['error'][:60]}[/]",
                  (r["snapshot"] or "-")[:8], f"{r['seconds'] or 0:.1f}",
                  _size(r["bytes_added"] or 0))
    out.print(t)
    t = _table("verifies, drills and off-site copies", "at", "kind", "tenant", "result", "seconds")
    for c in checks:
        t.add_row(_when(c["at"]), c["kind"], c["tenant"] or "-",
                  "[green]ok[/]" if c["ok"] else "[red]failed[/]", f"{c['seconds'] or 0:.1f}")
    out.print(t)


@backup_app.command("key")
def backup_key(as_json: bool = typer.Option(False, "--json")) -> None:
    """The repository passwords and the nodes' public key: keep the passwords in a sealed
    envelope off this machine (without them no restore is possible); install the public key
    for the off-site repository's account."""
    from controlplane.backup import run as backup
    res = _call(backup.key, CTX.inventory, as_json=as_json)
    if as_json:
        _emit(res)
        return
    for k, v in res.items():
        out.print(f"{k}: {v}", highlight=False, markup=False)


# ------------------------------------------------------------------ compliance

@compliance_app.command("check")
def compliance_check(tenants: list[str] = typer.Argument(None, help="Units (all when none)."),
                     at: Optional[str] = typer.Option(None, "--at", help="Judge as of this "
                                                      "time (e.g. a week's end)."),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """Crawl and check every unit now (links, footer, freshness, probes, HTTPS/IPv6, logs);
    the results go to the state store for the report and the exporter."""
    from controlplane.backup import plan as backup_plan
    from controlplane.compliance import run as compliance_run
    when = None
    if at:
        try:
            when = backup_plan.parse_time(at)
        except ValueError as exc:
            _fail(errors.GovhostError(str(exc)), as_json)
    res = _call(lambda: compliance_run.check(CTX.inventory, tenants or None, when,
                                             say=lambda m: None), as_json=as_json)
    data = {t: {k: v.to_json() for k, v in vs.items()} for t, vs in res.items()}
    if as_json:
        _emit(data)
    else:
        from controlplane.compliance import rules
        t = _table("compliance", "unit", *rules.INDICATORS)
        for name, vs in sorted(res.items()):
            t.add_row(name, *("[green]pass[/]" if vs[i].ok else "[red]FAIL[/]"
                              for i in rules.INDICATORS))
        out.print(t)
        for name, vs in sorted(res.items()):
            for i in rules.INDICATORS:
                if not vs[i].ok:
                    err.print(f"{name} {i}: {vs[i].summary}", highlight=False, markup=False)
    if not all(v.ok for vs in res.values() for v in vs.values()):
        raise typer.Exit(1)


@compliance_app.command("probe")
def compliance_probe(rounds: int = typer.Option(1, "--rounds", min=1, max=10_000),
                     interval: float = typer.Option(0.0, "--interval", min=0.0, max=3600.0),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """Run probe rounds now and record them (the exporter does this continuously)."""
    from controlplane.monitoring.exporter import Prober
    prober = Prober(CTX.inventory, interval)
    failed: dict[str, int] = {}
    for i in range(rounds):
        rnd = prober.probe_once()
        if rnd.error and not rnd.tenants:
            _fail(errors.GovhostError(rnd.error), as_json)
        if rnd.error.startswith("recording"):
            _fail(errors.GovhostError(rnd.error), as_json)
        for t, nodes in rnd.failed.items():
            if nodes:
                failed[t] = failed.get(t, 0) + 1
        if i + 1 < rounds and interval:
            time.sleep(interval)
    res = {"rounds": rounds, "failed_rounds": dict(sorted(failed.items()))}
    if as_json:
        _emit(res)
    else:
        out.print(f"{rounds} round(s) recorded; units with failed probes: "
                  + (", ".join(f"{t} ({n})" for t, n in sorted(failed.items())) or "none"))


@compliance_app.command("report")
def compliance_report(week: Optional[str] = typer.Option(None, "--week", help="YYYY-Www "
                                                         "(the last week checked if none)."),
                      fmt: str = typer.Option("html", "--format", help="html, json or csv."),
                      output: Optional[Path] = typer.Option(None, "--output", "-o")) -> None:
    """The weekly report: one row per unit, pass/fail per indicator with the evidence."""
    from controlplane.compliance import report
    try:
        text = report.render(CTX.inventory, week, fmt)
    except (errors.GovhostError, ValueError) as exc:
        _fail(errors.GovhostError(str(exc)))
        return
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)



# -- certificates -----------------------------------------------------------------------

def _at_option(at: Optional[str]) -> Optional[float]:
    if not at:
        return None
    from controlplane.backup import plan as backup_plan
    try:
        return backup_plan.parse_time(at)
    except ValueError as exc:
        _fail(errors.GovhostError(f"--at: {exc}"))
        raise


_STATE_STYLE = {"ok": "green", "due": "yellow", "missing": "yellow", "failing": "red",
                "expired": "red", "import needed": "yellow", "obsolete": "dim",
                "names changed": "yellow", "untrusted chain": "red"}


@cert_app.command("status")
def cert_status(as_json: bool = typer.Option(False, "--json"),
                at: Optional[str] = typer.Option(None, "--at", help="Judge as of this time.")
                ) -> None:
    """Every certificate: names, issuer, not-after, days left, state, last error."""
    from controlplane.tls import certificates as tls
    rows = _call(tls.status, CTX.inventory, _at_option(at), as_json=as_json)
    if as_json:
        _emit(rows)
        return
    t = _table("certificates", "certificate", "issuer", "names", "units", "not after",
               "days left", "renews", "state", "last error")
    for r in rows:
        names = ", ".join(r["names"][:3]) + (f" +{len(r['names']) - 3}" if len(r["names"]) > 3
                                            else "")
        style = _STATE_STYLE.get(r["state"], "")
        t.add_row(r["lineage"], r["issuer"], names, str(len(r["units"])), _when(r["not_after"]),
                  "-" if r["days_left"] is None else f"{r['days_left']:.0f}",
                  _when(r["renew_at"]), f"[{style}]{r['state']}[/]" if style else r["state"],
                  (r["last_error"][:90] + (f" (next try {_when(r['next_attempt'])})"
                                           if r["next_attempt"] else "")) if r["last_error"]
                  else "")
    out.print(t)
    if any(r["state"] in ("failing", "expired") for r in rows):
        raise typer.Exit(1)


def _cert_result(res: dict, as_json: bool) -> None:
    if as_json:
        _emit(res)
    else:
        t = _table("certificate run", "certificate", "issuer", "why", "result", "seconds")
        for r in res["results"]:
            t.add_row(r["lineage"], r["issuer"], r["reason"],
                      "[green]issued[/]" if r["ok"] else f"[red]failed[/]: {r['error'][:120]}",
                      f"{r['seconds']:.1f}")
        for r in res["skipped"]:
            t.add_row(r["lineage"], "", r["reason"], f"[yellow]not now[/]: {r['why']}", "")
        out.print(t)
        if not res["results"] and not res["skipped"]:
            out.print("nothing is due")
        if res["apply"]:
            out.print(f"apply: {res['apply']['result']}")
        out.print(f"ACME orders in the last 7 days: {res['orders_this_week']}")
    if any(not r["ok"] for r in res["results"]) or (
            res["apply"] and res["apply"]["result"] not in ("changed", "unchanged")):
        raise typer.Exit(1)


@cert_app.command("renew")
def cert_renew(force: bool = typer.Option(False, "--force", help="Renew every certificate "
                                          "now, due or not, ignoring backoff."),
               at: Optional[str] = typer.Option(None, "--at", help="Decide what is due as of "
                                                "this time (testing the schedule)."),
               no_apply: bool = typer.Option(False, "--no-apply", help="Store new certificates "
                                             "but do not ship them yet."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Issue what is missing, renew what is due, then apply. Run by a timer."""
    from controlplane.tls import certificates as tls
    res = _call(lambda: tls.renew(CTX.inventory, force=force, now=_at_option(at),
                                  deploy=not no_apply, say=lambda m: None if as_json else
                                  err.print(f"[dim]{m}[/]")), as_json=as_json)
    _cert_result(res, as_json)


@cert_app.command("issue")
def cert_issue(unit: str = typer.Argument(..., help="Tenant name, or _portal."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Issue a unit's certificate now (its whole lineage), then apply."""
    from controlplane.tls import certificates as tls
    res = _call(lambda: tls.renew(CTX.inventory, units=[unit], force=True,
                                  say=lambda m: None if as_json else err.print(f"[dim]{m}[/]")),
                as_json=as_json)
    _cert_result(res, as_json)


@cert_app.command("import")
def cert_import(unit: str = typer.Argument(..., help="Tenant name (issuer manual)."),
                cert: Path = typer.Option(..., "--cert", help="PEM: the certificate, then its "
                                          "intermediates."),
                key: Path = typer.Option(..., "--key", help="PEM: its private key."),
                root: list[Path] = typer.Option([], "--root", help="Also trust this root "
                                                "(e.g. a CA not in the system store)."),
                no_apply: bool = typer.Option(False, "--no-apply"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Import a bought certificate after checking key, chain and names; then apply."""
    from controlplane.tls import certificates as tls
    res = _call(lambda: tls.import_cert(CTX.inventory, unit, cert, key, root,
                                        deploy=not no_apply), as_json=as_json)
    if as_json:
        _emit(res)
    else:
        out.print(f"[green]imported[/] {res['lineage']}: {', '.join(res['names'])}, valid "
                  f"until {_when(res['not_after'])}"
                  + (f"; apply: {res['apply']['result']}" if res["apply"] else ""))


@ca_app.command("export")
def cert_ca_export(output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                         help="Write here instead of stdout.")
                   ) -> None:
    """The county CA's root certificate (PEM), to install on the units' computers."""
    from controlplane.tls import certificates as tls
    pem = _call(tls.ca_export, CTX.inventory)
    if output:
        output.write_bytes(pem)
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(pem.decode())


@services_app.command("up")
def services_up(as_json: bool = typer.Option(False, "--json")) -> None:
    """Start BIND (the county DNS, RFC 2136 updates) and Pebble (an ACME CA) for the lab."""
    from controlplane.core import inventory
    from controlplane.lab import services as lab_services
    inv = _call(inventory.load, CTX.inventory, as_json=as_json)
    rows = _call(lab_services.up, inv.cluster.domain,
                 [n.address for n in inv.hosts.web_nodes], as_json=as_json)
    _services_print(rows, as_json)


@services_app.command("down")
def services_down() -> None:
    """Stop the lab's county services."""
    from controlplane.lab import services as lab_services
    out.print(f"stopped {lab_services.down()} service(s)")


@services_app.command("status")
def services_status(as_json: bool = typer.Option(False, "--json")) -> None:
    from controlplane.lab import services as lab_services
    _services_print(lab_services.status(), as_json)


def _services_print(rows, as_json: bool) -> None:
    from dataclasses import asdict
    if as_json:
        _emit([asdict(r) for r in rows])
        return
    t = _table("lab services", "service", "address", "pid", "running")
    for r in rows:
        t.add_row(r.name, r.address, str(r.pid or "-"), "yes" if r.running else "[red]no[/]")
    out.print(t)



@dns_app.command("plan")
def dns_plan_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """The records the county's DNS must hold: every name on every web node (A, and AAAA
    where nodes have `address6`), as zone-file lines."""
    from dataclasses import asdict
    from controlplane.dns import plan as dns_plan
    from controlplane.core import inventory
    inv = _call(inventory.load, CTX.inventory, as_json=as_json)
    if as_json:
        _emit([asdict(r) for r in dns_plan.records(inv)])
    else:
        sys.stdout.write(dns_plan.zone_lines(inv))


if __name__ == "__main__":
    main()
