"""Apply: converge every node to its rendered release, canary first, rolling back on failure.

Steps: take the exclusive lock; load and check the inventory (refused input touches nothing);
place, render and plan; ask each node what it runs (drift and fresh nodes show up here);
bootstrap nodes that need it; ship each node what changed in its release (one SSH stream
that also runs `nginx -t` there, on every node at once) and, only if every node accepted it,
activate on a canary node and then on the rest, each probed and rolled back automatically
on failure (rollout.py); record what each node runs.
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import gzip
import io
import os
import re
import tarfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.errors import ApplyError, LockError
from controlplane.core.inventory import Inventory
from controlplane.core.state import RESTORE_PENDING, State
from controlplane.sites import bootstrap, content_sync, replicas, rollout, waf
from controlplane.sites.plan import Plan, compute_placement, make_plan, share_for
from controlplane.sites.render import Release, render_cluster
from controlplane.tls import metrics as tls_metrics
from controlplane.tls import store as tls_store
from govhost_node import digests as digest_list
from govhost_node import exits

Progress = Callable[[str, str, str], None]  # (node, step, outcome)


@contextmanager
def apply_lock(county: County) -> Iterator[None]:
    """Exclusive per-inventory lock, naming its holder for the run it refuses."""
    def busy(fd: int) -> LockError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        return LockError(f"another govhost apply holds the lock ({holder}); "
                         "wait for it to finish, then run apply again")

    if (county.state_dir / RESTORE_PENDING).exists():
        raise LockError("this control machine was restored from a control snapshot and has "
                        "not yet asked the nodes what changed after it; run `govhost control "
                        "reconcile` first (an apply now could undo later publishes)")
    with county.exclusive("apply", busy) as fd:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
                  0)
        yield


def lock_holder(county: County) -> str | None:
    """Who holds the apply lock right now, or None."""
    path = county.state_dir / "apply.lock"
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
    content: list[dict[str, Any]] = field(default_factory=list)   # releases moved to replicas
    kept_placement: list[str] = field(default_factory=list)  # units whose content couldn't move
    stranded: dict[str, str] = field(default_factory=dict)   # unit -> live release no node has
    firewall: dict[str, str] = field(default_factory=dict)   # node -> its confirmation
    after: dict[str, Any] = field(default_factory=dict)      # converge.service.follow_up
    # Where the run's time went, part by part (seconds; PhaseClock), and how long the canary's
    # activation took: what an operator (and bench/apply_scale.py) reads to see why a run
    # was slow.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def result(self) -> str:
        kinds = {n.result for n in self.nodes}
        if "refused" in kinds:
            return "refused"
        if kinds & {"failed", "unreachable", "skipped"} or self.kept_placement \
                or self.stranded:
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
            "content": self.content, "kept_placement": self.kept_placement,
            "stranded": self.stranded, "firewall": self.firewall, "after": self.after,
            "phases": self.phases,
        }


class PhaseClock:
    """Splits one run's wall time into its parts (an apply's, a node replacement's): each
    `mark` closes the part that ran since the one before (a part met twice, as the stage of a whole release after a delta,
    adds up)."""

    def __init__(self, start: float):
        self.last = start
        self.seconds: dict[str, float] = {}
        # set while a placement change's interim releases roll out: their pack, stage and
        # activations count apart from the final release's ("transition stage", …)
        self.prefix = ""

    def mark(self, part: str) -> None:
        now = time.monotonic()
        part = self.prefix + part
        self.seconds[part] = round(self.seconds.get(part, 0.0) + now - self.last, 3)
        self.last = now

    def split(self, first: str, rest: str, first_seconds: float | None) -> None:
        """Close a part that ran in two turns: `first_seconds` of it were the first turn
        (None: the whole part was)."""
        now = time.monotonic()
        whole = now - self.last
        head = whole if first_seconds is None else min(first_seconds, whole)
        for part, took in ((self.prefix + first, head), (self.prefix + rest, whole - head)):
            if took > 0:
                self.seconds[part] = round(self.seconds.get(part, 0.0) + took, 3)
        self.last = now


_VHOST_IN_ERROR = re.compile(r"/vhosts/([a-z0-9-]+)\.conf")


def _tenants_in(message: str) -> list[str]:
    return sorted({m for m in _VHOST_IN_ERROR.findall(message) if not m.startswith("_")})


# Release files only root may read on the node: they hold database passwords.
PRIVATE_FILES = frozenset({"tenants.json", "databases.json", "backup.json", "backup.key",
                           "metrics/node.key", "metrics/agent.json", "metrics/web.yml",
                           "snippets/preview-key.conf", "snippets/console-proxy.conf",
                           "messages.json"})


def private(name: str) -> bool:
    """Files only root may read on the node: credentials and TLS keys."""
    return name in PRIVATE_FILES or (name.startswith("tls/") and name.endswith(".key"))


def pack(release: Release, base: Mapping[str, str] | None = None) -> bytes:
    """A release as a deterministic tar.gz: the one transfer to the node.

    With `base` (the digests of a release the node already has) only the files that differ
    travel; the node hard-links the rest from that release. The digest list of the whole
    release always travels, and the node checks every file against it.
    """
    buf = io.BytesIO()
    digests = release.digests
    listing = digest_list.format_list(digests).encode()
    members = [(digest_list.NAME, listing)] + [
        (name, release.files[name]) for name in sorted(release.files)
        if base is None or base.get(name) != digests[name]]
    # gzip's header holds a time: 0, so that the same release packs to the same bytes
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600 if private(name) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gated_units(inv: Inventory, launched: Mapping[str, float]) -> frozenset[str]:
    """Units with `launch: pending` that have not passed `govhost launch`."""
    return frozenset(t.name for t in inv.tenants
                     if t.launch == "pending" and t.name not in launched)


def waf_modes(inv: Inventory, launched: Mapping[str, float]) -> dict[str, str]:
    """Each unit's WAF mode today, given who has passed `govhost launch`: what apply renders,
    the exporter's drift check keys on and the compliance report lists."""
    return waf.modes(inv.tenants, gated_units(inv, launched), datetime.date.today())


