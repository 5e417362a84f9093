"""`govhost` commands: the control machine's own backup, restore and drill."""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from commands.output import call, county, emit, fail, note, out, table, when
from controlplane.core import errors

app = typer.Typer()
control_app = typer.Typer(help="The control machine itself: recovery key, backup, restore "
                          "on a bare machine, drill.", no_args_is_help=True)
app.add_typer(control_app, name="control")


@control_app.command("init")
def control_init(as_json: bool = typer.Option(False, "--json")) -> None:
    """Make the county recovery key and print the recovery sheet, once. Print it, keep it in
    the safe, and run `govhost apply` so the backup accounts accept the key."""
    from controlplane.backup import control, recovery
    c = county()
    inv = call(lambda: c.inv, as_json=as_json)
    key, sheet = call(control.init, inv, c.state_dir, as_json=as_json)
    if sheet is None:
        msg = (f"the recovery key exists already (fingerprint {recovery.fingerprint(key)}); "
               "it is shown only when made. Lost the sheet? See docs/operations.md, "
               "'The recovery key'")
        if as_json:
            emit({"made": False, "fingerprint": recovery.fingerprint(key), "message": msg})
        else:
            out.print(msg, highlight=False)
        return
    if as_json:
        emit({"made": True, "fingerprint": recovery.fingerprint(key),
              "recovery_key": recovery.format_key(key), "sheet": sheet})
    else:
        out.print(sheet, highlight=False, markup=False)
        note("this is the only time the key is shown; now run `govhost apply`")


@control_app.command("public-key")
def control_public_key() -> None:
    """The recovery key's public SSH line, for an off-site account outside the cluster."""
    from controlplane.backup import control, recovery
    key = call(control.load_key, county().state_dir)
    if key is None:
        fail(errors.GovhostError("no recovery key yet; run `govhost control init`"))
    out.print(f'restrict,command="/usr/lib/openssh/sftp-server" {recovery.ssh_public_key(key)}',
              highlight=False, markup=False, soft_wrap=True)


@control_app.command("backup")
def control_backup(as_json: bool = typer.Option(False, "--json")) -> None:
    """One consistent snapshot of everything govhost needs on this machine (state store,
    secrets, CA, ACME account, keys, inventory) to the backup node and off-site. Exit 1 if a
    repository did not get it."""
    from controlplane.backup import control
    res = call(control.backup, county(), lambda m: None if as_json else note(m),
               as_json=as_json)
    if as_json:
        emit(res)
    else:
        t = table(f"control backup {res['run']}: {res['files']} files",
                  "repository", "result", "snapshot", "seconds")
        for r in res["repositories"]:
            t.add_row(r["repository"], "[green]ok[/]" if r["ok"] else f"[red]{r['error']}[/]",
                      (r["snapshot"] or "-")[:8], f"{r['seconds']:.1f}")
        out.print(t)
        if res["skipped"]:
            note("not in the snapshot (links and other non-files): " + ", ".join(res["skipped"]))
    if not res["ok"]:
        raise typer.Exit(1)


