"""Backups on demand, restores, drills and checks: the control machine's side.

The nodes do the work (govhost-backup, installed by the playbooks, configured by the
backup.json of the config release); this module asks the right node, streams its results,
and keeps the catalogue (every snapshot made through govhost, every verify and drill with
its duration) in the state store. The control plane's own state goes into the same
repository from here: an online SQLite backup (never a copy of a live database file) and
the inventory.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from controlplane.backup import control
from controlplane.backup import plan as backup_plan
from controlplane.core import inventory as inventory_mod
from controlplane.core import paths, remote, secrets
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.manifest import Node
from controlplane.core.state import State

TOOL = paths.NODE_BACKUP_TOOL
Say = Callable[[str], None]
# Makes a restored tree live as a content release: `content.releases.publish`, handed in by
# the command. Backups sit below content (apply renders their node config), so a live
# restore is given the way up rather than importing it.
Publish = Callable[..., dict[str, Any]]
OnResult = Callable[[dict], None]


class BackupError(GovhostError):
    """A backup, restore or check could not be done (or found a problem)."""


@dataclass
class Cluster:
    county: County
    inv: inventory_mod.Inventory
    placement: dict[str, tuple[str, ...]]
    nodes: dict[str, Node]
    known_hosts: Path
    state: State

    @property
    def sources(self) -> backup_plan.Sources:
        return backup_plan.sources(self.inv, self.placement)

    @property
    def backup_node(self) -> Node:
        node = self.inv.backup_node
        assert node is not None
        return node


@contextmanager
def cluster(county: County) -> Iterator[Cluster]:
    inv = county.inv
    if inv.backup_node is None:
        raise BackupError("no node has the 'backup' role in hosts.yaml; give one node the role "
                          "and run `govhost apply` (the repository lives there)")
    state = county.open_state()
    try:
        placement = state.placements()
        if not placement:
            raise BackupError("nothing is applied yet; run `govhost apply` first")
        yield Cluster(county, inv, placement, {n.name: n for n in inv.hosts.nodes},
                      county.known_hosts, state)
    finally:
        state.close()


def _lock(county: County, name: str):
    """One backup run (or restore of a tenant) at a time from this control machine."""
    return county.exclusive(f"backup-{name}", lambda _: BackupError(
        f"another backup {name} is running from this machine; try again when it has "
        "finished"), mode=0o600)


def _node(c: Cluster, node: Node, *args: str, timeout: float = 6 * 3600,
          check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = " ".join([TOOL, *(shlex.quote(a) for a in args)])
    try:
        r = subprocess.run(remote.ssh_argv(c.inv.hosts, node, c.known_hosts, cmd),
                           capture_output=True, text=True, timeout=timeout,
                           **remote.feed(stdin))
    except subprocess.TimeoutExpired:
        raise BackupError(f"{args[0]} on {node.name} timed out") from None
    if check and r.returncode != 0:
        raise BackupError(f"{args[0]} on {node.name}: "
                          f"{_tail(r.stderr) or _tail(r.stdout) or f'exit {r.returncode}'}")
    return r


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("govhost-backup: ") if lines else ""


def _json(r: subprocess.CompletedProcess) -> Any:
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ backing up

def run(county: County, tenants: Sequence[str] = (), *, tags: Sequence[str] = (),
        include_control: bool | None = None, on_result: OnResult = lambda _: None,
        on_start: Callable[[int], None] = lambda _: None, jobs: int = 2,
        control_only: bool = False, always: bool = False) -> dict[str, Any]:
    """Back up `tenants` (all when empty) from the nodes that hold them, in parallel per node;
    then, for a full run, the control plane's own state. Every result is recorded;
    `on_start` first learns how many results there will be. A unit's files unchanged since
    their last snapshot make no new one (the result says `unchanged` and names that
    snapshot) unless `always` or `tags`: a night's run costs what changed."""
    with _lock(county, "run"), cluster(county) as c:
        src = c.sources
        unknown = [t for t in tenants if t not in c.placement or c.inv.tenant(t) is None]
        if unknown:
            raise BackupError(f"no applied unit named {', '.join(unknown)}")
        wanted = set(tenants)
        off = [t for t in tenants if t not in src.files]
        if off:
            raise BackupError(f"backups are off for {', '.join(off)} (proxy site, or "
                              "`backup: {enabled: false}` in its manifest)")
        per_node: dict[str, set[str]] = {}
        expected = 0
        for kind in (src.files, src.databases):
            for t, n in kind.items():
                if (not wanted or t in wanted) and not control_only:
                    per_node.setdefault(n, set()).add(t)
                    expected += 1
        with_control = control_only or (include_control if include_control is not None
                                        else not wanted)
        control_repos = control.repositories(c.inv) if with_control else []
        on_start(expected + len(control_repos))
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid() % 10000:04d}"
        results: list[dict] = []
        arrived: queue.Queue = queue.Queue()

        def record(res: dict) -> None:        # in this thread: SQLite stays in one thread
            results.append(res)
            c.state.record_backup(res)
            on_result(res)

        def one_node(name: str, ts: set[str]) -> None:
            args = ["run", "--run", run_id, "--jobs", str(jobs)]
            for t in sorted(ts) if wanted else ():
                args += ["--tenant", t]
            for tag in tags:
                args += ["--tag", tag]
            if always:
                args.append("--always")
            try:
                _stream(c, c.nodes[name], args, arrived.put, ts, src, run_id)
            finally:
                arrived.put(None)

        if per_node:     # a killed check or prune's lock would refuse every snapshot
            _node(c, c.backup_node, "locks", "--clear-dead", check=False, timeout=600)
        threads = [threading.Thread(target=one_node, args=(n, ts), daemon=True)
                   for n, ts in per_node.items()]
        for th in threads:
            th.start()
        running = len(threads)
        while running:
            msg = arrived.get()
            if msg is None:
                running -= 1
            else:
                record(msg)
        if with_control:
            for res in _control(county, run_id, control_repos):
                results.append(res)             # recorded by control.backup itself
                on_result(res)
        ok = sum(r["ok"] for r in results)
        summary = {"run": run_id, "ok": ok, "failed": len(results) - ok,
                   "results": sorted(results, key=lambda r: (r["tenant"], r["kind"]))}
        c.state.audit("backup.run", run_id, {"ok": ok, "failed": len(results) - ok,
                                             "tenants": sorted(wanted) or "all"})
        return summary


