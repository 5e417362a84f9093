"""The cluster's health in one picture, for `govhost status` (the terminal twin of the
dashboards): nodes, tenants, what each node's agent counted, and a list of what is wrong.

Problems are computed here, not in the CLI, so that `--json` carries the same verdicts the
table highlights.
"""
from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from controlplane.core import remote
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.core.paths import AGENT_PORT
from controlplane.sites import apply as apply_mod
from controlplane.sites import probes, replicas, vrrp, waf
from controlplane.tls import metrics as tls_metrics


def agent_metrics(address: str, access: Any = None, timeout: float = 3.0,
                  only: str | None = None) -> dict[str, dict[str, float]] | None:
    """Per tenant from a node's agent: requests (all classes), 5xx, bytes, disk, tamper
    incidents and files not put back (`_config`: the node's config release); under `_node`,
    whether the tamper watcher is alive and the security updates pending. None if the agent
    does not answer. `access`: the county's metrics credentials (tls.metrics), as the agents
    require them. `only`: one unit's page needs that unit's figures (and the node's); the
    other units' lines are left out before they are parsed, which was most of the page's
    time at 5,000 units (the text parser reads about 20,000 samples a second)."""
    try:
        text = tls_metrics.read(access, address, AGENT_PORT, timeout)
    except OSError:
        return None
    if only is not None:
        text = only_units(text, (only, "_config"))
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            t = s.labels.get("tenant")
            if t is None:
                if s.name == "govhost_tamper_watcher_up":
                    out.setdefault("_node", {})["tamper_watcher_up"] = s.value
                elif s.name == "govhost_node_updates_pending" and \
                        s.labels.get("kind") == "security":
                    out.setdefault("_node", {})["updates_pending_security"] = s.value
                continue
            d = out.setdefault(t, {"requests": 0.0, "errors_5xx": 0.0, "bytes": 0.0,
                                   "disk_bytes": 0.0, "tamper_incidents": 0.0,
                                   "tamper_unrepaired": 0.0})
            if s.name == "govhost_tenant_requests_total":
                d["requests"] += s.value
                if s.labels.get("code") == "5xx":
                    d["errors_5xx"] += s.value
            elif s.name == "govhost_tenant_response_bytes_total":
                d["bytes"] += s.value
            elif s.name == "govhost_tenant_disk_bytes":
                d["disk_bytes"] = s.value
            elif s.name == "govhost_tamper_incidents_total":
                d["tamper_incidents"] = s.value
            elif s.name == "govhost_tamper_unrepaired_files":
                d["tamper_unrepaired"] = s.value
    return out


def only_units(text: str, units: tuple[str, ...]) -> str:
    """The exposition `text` without the samples of units not in `units`. A unit's sample
    always holds `tenant="NAME"` as the agent writes it (unit names need no escaping), so no
    line of theirs is dropped; a line kept that is another unit's is harmless, as the
    samples are sorted by their own labels after parsing."""
    marks = tuple(f'tenant="{u}"' for u in units)
    return "".join(line for line in text.splitlines(keepends=True)
                   if 'tenant="' not in line or any(m in line for m in marks))


