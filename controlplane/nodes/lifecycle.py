"""A node's life after the first apply: replaced when its disk died, added, removed.

Each is an apply with a little before and after, so the same guarantees hold: content
reaches a new replica before any node sends it traffic, config releases go canary first.
- replace: the machine at the node's address is new (its SSH host key too). Forget the old
  key, then apply: bootstrap from bare, every content release the node held copied from a
  peer, its config release, its accounts. What no peer has — the upload areas of the units
  whose first replica it is, PHP `files/` of a unit with no other replica, the databases of
  the db node, content with no intact copy left — comes from the newest backup. When the
  node held the backup repository, that comes back from the off-site copy first.
- add: a node listed in hosts.yaml joins: bootstrapped, then given its share of replicas.
- remove: drained (its replicas moved with their content), then forgotten once it is gone
  from hosts.yaml.
"""
from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from controlplane.backup import control
from controlplane.backup import plan as backup_plan
from controlplane.backup import run as backup
from controlplane.content import releases as content
from controlplane.converge import service
from controlplane.core.county import County
from controlplane.core.errors import GovhostError, NodeError
from controlplane.messages import answers as message_answers
from controlplane.messages import collect as message_collect
from controlplane.nodes import handover
from controlplane.search import index as search_index
from controlplane.sites import apply as apply_mod
from controlplane.sites.plan import compute_placement

Say = Callable[[str], None]


def _node(inv, name: str):
    node = next((n for n in inv.hosts.nodes if n.name == name), None)
    if node is None:
        raise NodeError(f"no node named {name!r} in hosts.yaml; list it there (name, address, "
                        "roles, capacity) first")
    return node


def forget_host_key(county: County, address: str, port: int) -> bool:
    """The replaced machine has a new SSH host key; the old one would be refused."""
    known = county.known_hosts
    if not known.exists():
        return False
    host = address if port == 22 else f"[{address}]:{port}"
    r = subprocess.run(["ssh-keygen", "-R", host, "-f", str(known)], capture_output=True)
    return r.returncode == 0


def _progress(say: Say) -> apply_mod.Progress:
    return lambda node, step, outcome: say(f"{node} {step}: {outcome}")


def replace(county: County, name: str, say: Say = lambda _: None) -> dict[str, Any]:
    inv = county.inv
    node = _node(inv, name)
    forget_host_key(county, node.address, inv.hosts.ssh.port)
    held_before = sorted(t for t, ns in _placements(county).items() if name in ns)
    say(f"{name}: was a replica of {len(held_before)} unit(s); bootstrapping it and "
        "copying their content from peers")
    # where the time goes is what an operator waiting on a node asks (`--json`, the bench)
    clock = apply_mod.PhaseClock(time.monotonic())
    result = service.apply(county, progress=_progress(say))
    clock.mark("apply")
    out: dict[str, Any] = {"node": name, "apply": result.to_json(), "restored": [],
                           "phases": clock.seconds}
    if result.nodes and next(n for n in result.nodes if n.node == name).result not in (
            "applied", "unchanged"):
        out["result"] = "failed"
        return out
    if "backup" in node.roles:
        # Its disk held the county's repository: every snapshot back from off-site first
        # (the restores below read it), then a control snapshot beside it again.
        out["repository"] = _rebuild_repository(county, inv, say)
        clock.mark("repository")
    # What peers could not give: from the newest backup.
    for tenant in sorted(result.stranded):
        say(f"{tenant}: no intact copy on any node; restoring its content from the backup")
        r = backup.restore(county, tenant, with_db=False, safety_backup=False, say=say,
                           publish=content.publish)
        out["restored"].append({"tenant": tenant, "what": "content", "from": "backup",
                                "snapshot": r["files_snapshot"], "release": r.get("release")})
    clock.mark("stranded")
    placement = _placements(county)        # what the apply just put in force
    backed_up = backup_plan.sources(inv, placement).files
    wants: dict[str, backup.ReplicaWant] = {}
    for t in inv.tenants:
        want = backup.ReplicaWant(
            php_files=t.site.type == "php" and placement.get(t.name) == (name,),
            database=bool(getattr(t.site, "database", False)) and "db" in node.roles,
            # The unit's upload area (work not yet published) lives on its first replica only.
            upload=backed_up.get(t.name) == name and t.name not in result.stranded)
        if want.php_files or want.database or want.upload:
            wants[t.name] = want
    # Three independent pieces of work, side by side: the backup node's repository feeds
    # the restores, the control machine's master index the search, and the other nodes the
    # messages; one after another they were about half of a replacement (stop 59: 28, 13
    # and 1 s of 102).
    with ThreadPoolExecutor(max_workers=3) as pool:
        timed = {"restore": pool.submit(_timed, _restore_replicas, county, name, wants, say),
                 "search": pool.submit(_timed, _search, county, say),
                 "messages": pool.submit(_timed, _messages, county, name, say, True)}
        done = {k: f.result() for k, f in timed.items()}
    clock.mark("restore, search and messages")
    out["restored"] += done["restore"][0]
    out["search"], out["messages"] = done["search"][0], done["messages"][0]
    out["side_by_side"] = {k: round(v[1], 3) for k, v in done.items()}
    out["result"] = "replaced" if result.ok and not any("error" in r for r in out["restored"]) \
        and "error" not in out["messages"] else "partial"
    return out


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    return fn(*args), time.monotonic() - t0