def _stream(c: Cluster, node: Node, args: list[str], record: OnResult, tenants: set[str],
            src: backup_plan.Sources, run_id: str) -> None:
    """Run govhost-backup on `node`, recording each result as its line arrives. A node that
    cannot be reached, or that stops before reporting a tenant, fails those tenants."""
    cmd = " ".join([TOOL, *(shlex.quote(a) for a in args)])
    seen: set[tuple[str, str]] = set()
    err = ""
    try:
        proc = subprocess.Popen(remote.ssh_argv(c.inv.hosts, node, c.known_hosts, cmd),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "result":
                seen.add((msg["tenant"], msg["kind"]))
                record(msg)
        err = _tail(proc.stderr.read())
        proc.wait(timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        err = str(exc)
    now = time.time()
    for kind, mapping in (("files", src.files), ("db", src.databases)):
        for t in sorted(tenants):
            if mapping.get(t) == node.name and (t, kind) not in seen:
                record({"event": "result", "tenant": t, "kind": kind, "node": node.name,
                        "run": run_id, "ok": False, "snapshot": None, "started_at": now,
                        "finished_at": now, "seconds": 0.0,
                        "error": f"{node.name} did not report it: " + (
                            err or "its config release does not list it; run `govhost apply`")})


def _control_restic(c: Cluster, *args: str, timeout: float = 3600,
                    stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess:
    """restic on the control machine, to the repository on the backup node over SFTP."""
    node = c.backup_node
    key = c.county.state_dir / secrets.BACKUP_KEY_FILE
    ssh = " ".join(["ssh", "-i", str(key), "-p", str(c.inv.hosts.ssh.port),
                    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                    "-o", "StrictHostKeyChecking=accept-new",
                    "-o", f"UserKnownHostsFile={c.known_hosts}", "-o", "LogLevel=ERROR",
                    f"{backup_plan.BACKUP_USER}@{node.address}", "-s", "sftp"])
    url = backup_plan.repository_url(backup_plan.BACKUP_USER, node.address,
                                     c.inv.cluster.backup.path)
    env = dict(os.environ, RESTIC_PASSWORD=backup_plan.password(c.inv),
               RESTIC_CACHE_DIR=str(c.county.state_dir / "restic-cache"))
    if shutil.which("restic") is None:
        raise BackupError("restic is not installed on this machine (apt-get install restic)")
    try:
        return subprocess.run(["restic", "-r", url, "-o", f"sftp.command={ssh}", *args],
                              env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                              stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackupError(f"restic {args[0]} timed out") from None


def _control(county: County, run_id: str,
             repos: Sequence[control.Repository]) -> list[dict[str, Any]]:
    """The control machine's own snapshot (control.py), as results of this run."""
    t0 = time.time()
    try:
        done = control.backup(county, run_id=run_id + "-control")
        rows = done["repositories"]
    except GovhostError as exc:
        rows = [{"repository": r.label, "ok": False, "snapshot": None, "error": str(exc),
                 "started_at": t0, "finished_at": time.time(), "seconds": 0.0} for r in repos]
    return [{"event": "result", "tenant": "_control", "kind": repo.kind, "node": r["repository"],
             "run": run_id, **{k: r.get(k) for k in ("ok", "snapshot", "error", "started_at",
                                                       "finished_at", "seconds")}}
            for repo, r in zip(repos, rows)]


# ------------------------------------------------------------------ listing

def snapshots(county: County, tenant: str | None = None) -> list[dict[str, Any]]:
    """The repository's snapshots (of `tenant`), oldest first, as the backup node sees them."""
    with cluster(county) as c:
        return _snapshots(c, tenant)


def _snapshots(c: Cluster, tenant: str | None) -> list[dict[str, Any]]:
    args = ["snapshots"] + (["--tenant", tenant] if tenant else [])
    snaps = _json(_node(c, c.backup_node, *args, timeout=600)) or []
    return sorted(snaps, key=lambda s: backup_plan.parse_time(s["time"]))


def describe(s: Mapping[str, Any]) -> dict[str, Any]:
    tags = backup_plan.tags(s)
    return {"id": s["short_id"], "snapshot": s["id"], "time": s["time"],
            "tenant": tags.get("tenant", "_control" if tags.get("kind") == "control" else ""),
            "kind": tags.get("kind", ""), "node": tags.get("node", ""), "run": tags.get("run", ""),
            "reason": tags.get("reason", "")}


def catalogue(county: County, tenant: str | None = None, limit: int = 200) -> list[dict]:
    with county.state() as st:
        return st.backups(tenant, limit)


# ------------------------------------------------------------------ restoring

def _choose(c: Cluster, tenant: str, snapshot: str | None,
            at: float | None) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    return _choose_from(_snapshots(c, tenant), tenant, snapshot, at)


def _choose_from(snaps: list[dict[str, Any]], tenant: str, snapshot: str | None,
                 at: float | None) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """The files snapshot (and its database companion) to restore of `tenant`, from the
    repository's list (`snaps`, sorted by time; other tenants' snapshots are passed over)."""
    if not snapshot:
        # Safety snapshots taken before a restore hold what was being replaced (often the
        # damage itself): chosen only by id, never as "the latest" or "as of".
        # Partial ones (restic could not read every file) likewise.
        snaps = [s for s in snaps if backup_plan.tags(s).get("reason") != "pre-restore"
                 and backup_plan.tags(s).get("partial") != "yes"]
    files = backup_plan.of_kind(snaps, tenant, "files")
    chosen = backup_plan.pick(files, snapshot_id=snapshot, at=at)
    if chosen is None:
        if snapshot:
            raise BackupError(f"no files snapshot {snapshot} of {tenant}; `govhost backup list "
                              f"{tenant}` shows them")
        if at is not None:
            raise BackupError(f"{tenant} has no snapshot taken at or before "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}")
        raise BackupError(f"{tenant} has no snapshot yet; run `govhost backup run {tenant}`")
    dbs = backup_plan.of_kind(snaps, tenant, "db")
    db = (backup_plan.pick(dbs, at=at) if at is not None and not snapshot
          else backup_plan.companion(dbs, chosen))
    return chosen, db


def restore(county: County, tenant: str, *, snapshot: str | None = None,
            at: float | None = None, to: Path | None = None, with_db: bool = True,
            safety_backup: bool = True, say: Say = lambda _: None,
            publish: Publish | None = None) -> dict[str, Any]:
    """Restore `tenant` from a snapshot: to a directory on this machine, or to the live site
    as a new content release (which `govhost rollback` can undo), its upload area and its
    database too. A live restore first backs up what is there now, so it loses nothing;
    it needs `publish` (see Publish)."""
    with _lock(county, f"restore-{tenant}"), cluster(county) as c:
        t = c.inv.tenant(tenant)
        if t is None or tenant not in c.placement:
            raise BackupError(f"no applied unit named {tenant!r}")
        chosen, db = _choose(c, tenant, snapshot, at)
        d = describe(chosen)
        say(f"files snapshot {d['id']} of {d['time']}" +
            (f", database snapshot {describe(db)['id']}" if db and with_db else ""))
        t0 = time.time()
        result: dict[str, Any] = {"tenant": tenant, "files_snapshot": chosen["id"],
                                  "files_time": chosen["time"],
                                  "db_snapshot": db["id"] if db and with_db else None}
        if to is None and publish is None:
            raise BackupError("a restore to the live site needs a way to publish it")
        if to is not None:
            result.update(_restore_to_dir(c, tenant, chosen, db if with_db else None, Path(to)))
        else:
            if safety_backup:
                say("backing up what is live now, so this restore can be undone")
                pre = _run_nested(c, tenant)
                result["pre_restore"] = pre
            result.update(_restore_live(c, tenant, chosen, db if with_db else None, say,
                                        publish))
        result["seconds"] = round(time.time() - t0, 3)
        c.state.audit("backup.restore", tenant, {k: v for k, v in result.items()
                                                 if k != "rows"})
        return result


@dataclass(frozen=True)
class ReplicaWant:
    """What only the backup still has of a unit on a replaced node."""
    upload: bool = False        # its upload area (unpublished work; the unit's first replica)
    php_files: bool = False     # its PHP `files/` (no other replica has them)
    database: bool = False      # its database (the db node)


def restore_replicas(county: County, node: str, wants: Mapping[str, ReplicaWant], *,
                     jobs: int = 2, say: Say = lambda _: None) -> list[dict[str, Any]]:
    """After a node was replaced: what only the backup still has of each unit in `wants`
    on `node`, from the newest snapshots. Content releases come from peers, not from here.

    One listing of the repository, then one call to the node for the files of every
    REPLICA_BATCH units (the node restores `jobs` at a time over one SSH connection, only
    the trees it swaps in): before, each unit was a listing of the repository and a
    restore, one after the other, each a restic over an SSH login of its own. A unit that
    cannot be restored (its lock held by another restore, no snapshot, its restore failed,
    a call to the node that broke) is its own result with an `error`; the others go on."""
    out: list[dict[str, Any]] = []
    with cluster(county) as c:
        snaps = _by_tenant(_snapshots(c, None))
        names = sorted(wants)
        for at in range(0, len(names), REPLICA_BATCH):
            out += _restore_replicas(county, c, node, snaps,
                                     {t: wants[t] for t in names[at:at + REPLICA_BATCH]},
                                     jobs, say)
    return sorted(out, key=lambda o: o["tenant"])


REPLICA_BATCH = 200         # units a call to the node restores (and locks held at once)


def _by_tenant(snaps: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Each unit's snapshots (in the list's order), in one pass over the county's: choosing
    among all of them for every unit was 0.44 s a unit at 60,000 snapshots (5,000 units, a
    dozen kept each)."""
    out: dict[str | None, list[dict[str, Any]]] = {}
    for s in snaps:
        out.setdefault(backup_plan.tags(s).get("tenant"), []).append(s)
    return out


def _restore_replicas(county: County, c: Cluster, node: str,
                      snaps: Mapping[str | None, list[dict[str, Any]]],
                      wants: Mapping[str, ReplicaWant], jobs: int,
                      say: Say) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    chosen: dict[str, tuple[Mapping[str, Any], Mapping[str, Any] | None]] = {}
    with contextlib.ExitStack() as held:
        for t in sorted(wants):
            try:
                held.enter_context(_lock(county, f"restore-{t}"))
                chosen[t] = _choose_from(snaps.get(t, []), t, None, None)
            except BackupError as exc:
                out.append({"tenant": t, "node": node, "error": str(exc)})
        batch = [{"tenant": t, "snapshot": f["id"], "upload": wants[t].upload,
                  "php_files": wants[t].php_files}
                 for t, (f, _) in chosen.items() if wants[t].upload or wants[t].php_files]
        files_done: dict[str, dict[str, Any]] = {}
        why = "the node gave no result"
        if batch:
            try:
                r = _node(c, c.nodes[node], "restore-many", "--jobs", str(jobs), check=False,
                          stdin="".join(json.dumps(b) + "\n" for b in batch))
                if r.returncode != 0:
                    why = f"restore-many on {node}: {_tail(r.stderr) or f'exit {r.returncode}'}"
                lines = r.stdout.splitlines()
            except BackupError as exc:        # the call itself: timed out
                why, lines = str(exc), []
            for line in lines:                # what the node did before any break stands
                with contextlib.suppress(ValueError):
                    res = json.loads(line)
                    if isinstance(res, dict) and res.get("tenant") in chosen:
                        files_done[res["tenant"]] = res
        for t, (files, db) in chosen.items():
            w, one = wants[t], {"tenant": t, "node": node}
            if w.upload or w.php_files:
                r = files_done.get(t, {"ok": False, "error": why})
                if not r.get("ok"):
                    one["error"] = f"{node}: {t}: {r.get('error')}"
                made = {"snapshot": files["short_id"], "time": files["time"]}
                for key, what in (("php_files", "PHP files/"), ("upload", "upload area")):
                    if getattr(w, key) and r.get("ok"):
                        one[key] = made | {"restored": r.get(key) == "restored"}
                        say(f"{node}: {t} {what} from snapshot {files['short_id']} of "
                            f"{files['time']}")
            if w.database and db is not None:
                # a database comes back even when its unit's files did not
                try:
                    d = _json(_node(c, c.nodes[node], "restore-db", t, db["id"]))
                    one["database"] = {"snapshot": db["short_id"], "time": db["time"],
                                       "rows": sum(d["rows"].values())}
                    say(f"{node}: {t} database from snapshot {db['short_id']} of "
                        f"{db['time']} ({one['database']['rows']} rows)")
                except (BackupError, ValueError, KeyError, IndexError) as exc:
                    one["error"] = "; ".join(filter(None, [one.get("error"),
                                                           f"database: {exc}"]))
            c.state.audit("node.restore", t, one)
            out.append(one)
    return out


def _run_nested(c: Cluster, tenant: str) -> list[str]:
    """A backup of one tenant inside a restore (the run lock is not needed: one tenant)."""
    src = c.sources
    made: list[str] = []
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-pre"
    for kind, node in (("files", src.files.get(tenant)), ("db", src.databases.get(tenant))):
        if node is None:
            continue
        r = _node(c, c.nodes[node], "run", "--tenant", tenant, "--run", run_id, "--tag",
                  "reason=pre-restore", check=False)
        for line in r.stdout.splitlines():
            msg = json.loads(line)
            if msg.get("event") == "result" and msg["kind"] == kind:
                c.state.record_backup(msg)
                if not msg["ok"]:
                    raise BackupError(f"backing up the current {kind} of {tenant} before the "
                                      f"restore failed ({msg['error']}); nothing was restored. "
                                      "Pass --no-safety-backup to restore anyway")
                made.append(msg["snapshot"])
        if r.returncode != 0 and not made:
            raise BackupError(f"backing up {tenant} before the restore failed: {_tail(r.stderr)}"
                              "; nothing was restored")
    return made


def _restore_live(c: Cluster, tenant: str, files: Mapping[str, Any],
                  db: Mapping[str, Any] | None, say: Say, publish: Publish
                  ) -> dict[str, Any]:
    first = c.nodes[c.placement[tenant][0]]
    out = _json(_node(c, first, "restore-files", tenant, files["id"], "--upload"))
    say(f"{first.name}: snapshot restored in {out['seconds']:.1f} s; upload area restored "
        f"(the previous one is kept in {out['upload_before']})")
    res: dict[str, Any] = {"restore_dir": out["dir"]}
    if out.get("release_dir"):
        pub = publish(c.county, tenant, say, source=out["release_dir"],
                      by=f"restore:{files['short_id']}")
        res["release"] = pub["release"]
        res["files"] = pub["files"]
    else:
        say("the snapshot has no live release (nothing was published then)")
    if db is not None:
        src = c.sources.databases.get(tenant)
        if src is None:
            raise BackupError(f"{tenant} has a database snapshot but no database now")
        d = _json(_node(c, c.nodes[src], "restore-db", tenant, db["id"]))
        say(f"{src}: database {d['database']} restored ({sum(d['rows'].values())} rows)")
        res["database"] = d["database"]
        res["rows"] = d["rows"]
    return res


def _restore_to_dir(c: Cluster, tenant: str, files: Mapping[str, Any],
                    db: Mapping[str, Any] | None, to: Path) -> dict[str, Any]:
    to.mkdir(parents=True, exist_ok=True)
    if any(to.iterdir()):
        raise BackupError(f"{to} is not empty; restore into a new directory")
    r = _control_restic(c, "restore", files["id"], "--target", str(to / "files"))
    if r.returncode != 0:
        raise BackupError(f"restic restore: {_tail(r.stderr.decode(errors='replace'))}")
    res: dict[str, Any] = {"to": str(to), "files_dir": str(to / "files")}
    if db is not None:
        path = next(iter(db["paths"]))
        ls = _control_restic(c, "ls", "--json", db["id"], path)
        names = [json.loads(line).get("path", "") for line in ls.stdout.decode().splitlines()
                 if line.startswith("{")]
        dumps = [n for n in names if n.endswith(".sql")]
        if not dumps:
            raise BackupError(f"database snapshot {db['short_id']} holds no dump")
        (to / "database").mkdir(mode=0o700)
        dest = to / "database" / os.path.basename(dumps[0])
        with open(dest, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            r = _control_restic(c, "dump", db["id"], dumps[0], stdout=f)
        if r.returncode != 0:
            raise BackupError(f"restic dump: {_tail(r.stderr.decode(errors='replace'))}")
        res["database_dump"] = str(dest)
    return res


# ------------------------------------------------------------------ proving

def drill(county: County, tenant: str, say: Say = lambda _: None) -> dict[str, Any]:
    """Restore the latest snapshot into scratch space, check it against its source, time it
    (the RTO of this tenant) and record the outcome."""
    with cluster(county) as c:
        if c.inv.tenant(tenant) is None or tenant not in c.sources.files:
            raise BackupError(f"no applied tenant with backups named {tenant!r}")
        chosen, db = _choose(c, tenant, None, None)
        t0 = time.time()
        parts = []
        node = c.nodes[c.sources.files[tenant]]
        f = _json(_node(c, node, "drill-files", tenant, chosen["id"]))
        parts.append(f)
        say(f"{node.name}: files of {chosen['short_id']}: "
            + (f"{f['files_checked']} files, {f['mismatch_count']} mismatches, "
               f"{f['changed_since']} changed since, restored in {f['restore_seconds']:.2f} s"
               if "files_checked" in f else f["error"]))
        db_node = c.sources.databases.get(tenant)
        if db_node:
            if db is None:
                parts.append({"kind": "db", "ok": False, "error": "no database snapshot"})
            else:
                d = _json(_node(c, c.nodes[db_node], "drill-db", tenant, db["id"]))
                parts.append(d)
                say(f"{db_node}: database of {db['short_id']}: "
                    + (f"{d['tables']} tables, {d['rows']} rows, "
                       + ("counts match" if d["ok"] else "COUNTS DIFFER")
                       if "tables" in d else d.get("error", "")))
        seconds = round(time.time() - t0, 3)
        ok = all(p["ok"] for p in parts)
        result = {"tenant": tenant, "ok": ok, "snapshot": chosen["id"], "snapshot_time":
                  chosen["time"], "rto_seconds": seconds, "parts": parts}
        c.state.record_check("drill", tenant, ok, seconds, result)
        return result


def verify(county: County, subset: int | None = None) -> dict[str, Any]:
    """restic check with a read of a random subset of the data, on the backup node."""
    with cluster(county) as c:
        args = ["verify"] + (["--subset", str(subset)] if subset else [])
        r = _node(c, c.backup_node, *args, check=False)
        try:
            result = _json(r)
        except (ValueError, IndexError):
            raise BackupError(f"verify on {c.backup_node.name}: {_tail(r.stderr)}") from None
        c.state.record_check("verify", None, result["ok"], result["seconds"], result)
        return result


def copy_offsite(county: County) -> dict[str, Any]:
    with cluster(county) as c:
        t0 = time.time()
        r = _node(c, c.backup_node, "copy", check=False)
        ok = r.returncode == 0
        result = _json(r) if ok else {"ok": False, "error": _tail(r.stderr)}
        c.state.record_check("offsite", None, ok, round(time.time() - t0, 3), result)
        if not ok:
            raise BackupError(f"off-site copy: {result['error']}")
        return result


def locks(county: County, clear: bool = False) -> dict[str, Any]:
    """The node repository's locks as the backup node judges them; `clear`: remove the stale
    ones (a killed run's), never one a running process holds."""
    with cluster(county) as c:
        result = _json(_node(c, c.backup_node, "locks", *(["--clear"] if clear else [])))
        if result.get("cleared"):
            c.state.audit("backup.unlock", "repository", result)
        return result


def rebuild(county: County) -> dict[str, Any]:
    """The backup node's repository back from the off-site copy (after its disk was lost)."""
    with cluster(county) as c:
        result = _json(_node(c, c.backup_node, "rebuild"))
        c.state.audit("backup.rebuild", "repository", result)
        return result


def forget(county: County, prune: bool = True) -> dict[str, Any]:
    with cluster(county) as c:
        result = _json(_node(c, c.backup_node, "forget", *(["--prune"] if prune else [])))
        c.state.audit("backup.forget", "repository", result)
        return result


def key(county: County) -> dict[str, str]:
    """What an operator keeps in a sealed envelope: without the passwords no restore is
    possible, and the public key goes onto the off-site repository's account."""
    inv = county.inv
    if inv.backup_node is None:
        raise BackupError("no node has the 'backup' role in hosts.yaml")
    out = {"repository": backup_plan.repository_url(backup_plan.BACKUP_USER,
                                                    inv.backup_node.address,
                                                    inv.cluster.backup.path),
           "password": backup_plan.password(inv),
           "public_key": secrets.public_key(inv.backup_key)}
    if inv.cluster.backup.offsite:
        off = inv.cluster.backup.offsite
        out["offsite_repository"] = backup_plan.repository_url(off.user, off.address, off.path)
        out["offsite_password"] = backup_plan.password(inv, offsite=True)
    return out


def status(county: County) -> list[dict[str, Any]]:
    """Per tenant and kind: the last success and the last error, as the nodes recorded them
    (timers included), with the node that backs it up."""
    with cluster(county) as c:
        src = c.sources
        wanted = {(t, "files"): n for t, n in src.files.items()}
        wanted.update({(t, "db"): n for t, n in src.databases.items()})
        answers: dict[str, dict] = {}
        for name in sorted(set(wanted.values())):
            r = _node(c, c.nodes[name], "status", check=False, timeout=60)
            answers[name] = json.loads(r.stdout or "{}") if r.returncode == 0 else {
                "_error": _tail(r.stderr) or "unreachable"}
        rows = []
        for (t, kind), n in sorted(wanted.items()):
            got = answers[n].get(t, {}).get(kind, {})
            rows.append({"tenant": t, "kind": kind, "node": n,
                         "last_success": got.get("last_success"),
                         "last_attempt": got.get("last_attempt"),
                         "snapshot": got.get("snapshot"),
                         "error": answers[n].get("_error") or got.get("last_error", "")})
        return rows