def gather(county: County, probe: bool = True, only: str | None = None) -> dict[str, Any]:
    """The whole county, or (`only`) one unit: the console's unit page and `status UNIT`.
    One unit's view does not render the county's configuration (at 5,000 units that is
    seconds per page view): its nodes are judged against what the last apply put on them,
    not against what the inventory would render now (`govhost status` and `plan` do that)."""
    st = county.open_state()
    try:
        if only is None:
            inv, plan = apply_mod.prepare(county, st)
            placement, desired = plan.placement, {n: r.id for n, r in plan.releases.items()}
        else:
            inv, placement = apply_mod.placement(county, st)
            desired = None
        applied, drained, runs = st.applied_ids(), st.drained(), st.runs(5)
        live_content = st.live_releases(only)
        in_force = st.placements()       # drift is judged where replicas are, not will be
    finally:
        st.close()
    tenants = inv.tenants
    if only is not None:
        tenants = [t for t in inv.tenants if t.name == only]
        if not tenants:
            raise GovhostError(f"no unit named {only!r}; `govhost unit list` shows them")
    live = remote.node_status(inv.hosts, list(inv.hosts.nodes), county.known_hosts,
                              content=True, only=() if only is None else (only,))
    reachable = [n for n in inv.hosts.nodes if live[n.name].reachable]
    with ThreadPoolExecutor(max(1, len(reachable))) as pool:
        agents = dict(zip([n.name for n in reachable], pool.map(
            lambda n: agent_metrics(n.address, inv.metrics, only=only), reachable)))
    problems: list[dict[str, str]] = []

    def problem(severity: str, where: str, what: str) -> None:
        problems.append({"severity": severity, "where": where, "what": what})

    nodes = []
    for n in inv.hosts.nodes:
        s = live[n.name]
        want = desired[n.name] if desired is not None else \
            applied.get(n.name)
        row = {"node": n.name, "address": n.address, "roles": list(n.roles),
               "reachable": s.reachable, "nginx_running": s.nginx_running,
               "agent_running": s.agent_running and agents.get(n.name) is not None,
               "release_live": s.release, "release_intact": s.intact,
               "release_applied": applied.get(n.name),
               "release_desired": want, "in_sync": s.release == want,
               "drained": n.name in drained, "error": s.error, "boot_time": s.boot_time,
               "replicas": sum(n.name in v for v in placement.values())}
        nodes.append(row)
        if not s.reachable:
            problem("critical", n.name, f"unreachable over SSH: {s.error}")
            continue
        if not s.nginx_running:
            problem("critical", n.name, "nginx is not running; `govhost apply` starts it")
        row["php_running"] = s.php_running
        if s.php_running is False:
            problem("critical", n.name, "PHP-FPM is not running, so its PHP sites fail; "
                    "`govhost apply` starts it")
        if not row["agent_running"]:
            problem("warning", n.name, "govhost-agent does not answer on port "
                    f"{AGENT_PORT}; `govhost apply` starts it")
        a = agents.get(n.name) or {}
        row["tamper_watcher"] = bool(a.get("_node", {}).get("tamper_watcher_up"))
        row["config_tampered"] = int(a.get("_config", {}).get("tamper_incidents", 0))
        if row["agent_running"] and not row["tamper_watcher"]:
            problem("critical", n.name, "the tamper watcher is not running: live files are not "
                    "protected; `govhost apply` starts it")
        if a.get("_config", {}).get("tamper_unrepaired"):
            problem("critical", n.name, "config files changed on the node could not be put "
                    "back; `govhost tamper list` says why, `govhost apply` ships the release")
        if s.floating is not None:    # a web node of a county with floating addresses
            row["vrrp"] = ("released by hand" if s.vrrp_by_hand else "released"
                           if s.vrrp_released else "running" if s.vrrp_running else "stopped")
            if row["vrrp"] == "stopped":
                problem("warning", n.name, "keepalived is not running: the node's floating "
                        "address stays with its peers; `govhost apply` starts it")
            elif s.vrrp_by_hand and n.name not in drained:
                problem("warning", n.name, "keeps out of VRRP by hand (`govhost-node vrrp "
                        "release`, an upgrade cut short?): its floating address stays with "
                        f"its peers; `govhost node upgrade {n.name}` again, or on the node "
                        "`govhost-node vrrp resume`")
        if not s.intact:
            problem("warning", n.name, f"files of the live release {s.release} were changed on "
                    "the node; `govhost apply` ships it again")
        if not row["in_sync"]:
            source = "the inventory renders" if desired is not None else "the last apply put"
            problem("warning", n.name, f"serves release {s.release or 'none'}, {source} "
                    f"{want or 'none'}: run `govhost apply`")

    # Replicas whose live content is not the unit's live release (missing, older, changed).
    held = replicas.holdings_of(live)
    shown = {t.name for t in tenants}
    drifted = [d for d in replicas.drift(in_force, live_content, held)
               if d.tenant in shown]
    drift_of: dict[str, list] = {}      # by unit, once: a node lost is thousands of them
    for d in drifted:
        drift_of.setdefault(d.tenant, []).append(d)
        h = held[d.node].get(d.tenant, replicas.Holding())
        detail = {"missing": f"holds no content (the unit's live release is {d.want})",
                  "older": f"serves older release {d.have}, the live one is {d.want}",
                  "other": f"serves release {d.have}, the live one is {d.want}",
                  "modified": "live release {} was changed on the node ({})".format(
                      d.want, ", ".join(
                          [f"changed: {', '.join(h.changed[:3])}"] * bool(h.changed)
                          + [f"missing: {', '.join(h.missing[:3])}"] * bool(h.missing)
                          + [f"added: {', '.join(h.added[:3])}"] * bool(h.added)))}[d.why]
        problem("critical" if d.why in ("missing", "older", "other") else "warning",
                f"{d.tenant}@{d.node}", f"content drift: {detail}; `govhost apply` copies "
                "the live release from a replica that has it")

    results: dict[tuple[str, str], probes.ProbeResult] = {}
    if probe:
        targets = [(inv.site_host(t), n.name, n.address) for t in tenants for n in reachable]
        for r in probes.probe_many(targets, https=inv.https_hosts()):
            results[(r.host, r.node)] = r
    rows = []
    for t in tenants:
        host = inv.site_host(t)
        answers = {n.name: results[(host, n.name)] for n in inv.hosts.nodes
                   if (host, n.name) in results}
        counted = [a[t.name] for a in agents.values() if a and t.name in a]
        row = {"tenant": t.name, "host": host, "kind": t.kind, "title": t.title,
               "site": t.site.type, "aliases": list(t.aliases),
               "waf": inv.waf_modes.get(t.name),
               "replicas": list(placement[t.name]),
               "answers": {n: r.status for n, r in answers.items()},
               "latency_ms": {n: round(r.seconds * 1000, 1) for n, r in answers.items()},
               "requests": int(sum(c["requests"] for c in counted)),
               "errors_5xx": int(sum(c["errors_5xx"] for c in counted)),
               "bytes_sent": int(sum(c["bytes"] for c in counted)),
               "disk_bytes": int(max((c["disk_bytes"] for c in counted), default=0)),
               "tamper_incidents": int(sum(c.get("tamper_incidents", 0) for c in counted))}
        up = [n for n, r in answers.items() if r.up]
        row["up_everywhere"] = probe and len(up) == len(inv.hosts.nodes)
        row["content_live"] = live_content.get(t.name)
        row["content_drift"] = [{"node": d.node, "have": d.have, "why": d.why}
                                for d in drift_of.get(t.name, ())]
        rows.append(row)
        unrepaired = [n for n, a in agents.items()
                      if a and a.get(t.name, {}).get("tamper_unrepaired")]
        if unrepaired:
            problem("critical", t.name, f"live files changed on {', '.join(sorted(unrepaired))} "
                    "could not be put back: `govhost tamper list` says why; publish again")
        if probe and answers and not up:
            problem("critical", t.name, f"{host} answers on no node")
        elif probe and answers and len(up) < len(answers):
            down = ", ".join(f"{n} ({answers[n].status or answers[n].error or 'no answer'})"
                             for n in sorted(answers) if n not in up)
            problem("warning", t.name, f"{host} fails through {down}")

    today = datetime.date.today()
    for nb in waf.not_blocking(tenants, inv.waf_modes):
        if nb.why != "before-launch":      # waiting for launch is the normal first step
            problem("warning", nb.unit, nb.text(today))

    floating, issues = vrrp.holders(
        inv.hosts, {n: s.floating for n, s in live.items() if s.reachable},
        frozenset(n for n, s in live.items() if s.vrrp_released))
    for severity, where, what in issues:
        problem(severity, where, what)

    last = next((r for r in runs if r["kind"] == "apply" and r["finished_at"]), None)
    if last and last["result"] not in ("changed", "unchanged"):
        problem("warning", "apply", f"the last apply (run {last['id']}) ended {last['result']}")
    lock = apply_mod.lock_holder(county)
    return {"nodes": nodes, "tenants": rows, "problems": problems, "lock": lock,
            "last_runs": runs[:3], "floating": floating}