def deployable(county: County, state: State) -> Inventory:
    """The county's inventory with what a release needs beyond the manifests: certificates,
    metrics credentials and each unit's WAF mode today. Apply and the exporter's drift check
    both render from this, so they never disagree about what a node should hold."""
    inv = county.inv
    certs, served_with = tls_store.deployable(inv, county.certs, state)
    access = tls_metrics.ensure(county.state_dir, inv.secret, inv.hosts, inv.cluster.name)
    launched = state.launched()
    gated, modes = gated_units(inv, launched), waf_modes(inv, launched)
    return dataclasses.replace(inv, certificates=certs, served_with=served_with,
                               metrics=access, waf_modes=modes, gated=gated)


def prepare(county: County, state: State, share_for_node: str | None = None,
            checked: Callable[[], None] | None = None) -> tuple[Inventory, Plan]:
    """Load, check and plan. `share_for_node`: a node that just joined gets its share of the
    existing units' replicas (otherwise placement is sticky). `checked`: called once every
    check that can refuse the plan has passed (manifests, certificates, placement), before
    the release is rendered: apply asks the nodes' status then, while this renders."""
    inv = deployable(county, state)
    drained = state.drained()
    previous = state.placements()
    if share_for_node:
        previous = share_for(inv, drained, previous, share_for_node)
    placed = compute_placement(inv, drained, previous)
    if checked is not None:
        checked()
    plan = make_plan(inv, drained, previous, state.applied(), placed=placed)
    return inv, plan


