"""`govhost` commands: The lab cluster and its county services."""
from __future__ import annotations

from pathlib import Path

import typer

from commands.output import call, county, emit, err, out, table

app = typer.Typer()
lab_app = typer.Typer(help="The lab cluster on this machine: nodes in their own network namespaces on a lab bridge (10.77.0.0/24), reached through the lab's router.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")
services_app = typer.Typer(help="The lab's county services: Pebble (ACME CA) and BIND (DNS).",
                           no_args_is_help=True)
lab_app.add_typer(services_app, name="services")


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
    ns = call(lab.up, nodes, kind, image, as_json=as_json)
    _lab_print(ns, as_json)


@lab_app.command("down")
def lab_down(as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop every lab node and remove its disk (the cached images stay)."""
    from controlplane.lab import machines as lab
    n = lab.down()
    emit({"stopped": n}) if as_json else out.print(f"lab down: {n} node(s) stopped")


@lab_app.command("status")
def lab_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the lab nodes and whether their sshd answers."""
    from controlplane.lab import machines as lab
    _lab_print(lab.nodes(), as_json)


@lab_app.command("stop")
def lab_stop(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Cut a node's power (its disk is kept)."""
    from controlplane.lab import machines as lab
    stopped = call(lab.stop, name, as_json=as_json)
    emit({"node": name, "stopped": stopped}) if as_json else \
        out.print(f"{name}: {'stopped' if stopped else 'was not running'}")


@lab_app.command("start")
def lab_start(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Power a stopped node on again, from its own disk."""
    from controlplane.lab import machines as lab
    _lab_print([call(lab.start, name, as_json=as_json)], as_json)


@lab_app.command("reboot")
def lab_reboot(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """`systemctl reboot` inside a machine node; waits until it answers SSH again."""
    from controlplane.lab import machines as lab
    _lab_print([call(lab.reboot, name, as_json=as_json)], as_json)


@lab_app.command("wipe")
def lab_wipe(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The node's disk dies: it comes back as a bare, freshly installed server on the same
    address. `govhost node replace NAME` then brings it back to what it ran."""
    from controlplane.lab import machines as lab
    _lab_print([call(lab.wipe, name, as_json=as_json)], as_json)


@lab_app.command("outside", context_settings={"allow_extra_args": True,
                                               "ignore_unknown_options": True})
def lab_outside(ctx: typer.Context) -> None:
    """Run a command from "the internet": an address that is none of the county's, in a
    network namespace of its own, through the lab's router. `govhost lab outside -- curl
    http://10.77.0.101/`: what a citizen or the inspector sees."""
    from controlplane.lab import network
    raise typer.Exit(call(network.outside, list(ctx.args)))


@lab_app.command("freeze")
def lab_freeze(name: str, thaw: bool = typer.Option(False, "--thaw", help="Continue it."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """A hung machine: every process of the node stopped and its network silent (a frozen
    kernel answers no ARP either). `--thaw` lets it run again, where it left off."""
    from controlplane.lab import network
    n = call(network.freeze, name, not thaw, as_json=as_json)
    emit({"node": name, "frozen": not thaw, "processes": n}) if as_json else \
        out.print(f"{name}: {'thawed' if thaw else 'frozen'} ({n} processes)")


@lab_app.command("partition")
def lab_partition(a: str, b: str, heal: bool = typer.Option(False, "--heal",
                                                            help="Let VRRP through again."),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Two nodes stop hearing each other's VRRP advertisements (a switch that drops them);
    all their other traffic still passes. `--heal` ends every partition."""
    from controlplane.lab import network
    call(network.partition, a, b, not heal, as_json=as_json)
    emit({"nodes": [a, b], "partitioned": not heal}) if as_json else \
        out.print(f"{a} ↔ {b}: VRRP {'passes again' if heal else 'dropped'}")


@lab_app.command("upload")
def lab_upload(unit: str, directory: Path,
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Replace UNIT's upload area with DIRECTORY's files, as the unit's SFTP upload would
    (then `govhost publish UNIT`)."""
    from controlplane.lab import seed
    res = call(seed.upload, county(), unit, directory, as_json=as_json)
    emit(res) if as_json else out.print(f"{unit}: {res['files']} files in the upload area on "
                                        f"{res['node']}")


@lab_app.command("image")
def lab_image(image: str = typer.Argument("bare", help="bare or warm"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Build (once) and show the cached root filesystem machine nodes boot from."""
    from controlplane.lab import image as images
    from controlplane.lab import machines as lab
    path = call(images.ensure, lab.LAB_ROOT, image, err.print, as_json=as_json)
    emit({"image": image, "rootfs": str(path)}) if as_json else out.print(f"{image}: {path}")


def _lab_print(ns, as_json: bool) -> None:
    from controlplane.lab import machines as lab
    if as_json:
        emit(lab.as_json(ns))
        return
    t = table("Lab nodes", "node", "address", "kind", "image", "boots", "pid", "running", "ssh")
    for n in ns:
        t.add_row(n.name, n.address, n.kind, n.image or "-", str(n.boots or "-"),
                  str(n.pid or "-"), "yes" if n.running else "[red]no[/]",
                  "open" if n.ssh_open else "[red]closed[/]")
    out.print(t)


@services_app.command("up")
def services_up(as_json: bool = typer.Option(False, "--json")) -> None:
    """Start BIND (the county DNS, RFC 2136 updates) and Pebble (an ACME CA) for the lab."""
    from controlplane.dns import plan as dns_plan
    from controlplane.lab import services as lab_services
    inv = call(lambda: county().inv, as_json=as_json)
    # The county's names resolve as the DNS plan says: to the floating addresses, if any.
    rows = call(lab_services.up, inv.cluster.domain, dns_plan.published(inv)[0],
                as_json=as_json)
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
        emit([asdict(r) for r in rows])
        return
    t = table("lab services", "service", "address", "pid", "running")
    for r in rows:
        t.add_row(r.name, r.address, str(r.pid or "-"), "yes" if r.running else "[red]no[/]")
    out.print(t)
