"""`govhost` commands: The unit web console."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import typer

from commands.output import call, county, err, fail, out
from controlplane.core import errors, paths

app = typer.Typer()
console_app = typer.Typer(help="The unit web console.", invoke_without_command=True)
app.add_typer(console_app, name="console")



@console_app.callback()
def console(ctx: typer.Context,
            listen: str = typer.Option(None, "--listen", help="address:port; default: "
                                       "cluster.yaml console.address and port, which every "
                                       "node's nginx proxies console.<domain> to."),
            http: bool = typer.Option(False, "--http", help="Plain HTTP straight to browsers "
                                      "(a lab on one machine): cookies without Secure."),
            direct: bool = typer.Option(False, "--direct", help="Take requests that did not "
                                        "come through the nodes' nginx (a console on a "
                                        "laptop, nobody else on its address)."),
            account: str = typer.Option(paths.CONSOLE_ACCOUNT, "--account",
                                        help="The account the web process runs as (it "
                                        "holds no key and reads no state).")
            ) -> None:
    """Serve the unit web console (people: `govhost user add`): a web process as its own
    account, and this process, which keeps the keys, answering its requests (docs/console.md,
    "Two processes")."""
    if ctx.invoked_subcommand is not None:
        return
    from controlplane.console import broker as broker_mod
    from controlplane.console import transport, web
    if listen is not None:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            fail(errors.GovhostError(f"--listen {listen!r}: expected address:port"))
    uid = gid = None
    if os.geteuid() != 0:
        fail(errors.GovhostError(
            "run `govhost console` as root: it keeps the keys in one process and serves the "
            f"web from another, as the {account} account; run as any other account both "
            "would hold the same rights"))
    else:
        try:
            who = pwd.getpwnam(account)
        except KeyError:
            fail(errors.GovhostError(
                f"no account {account!r} for the console's web process: `govhost console "
                f"install` makes it, or `useradd --system --no-create-home --shell "
                f"/usr/sbin/nologin {account}`"))
        if who.pw_uid == 0:
            fail(errors.GovhostError(f"--account {account}: the web process never runs as "
                                     "root"))
        uid, gid = who.pw_uid, who.pw_gid
    run_dir = Path(tempfile.mkdtemp(prefix="govhost-console-",
                                    dir="/run" if os.access("/run", os.W_OK) else None))
    sock = run_dir / "broker.sock"
    sys.stdout.flush()
    sys.stderr.flush()
    # The web process is forked now, before the inventory, the secret or the state are read:
    # nothing of them is in its memory (web.py).
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        web.run(sock, uid, gid, parent, secure=not http, behind_nginx=not direct,
                listen=listen)
    try:
        c = county()
        inv = call(lambda: c.inv)
        max_upload = (inv.cluster.console.max_upload_mb if inv.cluster.console else 1024) << 20
        server = transport.serve(broker_mod.Broker(c, secure=not http), sock,
                                 uid if uid is not None else os.geteuid(),
                                 gid if gid is not None else os.getegid(),
                                 max_upload + (4 << 20))
    except BaseException:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise

    def stop(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    err.print(f"govhost console on http://{listen or broker_mod.listen_of(inv)}/ "
              f"({'HTTP' if http else 'behind HTTPS'}"
              f"{', direct' if direct else ', through the nodes only'}; web process "
              f"{child} as {account if uid is not None else 'this account'})",
              highlight=False)
    try:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
    finally:
        server.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    raise typer.Exit(code if code > 0 else 0)


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