@dataclass
class _Run:
    """What every step of one apply shares: the county's inventory and state, its nodes by
    name, how to reach them, and what each step found (per node, and for the whole run)."""
    inv: Inventory
    state: State
    nodes: dict[str, Any]
    known_hosts: Path
    runner_dir: Path
    outcomes: dict[str, NodeOutcome]
    result: "ApplyResult"
    say: Progress
    clock: PhaseClock


def placement(county: County, state: State) -> tuple[Inventory, dict[str, tuple[str, ...]]]:
    """What `prepare` would place, without rendering any node's configuration: for those
    that only read where units are (a publish, a tenant's removal), whose cost must not grow
    with the county's whole configuration."""
    inv = deployable(county, state)
    return inv, compute_placement(inv, state.drained(), state.placements())


def _transition(run: _Run, plan: Plan, live):
    """A unit whose replicas change is never proxied to a node that does not serve it: while
    some nodes run the old config and some the new, a request could otherwise bounce between
    two nodes that each think the other holds the site (508). Two interim releases, each
    rolled out everywhere before the next, make every step safe: (1) old and new replicas
    both serve it, the others proxy to the old ones; (2) the same, proxying to the new ones;
    then the final release. New replicas already hold the content (content follows first).
    Returns the node statuses as they are after the interim releases."""
    inv, state, nodes, outcomes, say = run.inv, run.state, run.nodes, run.outcomes, run.say
    previous = state.placements()
    moved = {t: tuple(ns) for t, ns in plan.placement.items()
             if previous.get(t) and set(previous[t]) != set(ns)}
    # Every reachable node takes part, a node that joined in this run (no config yet) too:
    # the interim releases may already send it traffic for units it now holds.
    targets = [n for n in sorted(nodes) if live[n].reachable
               and outcomes.get(n, NodeOutcome(n, "")).result not in ("unreachable", "failed")]
    if not moved or not targets:
        return live
    serving = {**plan.placement,
               **{t: tuple(dict.fromkeys((*previous[t], *ns))) for t, ns in moved.items()}}
    say("*", "transition", f"{len(moved)} unit(s) change replicas: two interim releases")
    run.clock.mark("transition")
    run.clock.prefix = "transition "
    steps = (("old", {**plan.placement, **{t: tuple(previous[t]) for t in moved}}),
             ("new", dict(plan.placement)))
    try:
        for step, upstream in steps:
            interim = dataclasses.replace(plan, releases=render_cluster(
                inv, upstream, serving, drained=state.drained()))
            applied = state.applied()
            payloads = _payloads(interim, targets, [], live, applied,
                                 Path(run.runner_dir).parent / "payloads")
            got: dict[str, NodeOutcome] = {}
            again = _release(run, interim, targets, payloads, got)
            if again:               # no usable delta base: the whole interim release
                full = _payloads(interim, again, [], live, {}, Path(run.runner_dir).parent
                                 / "payloads")
                _release(run, interim, again, full, got)
            bad = {n: o for n, o in got.items() if o.result != "applied"}
            if bad:
                # Every node is on a working config (interim or old); stop the change here.
                for n, o in bad.items():
                    outcomes[n] = NodeOutcome(n, o.result, None, f"interim release ({step} "
                                              f"upstreams): {o.message}")
                raise ApplyError("a placement change stopped half-way: " + "; ".join(
                    f"{n}: {o.message}" for n, o in bad.items()) + ". Every node serves every "
                    "unit; run apply again once the node is healthy")
            live = {n: dataclasses.replace(live[n], release=interim.releases[n].id,
                                           intact=True, nginx_running=True)
                    if n in targets else live[n] for n in live}
    finally:
        run.clock.prefix = ""
    return live


def _without(placed: tuple[str, ...], target: str, previous: tuple[str, ...]
             ) -> tuple[str, ...]:
    """The replicas a unit keeps when its content could not reach `target`: the old ones if
    `target` is new to it; if `target` was already a replica (a wiped node), the others, so
    that it proxies instead of serving an empty site."""
    if target not in previous:
        return tuple(previous)
    return tuple(n for n in placed if n != target)


