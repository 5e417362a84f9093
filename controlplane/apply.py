"""Apply: converge every node to its rendered release, canary first, rolling back on failure.

Steps: take the exclusive lock; load and check the inventory (refused input touches nothing);
place, render and plan; ask each node what it runs (drift and fresh nodes show up here);
bootstrap nodes that need it; stage the new release on every node that needs one and
`nginx -t` it there; only if every node accepted it, activate on a canary node and then on
the rest, each probed and rolled back automatically on failure; record what each node runs.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import inventory as inventory_mod
from . import paths, remote
from .errors import ApplyError, LockError
from .plan import Plan, make_plan
from .render import Release, tenant_of
from .state import State, open_state, state_dir

Progress = Callable[[str, str, str], None]  # (node, step, outcome)


def bootstrap_version() -> str:
    """A hash of the node role: nodes bootstrapped by an older govhost get bootstrapped again."""
    h = hashlib.sha256()
    role = paths.PLAYBOOKS / "roles" / "node"
    for p in sorted(role.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(role).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def apply_lock(inventory: Path) -> Iterator[None]:
    """Exclusive per-inventory lock; the kernel releases it if the process dies."""
    d = state_dir(inventory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "apply.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise LockError(f"another govhost apply holds the lock ({holder}); "
                            "wait for it to finish, then run apply again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
                  0)
        yield
    finally:
        os.close(fd)


def lock_holder(inventory: Path) -> str | None:
    """Who holds the apply lock right now, or None."""
    path = state_dir(inventory) / "apply.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@dataclass
class NodeOutcome:
    node: str
    result: str               # unchanged | applied | failed | unreachable | refused | skipped
    release: str | None = None
    message: str = ""


@dataclass
class ApplyResult:
    run_id: int
    plan: Plan
    nodes: list[NodeOutcome] = field(default_factory=list)
    refused_tenants: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def result(self) -> str:
        kinds = {n.result for n in self.nodes}
        if "refused" in kinds:
            return "refused"
        if kinds & {"failed", "unreachable", "skipped"}:
            return "partial" if kinds & {"applied", "unchanged"} else "failed"
        return "changed" if "applied" in kinds else "unchanged"

    @property
    def ok(self) -> bool:
        return self.result in ("changed", "unchanged")

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "result": self.result, "seconds": round(self.seconds, 3),
            "nodes": [vars(n) for n in self.nodes], "refused_tenants": self.refused_tenants,
            "tenant_changes": len(self.plan.tenants),
        }


_VHOST_IN_ERROR = re.compile(r"/vhosts/([a-z0-9-]+)\.conf")


def _tenants_in(message: str) -> list[str]:
    return sorted({m for m in _VHOST_IN_ERROR.findall(message) if not m.startswith("_")})


def pack(release: Release) -> bytes:
    """A release as a deterministic tar.gz: the one transfer to the node."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name in sorted(release.files):
            data = release.files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _archive(release: Release, dest: Path) -> Path:
    """Write the packed release once per (node, release id) for the playbook to copy."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{release.node}-{release.id}.tar.gz"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pack(release))
    os.replace(tmp, path)
    return path


def _prune_archives(dest: Path, keep: int = 30) -> None:
    files = sorted(dest.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in files[keep:]:
        p.unlink(missing_ok=True)


def prepare(inventory: Path, state: State) -> tuple[inventory_mod.Inventory, Plan]:
    inv = inventory_mod.load(inventory)
    plan = make_plan(inv, state.drained(), state.placements(), state.applied())
    return inv, plan


def apply(
    inventory: Path,
    progress: Progress | None = None,
    confirm: Callable[[Plan], bool] | None = None,
) -> ApplyResult:
    """Converge all nodes. Raises ManifestError/PlacementError before anything is touched."""
    started = time.monotonic()
    say = progress or (lambda node, step, outcome: None)
    inventory = Path(inventory)
    with apply_lock(inventory):
        state = open_state(inventory)
        try:
            return _apply_locked(inventory, state, say, confirm, started)
        finally:
            state.close()


def _apply_locked(inventory: Path, state: State, say: Progress,
                  confirm: Callable[[Plan], bool] | None, started: float) -> ApplyResult:
    inv, plan = prepare(inventory, state)
    sdir = state_dir(inventory)
    known_hosts = sdir / "known_hosts"
    nodes = {n.name: n for n in inv.hosts.nodes}

    # What does each node really run? Drift (or a rebuilt node) means it must be shipped again.
    live = remote.node_status(inv.hosts, list(nodes.values()), known_hosts)
    applied = state.applied()
    boot_version = bootstrap_version()
    outcomes: dict[str, NodeOutcome] = {}
    to_boot, to_stage, to_start = [], [], []
    for name in sorted(nodes):
        st = live[name]
        rel = plan.releases[name]
        if not st.reachable:
            outcomes[name] = NodeOutcome(name, "unreachable", None, st.error)
            say(name, "connect", "unreachable")
            continue
        if st.bootstrap != boot_version:
            to_boot.append(name)
        if st.release == rel.id and st.nginx_running:
            rec = applied.get(name)
            if rec is None or rec.release_id != rel.id:
                state.record_applied(name, rel.id, rel.digests, 0)  # node already converged
            outcomes[name] = NodeOutcome(name, "unchanged", rel.id)
        elif st.release == rel.id:
            to_start.append(name)
        else:
            to_stage.append(name)

    work = [n for n in sorted(nodes) if n in to_stage or n in to_start or n in to_boot]
    if work and confirm is not None and not confirm(plan):
        raise ApplyError("apply cancelled; nothing was changed")

    run_id = state.start_run("apply")
    result = ApplyResult(run_id, plan)
    runner_dir = sdir / "runner"
    try:
        if to_boot:
            boot = remote.run_playbook(
                "bootstrap.yml", inv.hosts, [nodes[n] for n in to_boot], {}, runner_dir,
                known_hosts, {"govhost_bootstrap_version": boot_version},
                on_task=lambda h, t, o: say(h, "bootstrap", o))
            for name, r in boot.items():
                if not r.ok:
                    outcomes[name] = NodeOutcome(name, "unreachable" if r.unreachable else
                                                 "failed", None, "bootstrap: " + r.message)
                    say(name, "bootstrap", "failed")
        to_stage = [n for n in to_stage if n not in outcomes]
        to_start = [n for n in to_start if n not in outcomes]

        archives = sdir / "archives"
        hostvars = {}
        for name in to_stage + to_start:
            rel = plan.releases[name]
            hostvars[name] = {"govhost_release_id": rel.id,
                              "govhost_archive": str(_archive(rel, archives)),
                              "govhost_keep_releases": inv.cluster.keep_releases}
        staged: list[str] = []
        if to_stage:
            say("*", "stage", f"{len(to_stage)} node(s)")
            res = remote.run_playbook(
                "stage.yml", inv.hosts, [nodes[n] for n in to_stage], hostvars, runner_dir,
                known_hosts, on_task=lambda h, t, o: say(h, "stage", o))
            refused: set[str] = set()
            for name, r in res.items():
                if r.ok:
                    staged.append(name)
                elif r.unreachable:
                    outcomes[name] = NodeOutcome(name, "unreachable", None, r.message)
                elif "nginx -t refused" not in r.message:
                    outcomes[name] = NodeOutcome(name, "failed", None, "stage: " + r.message)
                else:
                    bad = _tenants_in(r.message)
                    refused.update(bad)
                    files = ", ".join(inv.sources.get(t, t) for t in bad)
                    who = f" (tenant {', '.join(bad)}: {files})" if bad else ""
                    outcomes[name] = NodeOutcome(name, "refused", None,
                                                 f"nginx -t refused the release{who}: {r.message}")
            if any(o.result == "refused" for o in outcomes.values()):
                # A release nginx refuses on any node is a bad release: activate it nowhere.
                result.refused_tenants = sorted(refused)
                for name in staged:
                    outcomes[name] = NodeOutcome(name, "skipped", None,
                                                 "not activated: the release was refused "
                                                 "on another node")
                staged = []
        _activate(inv, plan, state, nodes, staged + to_start, hostvars, runner_dir,
                  known_hosts, outcomes, run_id, say)
        if any(o.result in ("applied", "unchanged") for o in outcomes.values()):
            state.save_placements(plan.placement)
        if archives.exists():
            _prune_archives(archives)
    finally:
        result.nodes = [outcomes.get(n) or NodeOutcome(n, "failed", None, "interrupted")
                        for n in sorted(nodes)]
        result.seconds = time.monotonic() - started
        state.finish_run(run_id, result.result, result.to_json())
    return result


def _activate(inv, plan: Plan, state: State, nodes, targets: list[str], hostvars, runner_dir,
              known_hosts, outcomes: dict[str, NodeOutcome], run_id: int, say: Progress) -> None:
    """Canary first, then the rest. A canary that is merely unreachable does not stop the
    rollout (the next node becomes the canary); a canary whose activation fails does."""
    pending = list(targets)
    while pending:
        res = remote.run_playbook(
            "activate.yml", inv.hosts, [nodes[n] for n in pending], hostvars, runner_dir,
            known_hosts, on_task=lambda h, t, o: say(h, "activate", o))
        canary = pending[0]
        for name, r in res.items():
            rel = plan.releases[name]
            if r.ok:
                state.record_applied(name, rel.id, rel.digests, run_id)
                outcomes[name] = NodeOutcome(name, "applied", rel.id)
                say(name, "done", "applied")
            elif r.unreachable:
                outcomes[name] = NodeOutcome(name, "unreachable", None, r.message)
            elif name == canary or r.errors and "did not run" not in r.errors[0]:
                outcomes[name] = NodeOutcome(name, "failed", None,
                                             f"{r.message} (rolled back to the previous release)")
            else:
                outcomes[name] = NodeOutcome(name, "skipped", None,
                                             f"not activated: canary {canary} failed")
        if res[canary].unreachable:
            pending = [n for n in pending[1:] if outcomes[n].result == "skipped"]
        else:
            pending = []
