"""`govhost` commands: Backups."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from commands.output import (
    at_option,
    call,
    county,
    emit,
    err,
    fail,
    human_size,
    note,
    out,
    table,
    when,
)
from controlplane.core import errors

app = typer.Typer()
backup_app = typer.Typer(help="Backups (restic): run, list, restore, verify, drill, off-site.",
                         no_args_is_help=True)
app.add_typer(backup_app, name="backup")


@backup_app.command("run")
def backup_run(units: list[str] = typer.Argument(None, help="Units (all when none)."),
               jobs: int = typer.Option(2, "--jobs", help="Snapshots made at once per node."),
               control_only: bool = typer.Option(False, "--control-only",
                                                 help="Only the control machine's own "
                                                 "snapshot (as `govhost control backup`)."),
               always: bool = typer.Option(False, "--always", help="A new snapshot of every "
                                           "unit's files, changed or not."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Back up now: files from each unit's first replica, databases from the db node, and
    (for a full run) the control machine's own snapshot. Files unchanged since their last
    snapshot make no new one (`unchanged`). Exit 1 if anything failed."""
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
        res = call(lambda: backup.run(
            county(), units or (), on_result=on_result, jobs=jobs,
            control_only=control_only, on_start=lambda n: progress.update(task, total=n),
            always=always),
            as_json=as_json)
    if as_json:
        emit(res)
    else:
        t = table(f"backup run {res['run']}: {res['ok']} ok, {res['failed']} failed",
                  "unit", "kind", "node", "result", "snapshot", "files", "added", "seconds")
        for r in res["results"]:
            t.add_row(r["tenant"], r["kind"], r["node"],
                      ("[green]unchanged[/]" if r.get("unchanged") else "[green]ok[/]")
                      if r["ok"] else "[red]failed[/]",
                      (r.get("snapshot") or "-")[:8], str(r.get("files", "-")),
                      human_size(r.get("bytes_added") or 0), f"{r['seconds']:.1f}")
        out.print(t)
        for r in res["results"]:
            if not r["ok"]:
                err.print(f"[red]failed[/] {r['tenant']} {r['kind']} on {r['node']}: "
                          f"{r['error']}", highlight=False)
    if res["failed"]:
        raise typer.Exit(1)


