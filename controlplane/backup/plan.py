"""What each node backs up, when, and how long it keeps it: pure functions over the inventory.

One shared restic repository on the node with the `backup` role, with one snapshot per tenant
and kind (files, db) tagged `tenant=<name>`. Why one repository and not one per tenant:
- deduplication across units (the same CMS, templates and attachments are stored once);
- one password, one lock, one `check` and one `prune` for the county instead of hundreds;
- isolation does not need separate repositories: units never reach the repository (only
  root on the nodes, through govhost's backup key), and restores go through govhost;
- deleting one unit's data is `forget --tag tenant=<name> --prune`, which removes every blob
  no other snapshot uses.

A tenant's files are backed up by its first replica (the node its SFTP account uploads to);
its database by the node with the `db` role. The schedule becomes systemd timers (or cron
lines where a node has no systemd), rendered here so that the node only writes them out.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from controlplane.backup import recovery
from controlplane.core import accounts, paths, secrets
from controlplane.core.inventory import BackupPolicy, Inventory
from controlplane.core.specfile import spec_bytes

BACKUP_USER = "govhost-backup"
SNAPSHOT_KINDS = ("files", "db", "control")


def repository_url(user: str, address: str, path: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"sftp:{user}@{host}:{path}"


def on_calendar(schedule: str) -> str:
    """A manifest schedule as systemd OnCalendar."""
    if schedule in ("hourly", "daily", "weekly"):
        return schedule
    hh, mm = schedule.split(":")
    return f"*-*-* {hh}:{mm}:00"


def cron(schedule: str) -> str:
    """A manifest schedule as the five time fields of a cron line."""
    fixed = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 1"}
    if schedule in fixed:
        return fixed[schedule]
    hh, mm = schedule.split(":")
    return f"{int(mm)} {int(hh)} * * *"


def _slug(schedule: str) -> str:
    return schedule.replace(":", "")


def timer(name: str, schedule: str, args: Sequence[str], jitter_minutes: int = 15) -> dict:
    return {"name": f"govhost-backup-{name}", "on_calendar": on_calendar(schedule),
            "cron": cron(schedule), "args": list(args), "jitter_minutes": jitter_minutes}


def password(inv: Inventory, offsite: bool = False) -> str:
    return secrets.derive(inv.secret, "restic-offsite" if offsite else "restic-repository", 32)


def retention_args(policy: BackupPolicy) -> list[str]:
    """restic forget's keep options for a policy. Keeping nothing is never what anyone
    wants from a backup: a policy of all zeros keeps the latest snapshot."""
    args = []
    for flag, n in (("--keep-daily", policy.keep_daily), ("--keep-weekly", policy.keep_weekly),
                    ("--keep-monthly", policy.keep_monthly)):
        if n:
            args += [flag, str(n)]
    return args or ["--keep-last", "1"]


@dataclass(frozen=True)
class Sources:
    """Who backs up what: tenant -> node for files, and the db node for databases."""

    files: dict[str, str]
    databases: dict[str, str]


def sources(inv: Inventory, placement: Mapping[str, Sequence[str]]) -> Sources:
    files, dbs = {}, {}
    db = accounts.db_node(inv)
    for t in inv.tenants:
        if not inv.backup_policy(t).enabled:
            continue
        files[t.name] = placement[t.name][0]
        if db is not None and t.site.type == "php" and t.site.database:
            dbs[t.name] = db.name
    return Sources(files, dbs)


def node_spec(inv: Inventory, placement: Mapping[str, Sequence[str]], node: str) -> bytes | None:
    """backup.json of `node` (shipped mode 0600: it holds the repository passwords)."""
    repo_node = inv.backup_node
    if repo_node is None:
        return None
    settings = inv.cluster.backup
    me = next(n for n in inv.hosts.nodes if n.name == node)
    src = sources(inv, placement)
    policies = {t.name: inv.backup_policy(t) for t in inv.tenants}
    files = sorted(t for t, n in src.files.items() if n == node)
    dbs = sorted(t for t, n in src.databases.items() if n == node)
    timers = []
    for schedule in sorted({policies[t].schedule for t in files + dbs}):
        timers.append(timer(f"run-{_slug(schedule)}", schedule, ["run", "--schedule", schedule]))
    local = repo_node.name == node
    spec: dict[str, Any] = {
        "node": node,
        "cluster": inv.cluster.domain,
        "repository": {
            "url": repository_url(BACKUP_USER, repo_node.address, settings.path),
            "address": repo_node.address, "port": inv.hosts.ssh.port, "user": BACKUP_USER,
            "path": settings.path, "local": local,
        },
        "password": password(inv),
        "files": [{"tenant": t, "schedule": policies[t].schedule,
                   "home": f"{paths.NODE_SITES}/{t}"} for t in files],
        "databases": [{"tenant": t, "database": accounts.db_name(t),
                       "schedule": policies[t].schedule} for t in dbs],
        "authorize": [],
        "retention": [],
        "offsite": None,
        "timers": timers,
    }
    public = secrets.public_key(inv.backup_key)
    # The control machine's snapshots sit beside each repository, reached with the recovery
    # key's own SSH key (backup/recovery.py): the nodes' key is not given them.
    # An account of its own (CONTROL_USER), so that the nodes' key cannot reach them.
    rescue = (recovery.ssh_public_key(recovery.parse_key(inv.recovery_key.decode()))
              if inv.recovery_key else None)
    off = settings.offsite
    if local:
        spec["authorize"].append({"user": BACKUP_USER, "dir": settings.path,
                                  "public_key": public})
        if rescue:
            spec["authorize"].append({"user": recovery.CONTROL_USER, "public_key": rescue,
                                      "dir": recovery.control_path(settings.path)})
        spec["retention"] = retention_groups(inv)
        spec["verify_subset_percent"] = settings.verify_subset_percent
        spec["timers"] += [timer("forget", "daily", ["forget", "--prune"]),
                           timer("verify", settings.verify_schedule, ["verify"])]
        if off:
            spec["offsite"] = {"url": repository_url(off.user, off.address, off.path),
                               "address": off.address, "port": off.port, "user": off.user,
                               "password": password(inv, offsite=True)}
            spec["timers"].append(timer("offsite", off.schedule, ["copy"]))
    if off and off.address == me.address:
        # The off-site repository on a cluster node (a lab stand-in for the DR center).
        spec["authorize"].append({"user": off.user, "dir": off.path, "public_key": public})
        if rescue:
            spec["authorize"].append({"user": recovery.CONTROL_USER, "public_key": rescue,
                                      "dir": recovery.control_path(off.path)})
    return spec_bytes(spec)


def retention_groups(inv: Inventory) -> list[dict[str, Any]]:
    """Tenants grouped by retention policy: one `restic forget` per distinct policy. The
    control plane's own snapshots follow the cluster defaults."""
    default = BackupPolicy(True, inv.cluster.backup.schedule, inv.cluster.backup.keep_daily,
                           inv.cluster.backup.keep_weekly, inv.cluster.backup.keep_monthly)
    groups: dict[tuple[str, ...], list[str]] = {}
    for t in inv.tenants:
        p = inv.backup_policy(t)
        if p.enabled:
            groups.setdefault(tuple(retention_args(p)), []).append(f"tenant={t.name}")
    groups.setdefault(tuple(retention_args(default)), []).append("kind=control")
    return [{"keep": list(k), "tags": sorted(v)} for k, v in sorted(groups.items())]