def _content_moves(inv, plan: Plan, state: State, held) -> replicas.ContentPlan:
    live_content = state.live_releases()
    return replicas.plan_moves(plan.placement, state.placements(), live_content, held,
                               inv.cluster.defaults.keep_content_releases)


def _classify(plan: Plan, live, applied, state: State,
              outcomes: dict[str, NodeOutcome]) -> tuple[list[str], list[str]]:
    """Which nodes need their release shipped (and staged), which only need nginx, PHP or
    the agent started again; nodes already converged are recorded as unchanged."""
    to_stage, to_start = [], []
    for name in sorted(plan.releases):
        if name in outcomes and outcomes[name].result != "unchanged":
            continue
        st, rel = live[name], plan.releases[name]
        if st.release == rel.id and not st.intact:
            to_stage.append(name)   # the live release was changed on the node: ship it whole
        elif st.release == rel.id and st.nginx_running and st.agent_running \
                and st.php_running is not False and _firewall_settled(st, rel) \
                and _vrrp_settled(st, rel):
            rec = applied.get(name)
            if rec is None or rec.release_id != rel.id:
                state.record_applied(name, rel.id, rel.digests, 0)  # node already converged
            outcomes[name] = NodeOutcome(name, "unchanged", rel.id)
        elif st.release == rel.id:
            to_start.append(name)
        else:
            to_stage.append(name)
    for name in to_stage + to_start:
        outcomes.pop(name, None)
    return to_stage, to_start


def _vrrp_settled(st: remote.NodeStatus, rel: Release) -> bool:
    """keepalived runs where the release has floating addresses, unless the node keeps out
    of VRRP on purpose (drained, or released by hand)."""
    return "keepalived.conf" not in rel.files or st.vrrp_running or st.vrrp_released


def _firewall_settled(st: remote.NodeStatus, rel: Release) -> bool:
    """The node runs its release's firewall, confirmed (a change that was taken back, rules
    lost or one still waiting for confirmation mean activating again)."""
    return st.firewall == ("ok" if "firewall.nft" in rel.files else "off")


def _confirm_firewalls(inv, plan: Plan, outcomes: dict[str, NodeOutcome], nodes,
                       known_hosts: Path, result: "ApplyResult", say: Progress) -> None:
    """Every node activated in this run must see the control machine come in again over a
    new connection before its dead-man switch fires (the node knows whether its rules
    changed; a node with nothing pending just says so). One that does not keeps (gets back)
    its previous rules, and the run says so."""
    fw = inv.hosts.firewall
    todo = [n for n, o in outcomes.items() if o.result == "applied"
            and "firewall.nft" in plan.releases[n].files]
    if fw is None or not todo:
        return
    say("*", "firewall", f"confirming {len(todo)} node(s)")
    answers = remote.confirm_firewall(inv.hosts, [nodes[n] for n in sorted(todo)],
                                      known_hosts, max(3.0, fw.confirm_seconds / 2))
    for name, answer in sorted(answers.items()):
        result.firewall[name] = answer
        if answer.startswith("unreachable"):
            outcomes[name] = NodeOutcome(
                name, "failed", None,
                f"firewall: the control machine could not open a new SSH connection after "
                f"the change ({answer}); the node puts its previous rules back within "
                f"{fw.confirm_seconds} s. Check `firewall.management` in hosts.yaml")
            say(name, "firewall", "not confirmed")
        else:
            say(name, "firewall", "confirmed")