@backup_app.command("list")
def backup_list(unit: Optional[str] = typer.Argument(None),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """The snapshots in the repository (of UNIT), oldest first."""
    from controlplane.backup import run as backup
    snaps = [backup.describe(s) for s in call(backup.snapshots, county(), unit,
                                              as_json=as_json)]
    if as_json:
        emit(snaps)
        return
    t = table(f"{len(snaps)} snapshot(s)", "id", "time", "unit", "kind", "node", "run", "reason")
    for s in snaps:
        t.add_row(s["id"], s["time"][:19].replace("T", " ") + " UTC", s["tenant"], s["kind"],
                  s["node"], s["run"], s["reason"])
    out.print(t)


@backup_app.command("status")
def backup_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Per unit: last successful backup and last error, as recorded on the nodes (timer
    runs included)."""
    from controlplane.backup import run as backup
    rows = call(backup.status, county(), as_json=as_json)
    if as_json:
        emit(rows)
        return
    t = table("backups", "unit", "kind", "node", "last success", "age", "error")
    now = time.time()
    for r in rows:
        age = (f"{(now - r['last_success']) / 3600:.1f} h" if r["last_success"] else
               "[red]never[/]")
        t.add_row(r["tenant"], r["kind"], r["node"], when(r["last_success"]), age,
                  f"[red]{r['error'][:80]}[/]" if r["error"] else "")
    out.print(t)


@backup_app.command("restore")
def backup_restore(
    unit: str,
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
    """Restore UNIT: to the live site as a new content release (undo with `govhost
    rollback`), with its upload area and database, or --to a directory."""
    from controlplane.backup import run as backup
    if snapshot and at:
        fail(errors.GovhostError("give --snapshot or --at, not both"), as_json)
    at_time = at_option(at, as_json)
    if to is None and not (yes or as_json):
        if not sys.stdin.isatty():
            fail(errors.GovhostError("a live restore replaces the site, its upload area and "
                                     "its database: pass --yes"), as_json)
        if not typer.confirm(f"Replace {unit}'s live site, upload area and database?"):
            raise typer.Exit(1)
    from controlplane.content import releases as content
    res = call(lambda: backup.restore(county(), unit, snapshot=snapshot, at=at_time, to=to,
                                      with_db=not no_db, safety_backup=not no_safety_backup,
                                      say=note, publish=content.publish), as_json=as_json)
    if as_json:
        emit(res)
    elif to is not None:
        out.print(f"{unit}: snapshot {res['files_snapshot'][:8]} restored to {res['to']}"
                  + (f"; database dump {res['database_dump']}" if res.get("database_dump") else "")
                  + f" in {res['seconds']:.1f} s", highlight=False)
    else:
        out.print(f"{unit}: snapshot {res['files_snapshot'][:8]} ({res['files_time'][:19]}) "
                  f"is live as release {res.get('release', '-')}"
                  + (f"; database {res['database']} restored" if res.get("database") else "")
                  + f" in {res['seconds']:.1f} s. Undo: `govhost rollback {unit}`",
                  highlight=False)


@backup_app.command("drill")
def backup_drill(unit: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Restore UNIT's latest snapshot into scratch space, compare file hashes and database
    row counts, and record the result and the time it took (the RTO)."""
    from controlplane.backup import run as backup
    res = call(backup.drill, county(), unit, note, as_json=as_json)
    if as_json:
        emit(res)
    else:
        verdict = "[green]passed[/]" if res["ok"] else "[red]FAILED[/]"
        out.print(f"{unit}: drill {verdict} on snapshot {res['snapshot'][:8]}; restore took "
                  f"{res['rto_seconds']:.1f} s")
    if not res["ok"]:
        raise typer.Exit(1)


@backup_app.command("verify")
def backup_verify(subset: Optional[int] = typer.Option(None, "--subset",
                                                       help="Percent of the data to read."),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the repository's structure and read a random part of its data (restic check)."""
    from controlplane.backup import run as backup
    res = call(backup.verify, county(), subset, as_json=as_json)
    if as_json:
        emit(res)
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
    res = call(backup.copy_offsite, county(), as_json=as_json)
    if as_json:
        emit(res)
    else:
        out.print(f"off-site: {res['copied']} snapshot(s) copied in {res['seconds']:.1f} s; "
                  f"{res['snapshots']} there in all")


@backup_app.command("forget")
def backup_forget(no_prune: bool = typer.Option(False, "--no-prune"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """Apply every unit's retention policy (and prune what nothing uses any more)."""
    from controlplane.backup import run as backup
    res = call(backup.forget, county(), not no_prune, as_json=as_json)
    if as_json:
        emit(res)
    else:
        out.print(f"{res['removed']} snapshot(s) forgotten, {res['kept']} kept"
                  + ("; repository pruned" if res["pruned"] else ""))


@backup_app.command("history")
def backup_history(unit: Optional[str] = typer.Argument(None),
                   limit: int = typer.Option(50, "--limit"),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """The catalogue in the state store: backups made through govhost, drills and verifies."""
    with county().state() as st:
        rows, checks = st.backups(unit, limit), st.checks(limit=limit)
    if unit:
        checks = [c for c in checks if c["tenant"] in (unit, None)]
    if as_json:
        emit({"backups": rows, "checks": checks})
        return
    t = table("backups",
              "finished", "unit", "kind", "node", "result", "snapshot", "seconds", "added")
    for r in rows:
        t.add_row(when(r["finished_at"]), r["tenant"], r["kind"], r["node"],
                  "[green]ok[/]" if r["ok"] else f"[red]{r['error'][:60]}[/]",
                  (r["snapshot"] or "-")[:8], f"{r['seconds'] or 0:.1f}",
                  human_size(r["bytes_added"] or 0))
    out.print(t)
    t = table("verifies, drills and off-site copies", "at", "kind", "unit", "result", "seconds")
    for c in checks:
        t.add_row(when(c["at"]), c["kind"], c["tenant"] or "-",
                  "[green]ok[/]" if c["ok"] else "[red]failed[/]", f"{c['seconds'] or 0:.1f}")
    out.print(t)


@backup_app.command("key")
def backup_key(as_json: bool = typer.Option(False, "--json")) -> None:
    """The repository passwords and the nodes' public key: keep the passwords in a sealed
    envelope off this machine (without them no restore is possible); install the public key
    for the off-site repository's account."""
    from controlplane.backup import run as backup
    res = call(backup.key, county(), as_json=as_json)
    if as_json:
        emit(res)
        return
    for k, v in res.items():
        out.print(f"{k}: {v}", highlight=False, markup=False)


@backup_app.command("locks")
def backup_locks(clear: bool = typer.Option(False, "--clear", help="Remove the stale ones."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """The repository's locks on the backup node. Stale: its process on the backup node is
    gone, or (another node's) nobody refreshed it for 30 minutes; --clear removes those.
    `backup run`, forget, verify and copy remove only the backup node's own dead ones."""
    from controlplane.backup import run as backup
    res = call(backup.locks, county(), clear, as_json=as_json)
    if as_json:
        emit(res)
        return
    t = table(f"repository locks ({res['cleared']} stale cleared)" if clear else
              "repository locks", "id", "kind", "host", "pid", "age", "stale")
    for lk in res["locks"]:
        t.add_row(lk["id"], "exclusive" if lk["exclusive"] else "shared", str(lk["host"]),
                  str(lk["pid"]), f"{lk['age_seconds']} s",
                  "[red]stale[/]" if lk["stale"] else "held")
    out.print(t)