@control_app.command("restore")
def control_restore(
    source: str = typer.Option(..., "--from", help="The backup node's (or off-site) address."),
    path: Optional[str] = typer.Option(None, "--path", help="The control repository's path "
                                       "there (on the recovery sheet)."),
    port: int = typer.Option(22, "--port"),
    user: str = typer.Option("govhost-control", "--user"),
    to: Optional[Path] = typer.Option(None, "--to", help="Put the inventory here instead of "
                                      "where it was."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="A snapshot id (prefix); "
                                           "default the newest."),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="Read the recovery key "
                                            "from this file instead of asking."),
    force: bool = typer.Option(False, "--force", help="Move a county already here aside."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Bring this (bare) machine back as the county's control machine from a control
    snapshot; then ask the nodes what changed after it and record the publishes found."""
    from controlplane.backup import control, recovery
    text = os.environ.pop("GOVHOST_RECOVERY_KEY", "")     # not passed on to restic or ssh
    if key_file is not None:
        try:
            text = key_file.read_text()
        except OSError as exc:
            fail(errors.GovhostError(f"--key-file: {exc}"), as_json)
    if not text:
        if not sys.stdin.isatty():
            text = sys.stdin.readline()
        else:
            text = getpass.getpass("recovery key (from the recovery sheet): ")
    repo = control.Repository("given", "control", source, port, user,
                              path or recovery.control_path("/srv/govhost/backup/repo"))
    res = call(lambda: control.restore(text, repo, inventory=to, snapshot=snapshot,
                                       force=force, say=lambda m: None if as_json else note(m)),
               as_json=as_json)
    if as_json:
        emit(res)
        return
    out.print(f"restored snapshot {res['snapshot']} of {res['snapshot_time'][:19]} "
              f"({res['files']} files) in {res['seconds']:.1f} s", highlight=False)
    out.print(f"  inventory  {res['inventory']}\n  state      {res['state_dir']}"
              + (f"\n  SSH key    {res['ssh_key']}" if res["ssh_key"] else ""), highlight=False)
    _show_reconciled(res)
    if res["state_dir_env"]:
        out.print(f"  the state directory is outside the inventory: set GOVHOST_STATE_DIR="
                  f"{res['state_dir_env']} for every govhost command", highlight=False)
    lost = res["not_recoverable"]
    out.print(f"not recoverable, from {when(lost['since'])} on: {lost['what']}",
              highlight=False)
    out.print("next: `govhost plan` (expect no change), `govhost apply`, `govhost status`",
              highlight=False)


def _show_reconciled(res: dict) -> None:
    for unit, e in sorted(res["live_after"].items()):
        out.print(f"  live since the snapshot, recorded: {unit} {e['release']} "
                  f"(was {e['was'] or 'none'})", highlight=False)
    for unit, seen in sorted(res.get("unjudged", {}).items()):
        out.print(f"  [yellow]one replica answered, not recorded[/]: {unit} {seen}",
                  highlight=False)
    for unit, seen in sorted(res["disagree"].items()):
        out.print(f"  [yellow]replicas disagree, not recorded[/]: {unit} {seen}",
                  highlight=False)
    for node, rid in sorted(res["applied_after"].items()):
        out.print(f"  applied after the snapshot: {node} runs {rid}", highlight=False)
    if res["unreachable"]:
        out.print(f"  not reachable now: {', '.join(res['unreachable'])}", highlight=False)


@control_app.command("reconcile")
def control_reconcile(as_json: bool = typer.Option(False, "--json")) -> None:
    """Finish a restore that was cut short: ask the nodes what changed after the snapshot and
    record it; `apply` refuses until this has run."""
    from controlplane.backup import control
    res = call(control.reconcile, county(), lambda m: None if as_json else note(m),
               as_json=as_json)
    if as_json:
        emit(res)
        return
    _show_reconciled(res)
    out.print("done: `govhost plan`, then `govhost apply`", highlight=False)


@control_app.command("drill")
def control_drill(as_json: bool = typer.Option(False, "--json")) -> None:
    """Restore the newest control snapshot into scratch space, check every file and the state
    store, compare with this machine, and time it. Changes nothing."""
    from controlplane.backup import control
    res = call(control.drill, county(), lambda m: None if as_json else note(m),
               as_json=as_json)
    if as_json:
        emit(res)
    elif res["ok"]:
        out.print(f"control drill: snapshot {res['snapshot']} of {res['snapshot_time'][:19]} "
                  f"({res['age_seconds'] / 3600:.1f} h old), {res['files']} files intact, "
                  f"restored in {res['restore_seconds']:.1f} s", highlight=False)
        if res["rows_since"]:
            out.print("  rows added since: " + ", ".join(f"{t} {n:+d}" for t, n in
                                                        sorted(res["rows_since"].items())),
                      highlight=False)
        if res["inventory_changed_since"]:
            out.print("  inventory files changed since: "
                      + ", ".join(res["inventory_changed_since"]), highlight=False)
    else:
        out.print(f"[red]control drill failed[/]: {res['error']}", highlight=False)
    if not res["ok"]:
        raise typer.Exit(1)