def _follow_content(run: _Run, plan: Plan, moves: replicas.ContentPlan, held) -> Plan:
    """Carry out the content moves; re-plan with the old placement of every unit whose
    content could not reach a new replica. Returns the plan to ship."""
    inv, state, outcomes, result, say = run.inv, run.state, run.outcomes, run.result, run.say
    down = {n for n, o in outcomes.items() if o.result in ("unreachable", "failed")}
    todo = [m for m in moves.moves if m.target not in down and m.source not in down]
    link = content_sync.Link(inv.hosts, run.known_hosts, run.nodes)
    done = content_sync.carry_out(link, todo, held, say) if todo else []
    previous = state.placements()
    keep_old: dict[str, tuple[str, ...]] = {}
    for r in done:
        result.content.append({"tenant": r.move.tenant, "from": r.move.source,
                               "to": r.move.target, "releases": list(r.move.releases),
                               "bytes": r.bytes, "ok": r.ok, "error": r.error})
        if not r.ok:
            keep_old[r.move.tenant] = _without(plan.placement[r.move.tenant], r.move.target,
                                               previous.get(r.move.tenant, ()))
    carried = set(todo)           # a set: a replaced node's thousands of moves
    skipped = [m for m in moves.moves if m not in carried]
    for m in skipped:
        keep_old[m.tenant] = _without(plan.placement[m.tenant], m.target,
                                      previous.get(m.tenant, ()))
        result.content.append({"tenant": m.tenant, "from": m.source, "to": m.target,
                               "releases": list(m.releases), "bytes": 0, "ok": False,
                               "error": "node unreachable or not bootstrapped"})
    for tenant, rid in sorted(moves.stranded.items()):
        result.stranded[tenant] = rid
    keep_old = {t: p for t, p in keep_old.items() if p}
    if not keep_old:
        return plan
    result.kept_placement = sorted(keep_old)
    for t in sorted(keep_old):
        say("*", "content", f"{t}: keeps replicas {','.join(keep_old[t])} (content could not "
            "follow)")
    return make_plan(inv, state.drained(), plan.placement, state.applied(), pins=keep_old)


def apply(
    county: County,
    progress: Progress | None = None,
    confirm: Callable[[Plan], bool] | None = None,
    share_for_node: str | None = None,
) -> ApplyResult:
    """Converge all nodes. Raises ManifestError/PlacementError before anything is touched.
    `share_for_node`: give that (new) node its share of the existing units' replicas."""
    started = time.monotonic()
    say = progress or (lambda node, step, outcome: None)
    with apply_lock(county):
        state = county.open_state()
        try:
            return _apply_locked(county, state, say, confirm, started, share_for_node)
        finally:
            state.close()


