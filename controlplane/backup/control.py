"""The control machine's own backup, restore and drill: the shell around `recovery`.

One snapshot holds everything govhost needs to be the county's control plane again: the state
store (SQLite's online backup API, consistent while an apply or the console writes), every
file of the state directory (cluster secret, the nodes' backup key, known host keys, the county
CA, the ACME account and certificates, the console's secrets), the inventory, and the SSH key
the control machine reaches the nodes with. It goes, encrypted with the county recovery key,
to a repository beside the node repository on the backup node and to one beside the off-site
repository. The nodes can read neither: their backup key is not the recovery key's.

A restore on a bare machine needs the recovery key and the backup node's address; afterwards
it asks the nodes what happened after the snapshot (applies, publishes) and records the
publishes it finds, so the state agrees with what citizens see.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from controlplane.backup import plan as backup_plan
from controlplane.backup import recovery
from controlplane.core import remote, secrets
from controlplane.core.certstore import write_private
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.inventory import Inventory
from controlplane.core.state import RESTORE_PENDING, SCHEMA_VERSION
from govhost_node.backup import restic_summary
from govhost_node.digests import file_sha256

Say = Callable[[str], None]
KEY_FILE = secrets.RECOVERY_KEY_FILE
TAG = "govhost-control"
DRILL_KIND = "control-drill"


class ControlBackupError(GovhostError):
    pass


@dataclass(frozen=True)
class Repository:
    """One control repository: where it is and the account that holds it."""
    label: str          # "backup node n1", "off-site"
    kind: str           # in the backup catalogue: control | control-offsite
    address: str
    port: int
    user: str
    path: str

    @property
    def url(self) -> str:
        return backup_plan.repository_url(self.user, self.address, self.path)


def repositories(inv: Inventory) -> list[Repository]:
    """The backup node's control repository, then the off-site one when there is one."""
    node = inv.backup_node
    if node is None:
        raise ControlBackupError("no node has the 'backup' role in hosts.yaml; the control "
                                 "backup is stored beside the node repository there")
    settings = inv.cluster.backup
    out = [Repository(f"backup node {node.name}", "control", node.address, inv.hosts.ssh.port,
                      recovery.CONTROL_USER, recovery.control_path(settings.path))]
    if settings.offsite:
        off = settings.offsite
        out.append(Repository("off-site", "control-offsite", off.address, off.port,
                              recovery.CONTROL_USER, recovery.control_path(off.path)))
    return out


# ------------------------------------------------------------------ the recovery key

def load_key(state_dir: Path) -> bytes | None:
    """The recovery key this control machine backs up with, or None before `control init`."""
    path = state_dir / KEY_FILE
    if not path.exists():
        return None
    return recovery.parse_key(secrets.read_private(path).decode())


def init(inv: Inventory, state_dir: Path) -> tuple[bytes, str | None]:
    """The recovery key, made on first use: (key, the sheet to print). The sheet is made
    before the key is saved, and only for a key made now: a key nobody saw never guards a
    county. Refused without a backup node (nowhere to keep the snapshots)."""
    path = state_dir / KEY_FILE
    if path.exists():
        key = load_key(state_dir)
        assert key is not None
        return key, None
    raw = os.urandom(recovery.KEY_BYTES)
    sheet = paper(inv, raw)                 # raises without a backup node
    secrets.create_once(path, lambda: recovery.format_key(raw) + "\n")
    key = load_key(state_dir)
    assert key is not None
    return key, sheet if key == raw else None     # a concurrent init's key stands


