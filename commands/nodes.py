"""`govhost` commands: Cluster nodes: drain, replace, add, remove, upgrade, reboot."""
from __future__ import annotations

import typer

from commands.output import call, county, emit, err, fail, human_size, out, table
from controlplane.core import errors

app = typer.Typer()
node_app = typer.Typer(help="Cluster nodes.", no_args_is_help=True)
app.add_typer(node_app, name="node")


def _drain(name: str, drained: bool, as_json: bool) -> None:
    try:
        inv = county().inv
        if name not in {n.name for n in inv.hosts.nodes}:
            raise errors.GovhostError(f"no node named {name!r} in hosts.yaml")
        st = county().open_state()
        if drained:
            from controlplane.sites.plan import compute_placement
            # Refuse a drain the remaining nodes cannot absorb, before recording it.
            compute_placement(inv, st.drained() | {name}, st.placements())
        changed = st.set_drained(name, drained)
    except errors.GovhostError as exc:
        fail(exc, as_json)
        return
    word = "drained" if drained else "undrained"
    if as_json:
        emit({"node": name, "drained": drained, "changed": changed})
    else:
        out.print(f"{name} {word}" + ("" if changed else " already") +
                  "; run `govhost apply` to move replicas" if changed else f"{name} already {word}")


@node_app.command("drain")
def node_drain(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Move every replica off NAME at the next apply (it keeps answering by proxying)."""
    _drain(name, True, as_json)


@node_app.command("undrain")
def node_undrain(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Let NAME hold replicas again (new units; existing placements stay put)."""
    _drain(name, False, as_json)


def _node_life(fn, name: str, as_json: bool) -> None:
    from controlplane.nodes import lifecycle as nodes_mod
    say = (lambda msg: None) if as_json else (lambda msg: err.print(f"  {msg}", highlight=False))
    res = call(getattr(nodes_mod, fn), county(), name, say, as_json=as_json)
    if as_json:
        emit(res)
    else:
        if "apply" in res:
            a = res["apply"]
            t = table(f"apply run {a['run_id']}: {a['result']} in {a['seconds']:.1f} s",
                      "node", "result", "release", "message")
            for n in a["nodes"]:
                t.add_row(n["node"], n["result"], n["release"] or "-", n["message"][:300])
            out.print(t)
            moved = [m for m in a["content"] if m["ok"]]
            if moved:
                out.print(f"content copied from peers: {len(moved)} unit(s), "
                          f"{sum(len(m['releases']) for m in moved)} release(s), "
                          f"{human_size(sum(m['bytes'] for m in moved))}")
            for m in a["content"]:
                if not m["ok"]:
                    err.print(f"[red]{m['tenant']}[/]: content to {m['to']} failed: {m['error']}")
        for r in res.get("restored", []):
            what = ", ".join(k for k in ("upload", "php_files", "database", "release")
                             if r.get(k))
            out.print(f"restored {r['tenant']} ({what or r.get('what')}) from the backup"
                      + (f": [red]{r['error']}[/]" if r.get("error") else ""))
        if res.get("phases"):
            out.print("time taken: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                 res["phases"].items() if v >= 0.05))
        if res.get("side_by_side"):
            out.print("  of which side by side: " + ", ".join(
                f"{k} {v:.1f} s" for k, v in res["side_by_side"].items()))
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


@node_app.command("upgrade")
def node_upgrade(names: list[str] = typer.Argument(None, help="Nodes (default: all, in "
                                                   "hosts.yaml order)."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Install pending security updates now, one node at a time: each only while every
    other node answers, the next only once this one serves again."""
    from controlplane.nodes import maintenance
    say = (lambda msg: None) if as_json else (lambda msg: err.print(f"  {msg}", highlight=False))
    res = call(maintenance.upgrade, county(), names or None, say, as_json=as_json)
    if as_json:
        emit(res)
    else:
        t = table(f"security updates: {res['result']}", "node", "ok", "upgraded",
                  "reboot required", "seconds", "error")
        for n in res["nodes"]:
            t.add_row(n["node"], "yes" if n.get("ok") and n.get("serving") else "no",
                      ", ".join(n.get("upgraded", [])) or "-",
                      "yes" if n.get("reboot_required") else "no", str(n.get("seconds", "-")),
                      n.get("error", "")[:200])
        out.print(t)
    if res["result"] != "upgraded":
        raise typer.Exit(1)


@node_app.command("reboot")
def node_reboot(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Drain NAME (its replicas move, content first), reboot it, wait until it serves again
    after a new boot, and undrain it."""
    from controlplane.nodes import maintenance
    say = (lambda msg: None) if as_json else (lambda msg: err.print(f"  {msg}", highlight=False))
    res = call(maintenance.reboot, county(), name, say, as_json=as_json)
    if as_json:
        emit(res)
    else:
        out.print(f"{name}: {res['result']} (back after {res['seconds']} s; "
                  f"{'undrained' if res['undrained'] else 'left drained, as it was'})")
    if res["result"] != "rebooted":
        raise typer.Exit(1)