def _apply_locked(county: County, state: State, say: Progress,
                  confirm: Callable[[Plan], bool] | None, started: float,
                  share_for_node: str | None = None) -> ApplyResult:
    clock = PhaseClock(started)
    sdir = county.state_dir
    known_hosts = county.known_hosts
    # What does each node really run? Drift (or a rebuilt node) means it must be shipped
    # again. Asked while the release is rendered: one waits on the nodes, the other is this
    # machine's CPU (about 0.3 s each at 1,000 units; bench/apply_scale.py's phases). Only
    # once the plan can no longer be refused (manifests, certificates, placement): a refused
    # plan asks no node anything, and does not wait for one that is slow to answer.
    hosts = county.inv.hosts
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="govhost-node-status")
    asking: list[Future] = []
    try:
        inv, plan = prepare(county, state, share_for_node, checked=lambda: asking.append(
            pool.submit(remote.node_status, hosts, list(hosts.nodes), known_hosts,
                        content=True)))
        clock.mark("plan")
        live = asking[0].result()
    finally:
        pool.shutdown(wait=False)
    nodes = {n.name: n for n in inv.hosts.nodes}
    clock.mark("status")
    applied = state.applied()
    outcomes: dict[str, NodeOutcome] = {}
    for name in sorted(nodes):
        if not live[name].reachable:
            outcomes[name] = NodeOutcome(name, "unreachable", None, live[name].error)
            say(name, "connect", "unreachable")
    to_boot = [n for n in sorted(nodes) if n not in outcomes
               and not bootstrap.current(live[n].bootstrap, nodes[n].roles)]
    held = replicas.holdings_of(live)
    moves = _content_moves(inv, plan, state, held)
    to_stage, to_start = _classify(plan, live, applied, state, outcomes)
    work = [n for n in sorted(nodes) if n in to_stage or n in to_start or n in to_boot]
    if (work or moves.moves) and confirm is not None and not confirm(plan):
        raise ApplyError("apply cancelled; nothing was changed")

    run_id = state.start_run("apply")
    result = ApplyResult(run_id, plan)
    runner_dir = sdir / "runner"
    run = _Run(inv, state, nodes, known_hosts, runner_dir, outcomes, result, say, clock)
    try:
        if to_boot:
            boot = bootstrap.run(inv.hosts, [nodes[n] for n in to_boot], runner_dir,
                                 known_hosts, on_task=lambda h, t, o: say(h, "bootstrap", o))
            for name, r in boot.items():
                if not r.ok:
                    outcomes[name] = NodeOutcome(name, "unreachable" if r.unreachable else
                                                 "failed", None, "bootstrap: " + r.message)
                    say(name, "bootstrap", "failed")
            # A node whose govhost could not list its content can now.
            unknown = [n for n in to_boot if n not in held
                       and outcomes.get(n, NodeOutcome(n, "")).result not in ("unreachable",
                                                                             "failed")]
            if unknown:
                held.update(replicas.holdings_of(remote.node_status(
                    inv.hosts, [nodes[n] for n in unknown], known_hosts, content=True)))
                moves = _content_moves(inv, plan, state, held)
            clock.mark("bootstrap")
        # Content follows its replicas: every new (or emptied) replica gets the unit's
        # releases before any config release makes it serve the unit. A unit whose content
        # cannot get there keeps its old placement.
        plan = _follow_content(run, plan, moves, held)
        clock.mark("content")
        to_stage, to_start = _classify(plan, live, applied, state, outcomes)
        if to_stage or to_start:
            live = _transition(run, plan, live)
            applied = state.applied()
            to_stage, to_start = _classify(plan, live, applied, state, outcomes)
            clock.mark("transition")

        targets = to_stage + to_start
        if targets:
            payloads = _payloads(plan, to_stage, to_start, live, applied, sdir / "payloads")
            say("*", "stage", f"{len(targets)} node(s)")
            again = _release(run, plan, targets, payloads)
            if again:
                # These nodes lost (or changed) the base of their delta: send the whole release.
                say("*", "stage", f"{len(again)} node(s), whole release")
                full = _payloads(plan, again, [], live, {}, sdir / "payloads")
                for n in _release(run, plan, again, full):
                    outcomes[n] = NodeOutcome(n, "failed", None, "stage: the whole release "
                                              "did not arrive intact; see the node's disk")
        _confirm_firewalls(inv, plan, outcomes, nodes, known_hosts, result, say)
        clock.mark("firewall")
        if any(o.result in ("applied", "unchanged") for o in outcomes.values()):
            state.save_placements(plan.placement)
        clock.mark("record")
    finally:
        result.phases = {k: v for k, v in clock.seconds.items() if v >= 0.001}
        result.nodes = [outcomes.get(n) or NodeOutcome(n, "failed", None, "interrupted")
                        for n in sorted(nodes)]
        result.seconds = time.monotonic() - started
        state.finish_run(run_id, result.result, result.to_json())
    return result