def paper(inv: Inventory, key: bytes) -> str:
    """The sheet a county keeps in its safe: the key, where the copies are, what to type."""
    repos = repositories(inv)
    lines = ["govhost — county recovery sheet", "",
             f"county domain:      {inv.cluster.domain}",
             f"recovery key:       {recovery.format_key(key)}",
             f"key fingerprint:    {recovery.fingerprint(key)}", "",
             "control backups (restic over SFTP, encrypted with the recovery key); on a bare",
             "Debian machine, after the README's install, one of:"]
    for r in repos:
        lines.append(f"  {r.label}:")
        lines.append(f"    govhost control restore --from {r.address} --port {r.port} "
                     f"--user {r.user} --path {r.path}")
    lines += ["  (type the recovery key when asked; see docs/operations.md, 'The control "
              "machine is lost')", "",
              f"An off-site machine outside the cluster needs an account {recovery.CONTROL_USER}",
              "with a root-owned ~/.ssh/authorized_keys holding only this line (SFTP only):",
              f"  restrict,command=\"/usr/lib/openssh/sftp-server\" {recovery.ssh_public_key(key)}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ restic over SFTP

@contextmanager
def _access(key: bytes, known_hosts: Path | None,
            where: Path | None = None) -> Iterator[tuple[Path, Path]]:
    """The recovery SSH key in a private file for the run (and a known_hosts of its own on a
    bare machine, filled on first contact), in `where` (a 0700 directory) or /tmp."""
    tmp = Path(tempfile.mkdtemp(prefix="govhost-control-", dir=where))
    try:
        keyfile = tmp / "id_ed25519"
        write_private(keyfile, recovery.ssh_private_key(key))
        yield keyfile, known_hosts or tmp / "known_hosts"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _restic(repo: Repository, key: bytes, keyfile: Path, known_hosts: Path, *args: str,
            timeout: float = 3600, cache: Path | None = None) -> subprocess.CompletedProcess:
    if shutil.which("restic") is None:
        raise ControlBackupError("restic is not installed on this machine (apt-get install "
                                 "restic, or run scripts/setup.sh)")
    ssh = " ".join(["ssh", "-i", str(keyfile), "-p", str(repo.port), "-o", "BatchMode=yes",
                    "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=10",
                    "-o", "StrictHostKeyChecking=accept-new",
                    "-o", f"UserKnownHostsFile={known_hosts}", "-o", "LogLevel=ERROR",
                    "-o", "IdentitiesOnly=yes",
                    f"{repo.user}@{'[' + repo.address + ']' if ':' in repo.address else repo.address}",
                    "-s", "sftp"])
    env = dict(os.environ, RESTIC_PASSWORD=recovery.restic_password(key))
    env.pop("RESTIC_REPOSITORY", None)
    if cache is not None:
        env["RESTIC_CACHE_DIR"] = str(cache)
    else:
        args = ("--no-cache", *args)
    try:
        return subprocess.run(["restic", "-r", repo.url, "-o", f"sftp.command={ssh}", *args],
                              env=env, capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ControlBackupError(f"restic {args[0]} on the {repo.label} timed out") from None


def _err(r: subprocess.CompletedProcess) -> str:
    """restic's reason: its `Fatal:` line (the lines after it repeat the repository's URL)."""
    lines = [x.strip() for x in r.stderr.decode(errors="replace").splitlines() if x.strip()]
    fatal = [x for x in lines if x.startswith("Fatal:")]
    return (fatal[0] if fatal else lines[-1]) if lines else f"exit {r.returncode}"


def _ensure_repository(repo: Repository, key: bytes, keyfile: Path, known: Path,
                       cache: Path) -> None:
    probe = _restic(repo, key, keyfile, known, "cat", "config", timeout=120, cache=cache)
    if probe.returncode == 0:
        return
    err = probe.stderr.decode(errors="replace")
    if "wrong password" in err:
        raise ControlBackupError(f"the {repo.label}'s control repository {repo.path} was made "
                                 "with another recovery key; restore that key to "
                                 f"<state>/{KEY_FILE}, or move the repository aside")
    if "Permission denied" in err:
        raise ControlBackupError(f"the {repo.label} ({repo.address}) refuses the recovery key; "
                                 "run `govhost apply` so the backup account accepts it (an "
                                 "off-site account outside the cluster: add the line "
                                 "`govhost control public-key` prints)")
    if not any(m in err for m in ("does not exist", "no such file", "No such file",
                                  "Is there a repository")):
        raise ControlBackupError(f"the {repo.label}'s control repository {repo.url} cannot be "
                                 f"read: {_err(probe)}")
    init = _restic(repo, key, keyfile, known, "init", timeout=300, cache=cache)
    if init.returncode != 0 and _restic(repo, key, keyfile, known, "cat", "config",
                                        timeout=120, cache=cache).returncode != 0:
        raise ControlBackupError(f"cannot create the control repository on the {repo.label}: "
                                 f"{_err(init)}")


def _unlock(repo: Repository, key: bytes, keyfile: Path, known: Path, cache: Path) -> None:
    """Remove stale locks only (restic's own judgement: this host's dead processes, or locks
    not refreshed for 30 minutes); a run in progress elsewhere keeps its lock."""
    _restic(repo, key, keyfile, known, "unlock", timeout=300, cache=cache)


# ------------------------------------------------------------------ making a snapshot

def _copy_tree(src: Path, dest: Path, kept: Callable[[str], bool]) -> list[str]:
    """Regular files only; the links (and other non-files) met are returned, to be named in
    the manifest rather than silently left out."""
    skipped = []
    for dirpath, dirs, files in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        for d in dirs:
            if os.path.islink(os.path.join(dirpath, d)):
                skipped.append(os.path.normpath(os.path.join(rel_dir, d)))
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(dirpath, d))
                         and kept(os.path.normpath(os.path.join(rel_dir, d))))
        for name in sorted(files):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            p = Path(dirpath) / name
            if not kept(rel):
                continue
            if p.is_symlink() or not p.is_file():
                skipped.append(rel)
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copy2(p, out)
    return skipped


