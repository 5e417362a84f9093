"""`govhost` commands: The unit web console."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from commands.output import call, county, err, fail, out
from controlplane.core import errors

app = typer.Typer()
console_app = typer.Typer(help="The unit web console.", invoke_without_command=True)
app.add_typer(console_app, name="console")

DEFAULT_LISTEN = "127.0.0.1:8090"


@console_app.callback()
def console(ctx: typer.Context,
            listen: str = typer.Option(None, "--listen", help="address:port; default: "
                                       "cluster.yaml console.address and port, which every "
                                       "node's nginx proxies console.<domain> to."),
            http: bool = typer.Option(False, "--http", help="Plain HTTP straight to browsers "
                                      "(a lab on one machine): cookies without Secure."),
            direct: bool = typer.Option(False, "--direct", help="Take requests that did not "
                                        "come through the nodes' nginx (a console on a "
                                        "laptop, nobody else on its address).")
            ) -> None:
    """Serve the unit web console (people: `govhost user add`)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from controlplane.console.app import build
    c = county()
    inv = call(lambda: c.inv)
    if listen is None:
        listen = inv.cluster.console.listen if inv.cluster.console else DEFAULT_LISTEN
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        fail(errors.GovhostError(f"--listen {listen!r}: expected address:port"))
    # Only the nodes' nginx, which holds the proxy secret, reaches the console and says who
    # the visitor is (controlplane/console/guard.py); uvicorn's own X-Forwarded-For trust
    # by address would believe units' PHP on the same nodes.
    app_ = build(c, secure=not http, behind_nginx=not direct)
    err.print(f"govhost console on http://{listen}/ ({'HTTP' if http else 'behind HTTPS'}"
              f"{', direct' if direct else ', through the nodes only'})", highlight=False)
    uvicorn.run(app_, host=host.strip("[]"), port=int(port), proxy_headers=False,
                log_level="warning", server_header=False)


@console_app.command("install")
def console_install(
    unit_dir: Path = typer.Option(Path("/etc/systemd/system"), help="Where to write the unit."),
) -> None:
    """Install `govhost console` as a systemd service on this (control) machine
    (playbooks/control.yml); every node's nginx proxies console.<domain> to it."""
    from controlplane.core import remote
    c = county()
    inv = call(lambda: c.inv)
    if inv.cluster.console is None:
        fail(errors.GovhostError("cluster.yaml has no `console:`; add it (docs/console.md) "
                                 "and apply, so the nodes proxy the console's name"))
    ok, error, changed = remote.run_local_playbook(
        "control.yml", c.state_dir / "runner-control",
        {"govhost_bin": str(Path(sys.argv[0]).resolve()),
         "govhost_inventory": str(c.root.resolve()),
         "govhost_unit_dir": str(unit_dir.resolve())}, tags="console")
    if not ok:
        fail(errors.GovhostError(f"installing the console service failed: {error}"))
    has_systemd = (Path("/run/systemd/system").exists()
                   and unit_dir.resolve() == Path("/etc/systemd/system"))
    out.print(("wrote " if changed else "unchanged: ") +
              str(unit_dir.resolve() / "govhost-console.service") +
              ("; enabled and started" if has_systemd else
               "; this machine does not run systemd: start `govhost console` under its "
               "supervisor instead"), highlight=False)