# --------------------------------------------------------------- choosing snapshots

def parse_time(value: str) -> float:
    """restic's snapshot time (RFC 3339 with nanoseconds) or an operator's --at, as epoch."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:                        # Python takes at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a time; use e.g. 2026-11-22T14:30 or "
                         "2026-11-22 14:30:00+08:00") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()               # an operator's local time
    return dt.timestamp()


def tags(snapshot: Mapping[str, Any]) -> dict[str, str]:
    return dict(t.split("=", 1) for t in snapshot.get("tags") or [] if "=" in t)


def of_kind(snapshots: Iterable[Mapping[str, Any]], tenant: str | None,
            kind: str) -> list[Mapping[str, Any]]:
    """Snapshots of one kind (and tenant), oldest first."""
    out = [s for s in snapshots
           if tags(s).get("kind") == kind and (tenant is None or tags(s).get("tenant") == tenant)]
    return sorted(out, key=lambda s: parse_time(s["time"]))


def pick(snapshots: Sequence[Mapping[str, Any]], *, snapshot_id: str | None = None,
         at: float | None = None) -> Mapping[str, Any] | None:
    """The snapshot a restore wants: by id (or its short prefix), the last one taken at or
    before `at`, or the latest. `snapshots` is oldest first."""
    if snapshot_id:
        found = [s for s in snapshots if s["id"].startswith(snapshot_id)
                 or s.get("short_id") == snapshot_id]
        return found[0] if len(found) == 1 else None
    if at is not None:
        before = [s for s in snapshots if parse_time(s["time"]) <= at]
        return before[-1] if before else None
    return snapshots[-1] if snapshots else None


def companion(snapshots: Sequence[Mapping[str, Any]],
              chosen: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The database snapshot that goes with a files snapshot: the same run's, else the last
    one taken at or before it."""
    run = tags(chosen).get("run")
    same = [s for s in snapshots if run and tags(s).get("run") == run]
    if same:
        return same[-1]
    return pick(snapshots, at=parse_time(chosen["time"]) + 1)