def _ssh_key_path(inv: Inventory) -> Path | None:
    p = Path(os.path.expanduser(inv.hosts.ssh.key))
    return p.resolve() if p.is_file() else None


def build(county: County, work: Path) -> recovery.Manifest:
    """Write the snapshot's tree under `work` (made empty first) with its MANIFEST.json."""
    inv = county.inv
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    root, state_dir = county.root.resolve(), county.state_dir.resolve()
    state_rel = (str(state_dir.relative_to(root)) if state_dir.is_relative_to(root) else None)
    # The state store first: everything else is a file that changes only with a command.
    (work / "state").mkdir(mode=0o700)
    # 0600 before SQLite writes a byte: restic keeps the mode, and a restore puts it back
    (work / "state" / "state.db").touch(mode=0o600)
    src = sqlite3.connect(county.state_dir / "state.db")
    dst = sqlite3.connect(work / "state" / "state.db")
    try:
        with dst:
            src.backup(dst)
        tables = {name: dst.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
                  for (name,) in dst.execute("SELECT name FROM sqlite_master WHERE type = "
                                             "'table' AND name NOT LIKE 'sqlite_%'")}
        audit_last = dst.execute("SELECT MAX(ts) FROM audit").fetchone()[0] \
            if "audit" in tables else None
        applied = dict(dst.execute("SELECT node, release_id FROM node_state"))
        live = dict(dst.execute("SELECT tenant, MAX(release_id) FROM content_releases "
                                "WHERE status = 'live' GROUP BY tenant"))
    finally:
        src.close()
        dst.close()
    skipped = ["state/" + r for r in _copy_tree(state_dir, work / "state",
                                                recovery.state_file_kept)]
    skipped += ["inventory/" + r for r in _copy_tree(
        root, work / "inventory", lambda rel: recovery.inventory_file_kept(rel, state_rel))]
    key = _ssh_key_path(inv)
    if key is not None:
        (work / "ssh").mkdir(mode=0o700)
        shutil.copy2(key, work / "ssh" / "key")
    files = {str(p.relative_to(work)): file_sha256(str(p)) for p in sorted(work.rglob("*")) if p.is_file()}
    manifest = recovery.Manifest(
        made_at=time.time(), host=socket.gethostname(), inventory=str(root),
        state_dir=str(state_dir), ssh_key=str(key) if key else None, files=files,
        tables=tables, audit_last=audit_last, applied=applied, live=live,
        skipped=tuple(skipped))
    (work / recovery.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def backup(county: County, say: Say = lambda _: None, run_id: str | None = None
           ) -> dict[str, Any]:
    """One control snapshot to every control repository. Recorded as kind `control` in the
    backup catalogue (the exporter's age metric reads it)."""
    with county.exclusive("control-backup", lambda _: ControlBackupError(
            "another control backup is running on this machine; try again when it has "
            "finished"), mode=0o600):
        key = load_key(county.state_dir)
        if key is None:
            raise ControlBackupError("this control machine has no recovery key yet; run "
                                     "`govhost control init` once and keep the sheet it prints")
        inv = county.inv
        repos = repositories(inv)
        run_id = run_id or time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-control"
        work = county.state_dir / "control-work" / f"backup-{os.getpid()}" / recovery.SNAPSHOT_DIR
        cache = county.state_dir / "restic-cache"
        t0 = time.time()
        results: list[dict[str, Any]] = []
        try:
            try:
                manifest = build(county, work)
            except (OSError, sqlite3.Error) as exc:
                raise ControlBackupError(f"making the control snapshot failed: {exc}") from None
            say(f"snapshot of {len(manifest.files)} files made in {time.time() - t0:.1f} s")
            with _access(key, county.known_hosts, work.parent) as (keyfile, known):
                for repo in repos:
                    results.append(_backup_to(repo, key, keyfile, known, cache, work, run_id))
                    r = results[-1]
                    say(f"{repo.label}: " + (f"snapshot {r['snapshot'][:8]}" if r["ok"]
                                             else f"FAILED: {r['error']}"))
        finally:
            shutil.rmtree(work.parent, ignore_errors=True)
        with county.state() as st:
            for repo, r in zip(repos, results):
                st.record_backup({"run": run_id, "tenant": "_control", "kind": repo.kind,
                                  "node": r["repository"], "snapshot": r["snapshot"],
                                  "ok": r["ok"], "started_at": r["started_at"],
                                  "finished_at": r["finished_at"], "seconds": r["seconds"],
                                  "files": len(manifest.files), "bytes": r.get("bytes", 0),
                                  "bytes_added": r.get("bytes_added", 0), "error": r["error"]})
        ok = bool(results) and all(r["ok"] for r in results)
        return {"ok": ok, "run": run_id, "files": len(manifest.files),
                "skipped": list(manifest.skipped),
                "tables": manifest.tables, "seconds": round(time.time() - t0, 3),
                "repositories": results}


def _backup_to(repo: Repository, key: bytes, keyfile: Path, known: Path, cache: Path,
               work: Path, run_id: str) -> dict[str, Any]:
    t0 = time.time()
    res: dict[str, Any] = {"repository": repo.label, "url": repo.url, "started_at": t0,
                           "snapshot": None, "ok": False, "error": ""}
    try:
        _ensure_repository(repo, key, keyfile, known, cache)
        _unlock(repo, key, keyfile, known, cache)
        r = _restic(repo, key, keyfile, known, "backup", "--json", "--host", TAG, "--tag", TAG,
                    "--tag", f"run={run_id}", str(work), cache=cache)
        summary = restic_summary(r.stdout)
        if r.returncode != 0 or not summary.get("snapshot_id"):
            raise ControlBackupError(f"restic exit {r.returncode}: {_err(r)}")
        res.update(ok=True, snapshot=summary["snapshot_id"],
                   bytes=summary.get("total_bytes_processed", 0),
                   bytes_added=summary.get("data_added", 0))
    except ControlBackupError as exc:
        res["error"] = str(exc)
    res["finished_at"] = time.time()
    res["seconds"] = round(res["finished_at"] - t0, 3)
    return res


# ------------------------------------------------------------------ restoring

def _snapshots(repo: Repository, key: bytes, keyfile: Path, known: Path) -> list[dict]:
    r = _restic(repo, key, keyfile, known, "snapshots", "--json", "--no-lock", "--tag", TAG,
                timeout=600)
    if r.returncode != 0:
        err = _err(r)
        if "wrong password" in err:
            raise ControlBackupError(f"the {repo.label}'s control repository does not open with "
                                     "this recovery key (another county's key, or a key "
                                     "rotated since)")
        raise ControlBackupError(f"cannot list the control snapshots on the {repo.label} "
                                 f"({repo.url}): {err}")
    snaps = json.loads(r.stdout or b"[]") or []
    return sorted(snaps, key=lambda s: backup_plan.parse_time(s["time"]))


def fetch(repo: Repository, key: bytes, dest: Path, snapshot: str | None = None,
          known_hosts: Path | None = None) -> tuple[dict, Path, recovery.Manifest]:
    """Restore a control snapshot (the newest, or `snapshot`) into `dest` (a private
    directory) and check every file against its manifest: (snapshot, its tree, manifest).
    Raises on any mismatch."""
    with _access(key, known_hosts, dest) as (keyfile, known):
        snaps = _snapshots(repo, key, keyfile, known)
        if snapshot:
            snaps = [s for s in snaps if s["id"].startswith(snapshot)]
        if not snaps:
            raise ControlBackupError(f"no control snapshot{' ' + snapshot if snapshot else ''} "
                                     f"in the {repo.label}'s repository {repo.url}")
        snap = snaps[-1]
        r = _restic(repo, key, keyfile, known, "restore", snap["id"], "--target",
                    str(dest / "tree"), timeout=3600)
        if r.returncode != 0:
            raise ControlBackupError(f"restic restore from the {repo.label} failed: {_err(r)}")
    found = list((dest / "tree").rglob(f"{recovery.SNAPSHOT_DIR}/{recovery.MANIFEST}"))
    if len(found) != 1:
        raise ControlBackupError(f"snapshot {snap['short_id']} holds no control manifest")
    tree = found[0].parent
    try:
        manifest = recovery.Manifest.from_json(found[0].read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:
        raise ControlBackupError(f"snapshot {snap['short_id']}: {exc}") from None
    digests = {str(p.relative_to(tree)): file_sha256(str(p)) for p in tree.rglob("*")
               if p.is_file() and p != found[0]}
    diff = recovery.compare_files(manifest.files, digests)
    if any(diff.values()):
        raise ControlBackupError(f"snapshot {snap['short_id']} does not match its manifest: "
                                 + "; ".join(f"{k}: {', '.join(v[:5])}" for k, v in diff.items() if v))
    db = sqlite3.connect(tree / "state" / "state.db")
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        schema = db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()
    if check != "ok":
        raise ControlBackupError(f"the state store in snapshot {snap['short_id']} is damaged: "
                                 f"{check}")
    if schema > SCHEMA_VERSION:     # refused before anything here is moved aside
        raise ControlBackupError(
            f"snapshot {snap['short_id']} holds a state of schema version {schema}, made by a "
            f"newer govhost; this one knows versions up to {SCHEMA_VERSION}. Restore it with "
            "the govhost release that made it")
    return snap, tree, manifest


def _absolute(value: str, what: str) -> Path:
    p = Path(value)
    if not p.is_absolute() or ".." in p.parts:
        raise ControlBackupError(f"the snapshot names {what} {value!r}: not a plain absolute path")
    return p


def _places(manifest: recovery.Manifest, tree: Path, inventory: Path | None) -> dict[str, Path]:
    """Where each part goes on this machine. The inventory where it was, or `inventory`; the
    state directory inside it if it was inside it, or with `inventory` always inside it (else
    where it was, or GOVHOST_STATE_DIR); the SSH key where the restored hosts.yaml names it."""
    old_inv = _absolute(manifest.inventory, "the inventory")
    old_state = _absolute(manifest.state_dir, "the state directory")
    inv = (inventory or old_inv).resolve()
    env = os.environ.get("GOVHOST_STATE_DIR")
    if env:
        state = Path(env).resolve()
    elif old_state.is_relative_to(old_inv):
        state = inv / old_state.relative_to(old_inv)
    elif inventory is not None:
        state = inv / ".govhost"
    else:
        state = old_state
    out = {"inventory": inv, "state": state}
    if (tree / "ssh" / "key").is_file():
        import yaml
        hosts = yaml.safe_load((tree / "inventory" / "hosts.yaml").read_text(encoding="utf-8"))
        named = str(((hosts or {}).get("ssh") or {}).get("key") or manifest.ssh_key or "")
        if named:
            out["ssh_key"] = _absolute(os.path.expanduser(named), "the SSH key")
    return out


def _occupied(places: dict[str, Path], tree: Path) -> list[str]:
    """What a restore would displace: a non-empty inventory or state directory, or another
    SSH key where the county's key goes."""
    taken = [str(places[k]) for k in ("inventory", "state")
             if places[k].is_dir() and any(places[k].iterdir())]
    key = places.get("ssh_key")
    if key is not None and key.exists() and key.read_bytes() != (tree / "ssh" / "key").read_bytes():
        taken.append(f"{key} (another key)")
    return taken


def restore(key_text: str, repo: Repository, *, inventory: Path | None = None,
            snapshot: str | None = None, force: bool = False,
            say: Say = lambda _: None) -> dict[str, Any]:
    """Bring a control machine back from a control snapshot, then reconcile with the nodes.

    The snapshot is read and checked in a private directory, put together beside its target
    and only then renamed into place: a failure before that leaves this machine as it was. Until the nodes have been asked, a marker makes `apply` refuse (`control
    reconcile` finishes a restore that was cut short)."""
    key = recovery.parse_key(key_text)
    t0 = time.time()
    # Decrypted, the county is secrets: a private directory on disk (not a tmpfs that other
    # tools clean), removed at the end whatever happens.
    scratch = Path(tempfile.mkdtemp(prefix="govhost-restore-", dir="/var/tmp"))
    try:
        say(f"reading the control snapshots on the {repo.label} ({repo.url})")
        snap, tree, manifest = fetch(repo, key, scratch, snapshot)
        say(f"snapshot {snap['short_id']} of {snap['time'][:19]}: {len(manifest.files)} files, "
            "all matching their digests")
        places = _places(manifest, tree, inventory)
        taken = _occupied(places, tree)
        if taken and not force:
            raise ControlBackupError("this machine already has something where the county goes ("
                                     + ", ".join(taken) + "); restore elsewhere with --to DIR, "
                                     "or pass --force to move it aside first")
        moved = _install(tree, places, key, manifest, snap)
        fetched_at = time.time()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"installed: inventory {places['inventory']}, state {places['state']}")
    county = County(places["inventory"], places["state"])
    report = reconcile(county, say)
    needs_env = (places["state"] != places["inventory"] / ".govhost"
                 and not os.environ.get("GOVHOST_STATE_DIR"))
    return {"ok": True, "snapshot": snap["short_id"], "snapshot_time": snap["time"],
            "made_at": manifest.made_at, "from": repo.url,
            "inventory": str(places["inventory"]), "state_dir": str(places["state"]),
            "state_dir_env": str(places["state"]) if needs_env else "",
            "ssh_key": str(places.get("ssh_key") or ""), "moved_aside": moved,
            "files": len(manifest.files), "restore_seconds": round(fetched_at - t0, 3),
            "seconds": round(time.time() - t0, 3),
            "data_at_risk_seconds": round(t0 - manifest.made_at, 1), **report}


def _install(tree: Path, places: dict[str, Path], key: bytes,
             manifest: recovery.Manifest, snap: dict) -> list[str]:
    """Put the county together beside where it goes, move what is there aside (--force,
    checked before), then rename each part into place."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    inv_dir, state = places["inventory"], places["state"]
    inside = state.is_relative_to(inv_dir)
    # Staged beside each target, so that putting it in place is a rename on one filesystem.
    inv_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{inv_dir.name}.restoring-", dir=inv_dir.parent))
    staged_inv = stage / "inventory"
    staged_state = None
    try:
        shutil.copytree(tree / "inventory", staged_inv)
        if inside:
            staged_state = staged_inv / state.relative_to(inv_dir)
        else:
            state.parent.mkdir(parents=True, exist_ok=True)
            staged_state = Path(tempfile.mkdtemp(prefix=f".{state.name}.restoring-",
                                                 dir=state.parent)) / "state"
        shutil.copytree(tree / "state", staged_state, dirs_exist_ok=True)
        os.chmod(staged_state, 0o700)
        for db in staged_state.glob("state.db*"):
            os.chmod(db, 0o600)
        write_private(staged_state / KEY_FILE, (recovery.format_key(key) + "\n").encode())
        write_private(staged_state / RESTORE_PENDING, json.dumps(
            {"snapshot": snap["short_id"], "snapshot_time": snap["time"],
             "manifest": json.loads(manifest.to_json())}).encode())
    except OSError:
        shutil.rmtree(stage, ignore_errors=True)         # secrets: never left half-staged
        if not inside and staged_state is not None:
            shutil.rmtree(staged_state.parent, ignore_errors=True)
        raise
    moved = []
    # The SSH key first: a restore cut short after the state arrived must leave a machine
    # that reaches its nodes, or `control reconcile` cannot finish it.
    if "ssh_key" in places:
        dest, new = places["ssh_key"], (tree / "ssh" / "key").read_bytes()
        if dest.exists() and dest.read_bytes() != new:
            aside = dest.with_name(f"{dest.name}.before-restore-{stamp}")
            dest.rename(aside)
            moved.append(str(aside))
        write_private(dest, new)
    # The state (with its restore-pending mark) before the inventory: an inventory never
    # stands without its state, which would make new secrets and push a new identity.
    for dest in (() if inside else (state,)) + (inv_dir,):
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            aside = dest.with_name(f"{dest.name}.before-restore-{stamp}")
            dest.rename(aside)
            moved.append(str(aside))
        elif dest.is_dir():
            dest.rmdir()
        if dest == state:
            staged_state.rename(state)
            staged_state.parent.rmdir()
        else:
            staged_inv.rename(inv_dir)
            stage.rmdir()
    return moved


def reconcile(county: County, say: Say = lambda _: None) -> dict[str, Any]:
    """Ask every node what it runs; make the state's live releases what the units' replicas
    all serve (publishes, approvals, rollbacks after the snapshot); list the rest. Ends the
    restore (`apply` runs again afterwards); until then it can be run again."""
    marker = county.state_dir / RESTORE_PENDING
    try:
        pending = json.loads(marker.read_text(encoding="utf-8"))
        manifest = recovery.Manifest.from_json(json.dumps(pending["manifest"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ControlBackupError(f"no control restore to finish here ({marker}: {exc})") from None
    inv = county.inv
    status = remote.node_status(inv.hosts, inv.hosts.nodes, county.known_hosts, content=True)
    unreachable = sorted(n for n, s in status.items() if not s.reachable)
    if status and len(unreachable) == len(status):
        raise ControlBackupError("no node answers (" + "; ".join(
            f"{n}: {s.error}" for n, s in sorted(status.items())) + "); nothing was learned "
            "about what changed after the snapshot. When they answer, run `govhost control "
            "reconcile` (apply waits for it)")
    node_releases = {n: s.release for n, s in status.items() if s.reachable}
    node_live = {n: {t: (h or {}).get("current") for t, h in (s.content or {}).items()}
                 for n, s in status.items() if s.reachable}
    with county.state() as st:
        placement = st.placements()
        units = {t.name: placement.get(t.name, ()) for t in inv.tenants}
        state_live = st.live_releases()
        found = recovery.after_snapshot(manifest, node_releases, node_live, units, state_live)
        recorded: dict[str, set[str]] = {}
        for r in st.content_releases():
            recorded.setdefault(r["tenant"], set()).add(r["release_id"])
        for unit, entry in sorted(found["live_after"].items()):
            rid = entry["release"]
            if rid in recorded.get(unit, set()):
                st.set_content_status(unit, rid, "live", "live-after-restore",
                                      "control-restore")
            else:
                st.add_content_release(unit, rid, "live", {
                    "published_by": "control-restore (found on every replica)"},
                    entry["nodes"])
            for r in st.content_releases(unit, "live"):
                if r["release_id"] != rid:
                    st.set_content_status(unit, r["release_id"], "superseded", "superseded")
            say(f"{unit}: release {rid} is live on {', '.join(entry['nodes'])} since the "
                "snapshot; recorded")
        st.audit("control.restore", pending.get("snapshot", "?"),
                 {"snapshot_time": pending.get("snapshot_time"),
                  "live_after": sorted(found["live_after"]), "disagree": found["disagree"],
                  "unjudged": found["unjudged"],
                  "applied_after": found["applied_after"], "unreachable": unreachable})
    for unit, seen in found["disagree"].items():
        say(f"{unit}: its replicas serve different releases ({seen}); not recorded — check "
            "with `govhost releases {unit}` and publish or roll back")
    for unit, seen in found["unjudged"].items():
        say(f"{unit}: only {', '.join(seen)} of its replicas answered ({seen}); not recorded — "
            "run `govhost control reconcile` again when its other replicas are back")
    for node, rid in found["applied_after"].items():
        say(f"{node}: runs config release {rid}, applied after the snapshot; the next "
            "`govhost apply` brings it back to the restored inventory")
    if unreachable:
        say(f"not reachable now: {', '.join(unreachable)}; their units were judged by the "
            "replicas that answered")
    marker.unlink()
    lost_after = manifest.audit_last or manifest.made_at
    return {**found, "unreachable": unreachable,
            "not_recoverable": {
                "since": lost_after,
                "what": "people and their passwords or second factors changed, console "
                        "sessions, site requests, review decisions and audit entries made "
                        "after the snapshot; manifests edited after it (keep the inventory "
                        "in Git as well)"}}


# ------------------------------------------------------------------ drill

def drill(county: County, say: Say = lambda _: None) -> dict[str, Any]:
    """Restore the newest control snapshot into scratch space, check it and compare it with
    this machine, timed: proof that `restore` would work, without touching anything."""
    key = load_key(county.state_dir)
    if key is None:
        raise ControlBackupError("no recovery key on this machine; run `govhost control init`")
    repo = repositories(county.inv)[0]
    scratch = county.state_dir / "control-work" / f"drill-{os.getpid()}"   # backups: backup-PID
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, mode=0o700)
    t0 = time.time()
    ok, detail = False, {}
    try:
        snap, tree, manifest = fetch(repo, key, scratch, known_hosts=county.known_hosts)
        seconds = time.time() - t0
        live_state = sqlite3.connect(county.state_dir / "state.db")
        try:
            now = {t: live_state.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                   for t in manifest.tables if recovery.TABLE.match(t)}
        finally:
            live_state.close()
        grew = {t: now.get(t, 0) - n for t, n in manifest.tables.items() if now.get(t) != n}
        changed = [rel for rel, digest in manifest.files.items()
                   if rel.startswith("inventory/") and _live_digest(county, rel[10:]) != digest]
        ok = True
        detail = {"snapshot": snap["short_id"], "snapshot_time": snap["time"],
                  "files": len(manifest.files), "restore_seconds": round(seconds, 3),
                  "age_seconds": round(time.time() - manifest.made_at, 1),
                  "rows_since": grew, "inventory_changed_since": changed}
        say(f"snapshot {snap['short_id']}: {len(manifest.files)} files intact, state store "
            f"passes integrity_check; restored in {seconds:.1f} s")
    except (ControlBackupError, sqlite3.Error, OSError, ValueError, KeyError) as exc:
        detail = {"error": str(exc)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = round(time.time() - t0, 3)
    with county.state() as st:
        st.record_check(DRILL_KIND, None, ok, total, detail)
    return {"ok": ok, "seconds": total, "repository": repo.label, **detail}


def _live_digest(county: County, rel: str) -> str | None:
    p = county.root / rel
    return file_sha256(str(p)) if p.is_file() else None


def last_success(county: County) -> dict[str, float]:
    """kind (control, control-offsite) -> when a control snapshot last reached it."""
    with county.state() as st:
        last = st.last_backups()
    return {kind: at for (tenant, kind), at in last.items() if tenant == "_control"}