def _payloads(plan: Plan, to_stage: list[str], to_start: list[str], live, applied,
              dest: Path) -> dict[str, rollout.Payload]:
    """Write, per node, the release archive its stage reads: only what changed since the
    release the node runs, when the state store knows that release's files; the whole release
    otherwise. A node that holds its release already (to be started again) gets none."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(name: str) -> tuple[str, rollout.Payload]:
        rel = plan.releases[name]
        if name not in to_stage:
            return name, rollout.Payload(f"exec {_NODE_CMD} stage {rel.id}", None)
        rec, base = applied.get(name), live[name].release
        if base and base != rel.id and live[name].intact and rec is not None \
                and rec.release_id == base:
            data, receive = pack(rel, rec.digests), f"receive {rel.id} {base}"
        else:
            data, receive = pack(rel), f"receive {rel.id}"
        path = dest / f"{name}.tar.gz"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return name, rollout.Payload(f"{_NODE_CMD} {receive} && exec {_NODE_CMD} stage {rel.id}",
                                     path)

    names = to_stage + to_start
    with ThreadPoolExecutor(max_workers=min(4, len(names))) as pool:
        return dict(pool.map(write, names))


_NODE_CMD = paths.NODE_TOOL


def _release(run: _Run, plan: Plan, targets: list[str],
             payloads: Mapping[str, rollout.Payload],
             outcomes: dict[str, NodeOutcome] | None = None) -> list[str]:
    """`nginx -t` on every node; only if no node refused the release, activate on a canary
    node and then on the rest, each probed and rolled back on failure (rollout.py). A canary
    that is merely unreachable does not stop the rollout (the next node becomes the canary);
    a canary whose activation fails does. Returns the nodes that need their whole release:
    they had no usable base for the delta. `outcomes`: where each node's outcome goes (the
    run's own unless given)."""
    inv, state, nodes, result, say = run.inv, run.state, run.nodes, run.result, run.say
    outcomes = run.outcomes if outcomes is None else outcomes
    hosts, known = inv.hosts, run.known_hosts
    run.clock.mark("pack")
    res = rollout.stage(hosts, [nodes[n] for n in targets], known, payloads, say)
    run.clock.mark("stage")
    staged: list[str] = []
    refused: set[str] = set()
    resend: list[str] = []
    for name in targets:
        r = res[name]
        message = f"Stage the release: {r.output}"
        if r.ok:
            staged.append(name)
        elif r.rc == exits.BASE_MISSING:
            resend.append(name)
        elif r.unreachable:
            outcomes[name] = NodeOutcome(name, "unreachable", None, f"unreachable: {r.output}")
        elif r.rc == exits.NGINX_REFUSED or "nginx -t refused" in r.output:
            bad = _tenants_in(r.output)
            refused.update(bad)
            files = ", ".join(inv.sources.get(t, t) for t in bad)
            who = f" (unit {', '.join(bad)}: {files})" if bad else ""
            what = ("nft -c refused the firewall" if "nft -c refused" in r.output
                    else "nginx -t refused the release")
            outcomes[name] = NodeOutcome(name, "refused", None, f"{what}{who}: {message}")
        else:
            outcomes[name] = NodeOutcome(name, "failed", None, "stage: " + message)
    if any(o.result == "refused" for o in outcomes.values()):
        # A release nginx refuses on any node is a bad release: it activated nowhere.
        result.refused_tenants = sorted(refused)
        for name in staged + resend:
            outcomes[name] = NodeOutcome(name, "skipped", None, "not activated: the "
                                         "release was refused on another node")
        return []
    canary, steps = rollout.activate(hosts, [nodes[n] for n in staged], known,
                                     {n: plan.releases[n].id for n in staged},
                                     inv.cluster.keep_releases, say)
    first = steps.get(canary) if canary else None
    run.clock.split("activate_canary", "activate_others",
                    first.seconds if first is not None else None)
    for name in staged:
        a, rel = steps[name], plan.releases[name]
        if a is None:
            outcomes[name] = NodeOutcome(name, "skipped", None,
                                         f"not activated: canary {canary} failed")
        elif a.ok:
            state.record_applied(name, rel.id, rel.digests, result.run_id)
            outcomes[name] = NodeOutcome(name, "applied", rel.id)
            say(name, "done", "applied")
        elif a.unreachable:
            outcomes[name] = NodeOutcome(name, "unreachable", None, f"unreachable: {a.output}")
        else:
            outcomes[name] = NodeOutcome(name, "failed", None, a.output)
    return resend