def _restore_replicas(county: County, name: str, wants: dict[str, backup.ReplicaWant],
                      say: Say) -> list[dict[str, Any]]:
    if not wants:
        return []
    say(f"{name}: {len(wants)} unit(s) have work only the backup holds (upload areas, "
        "PHP files/, databases); restoring it")
    try:
        return [{"from": "backup", **r}
                for r in backup.restore_replicas(county, name, wants, say=say)]
    except GovhostError as exc:
        return [{"tenant": t, "what": "php files/database/upload area", "from": "backup",
                 "error": str(exc)} for t in sorted(wants)]


def _messages(county: County, name: str, say: Say, copies: bool) -> dict[str, Any]:
    """Citizens' messages on a new or replaced node: the units' answers (its pages show
    them), and for a replaced node a copy of every message the others now hold only once
    (its disk held the second copy of some)."""
    try:
        sent = message_answers.sync(county, only=name)
        out: dict[str, Any] = {"answers_of": len(sent)}
        failed = sorted(u for u, nodes in sent.items() if nodes.get(name) != "ok")
        if failed:
            out["error"] = f"answers of {', '.join(failed)} not taken"
        if copies:
            out["copies"] = message_collect.restore_copies(county, name)["copied"]
            say(f"messages: {out['copies']} copy(ies) kept on {name} again")
    except GovhostError as exc:
        say(f"messages: not restored on {name}: {exc}")
        return {"error": str(exc)}
    return out


def _rebuild_repository(county: County, inv, say: Say) -> dict[str, Any]:
    if inv.cluster.backup.offsite is None:
        say("no off-site repository: the backup history on the lost disk is gone; the next "
            "nightly run starts a new one")
        return {"rebuilt": False, "why": "no off-site repository (backup.offsite)"}
    try:
        r = backup.rebuild(county)
        say(f"backup repository: {r['copied']} snapshot(s) back from off-site in "
            f"{r['seconds']:.0f} s")
    except GovhostError as exc:
        say(f"backup repository NOT rebuilt: {exc}")
        return {"rebuilt": False, "error": str(exc)}
    out: dict[str, Any] = {"rebuilt": True, **r}
    if control.load_key(county.state_dir) is not None:
        c = control.backup(county, say=say)
        out["control_backup"] = c["ok"]
    return out


def _search(county: County, say: Say) -> dict[str, Any]:
    """A new or replaced node answers the county search too: it is sent every unit whole."""
    try:
        res = search_index.sync(county, None, say=say)
    except GovhostError as exc:
        say(f"search index not sent: {exc}")
        return {"error": str(exc)}
    return {n: {"sent_whole": len(r.get("sent_whole", []))} for n, r in res["nodes"].items()}


def _placements(county: County) -> dict[str, tuple[str, ...]]:
    st = county.open_state()
    try:
        return st.placements()
    finally:
        st.close()


def add(county: County, name: str, say: Say = lambda _: None) -> dict[str, Any]:
    """Bootstrap the node listed in hosts.yaml and give it its share of the replicas: the
    units whose rendezvous ranking now puts it among their replicas move one replica there
    (content first), the rest stay where they are."""
    inv = county.inv
    _node(inv, name)
    result = service.apply(county, progress=_progress(say), share_for_node=name)
    placement = _placements(county)
    return {"node": name, "apply": result.to_json(), "search": _search(county, say),
            "messages": _messages(county, name, say, copies=False),
            "replicas": sorted(t for t, ns in placement.items() if name in ns),
            "result": "added" if result.ok else "partial"}


def remove(county: County, name: str, say: Say = lambda _: None) -> dict[str, Any]:
    """Drain the node and move its replicas (content first) with an apply. When the node is
    no longer in hosts.yaml, forget it in the state store."""
    inv = county.inv
    st = county.open_state()
    try:
        listed = any(n.name == name for n in inv.hosts.nodes)
        if not listed:
            if any(name in ns for ns in st.placements().values()):
                raise NodeError(f"{name} still holds replicas; put it back in hosts.yaml and "
                                f"run `govhost node remove {name}` to drain it first")
            st.forget_node(name)
            st.set_drained(name, False)
            return {"node": name, "result": "forgotten"}
        compute_placement(inv, st.drained() | {name}, st.placements())   # refuses if too full
        st.set_drained(name, True)
    finally:
        st.close()
    say(f"{name}: drained; moving its replicas")
    result = service.apply(county, progress=_progress(say))
    left = sorted(t for t, ns in _placements(county).items() if name in ns)
    handed = handover.wait_handed_over(county, name, say) if result.ok else {}
    return {"node": name, "apply": result.to_json(), "replicas_left": left, "floating": handed,
            "result": "drained" if result.ok and not left else "partial",
            "next": f"delete {name} from hosts.yaml, then `govhost node remove {name}` again "
                    "to forget it" if not left else "apply again once the other nodes are up"}
