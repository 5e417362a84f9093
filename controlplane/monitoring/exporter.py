"""The control plane's Prometheus exporter: probes on an interval, state on every scrape.

Probing every tenant on every node is the expensive part, so it runs in its own thread on a
fixed interval and a scrape only reads its latest results (a scrape never waits on the
network). Everything else a scrape reports is read fresh: the state store (last apply, what
each node runs, drained nodes) and the apply lock. A custom collector builds the metric
families per scrape from that snapshot, so a removed tenant or node simply stops appearing
instead of leaving a stale gauge behind. Labels are bounded: tenant, node, kind — never a URL.

The round's own series (every unit through every node: 70,000 at 5,000 units on 3 nodes) are
formatted once per round, by the prober, and a scrape appends that text to the rest (`scrape`,
`wsgi_app`): formatting them at every scrape took 0.4–0.6 s at 5,000 units, most of it
prometheus_client escaping label names (bench/exporter_scale.py).

What only a node can see (requests, bytes, disk use per tenant; load, memory, disk) comes from
govhost-agent on each node, scraped by Prometheus directly.
"""
from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from controlplane.compliance import rules as compliance
from controlplane.compliance import run as compliance_run
from controlplane.core import inventory as inventory_mod
from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.dns import plan as dns_plan
from controlplane.people import store as people_store
from controlplane.sites import apply, probes, replicas
from controlplane.sites.apply import lock_holder
from controlplane.sites.plan import make_plan
from controlplane.tls import trust


@dataclass
class Round:
    """The results of one probe round."""

    finished: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    tenants: dict[str, dict[str, probes.ProbeResult]] = field(default_factory=dict)
    # The same homepages through each node's IPv6 address (nodes with `address6`); kept
    # apart: the week's reachability is the IPv4 probes', IPv6 is its own indicator.
    ipv6: dict[str, dict[str, probes.ProbeResult]] = field(default_factory=dict)
    # With floating addresses: the homepages through each address DNS names (the citizens'
    # and the inspector's view); the week's reachability counts these, not the nodes'.
    public: dict[str, dict[str, probes.ProbeResult]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    site_types: dict[str, str] = field(default_factory=dict)
    nodes_up: dict[str, bool] = field(default_factory=dict)
    live_release: dict[str, str | None] = field(default_factory=dict)
    desired_release: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    https: frozenset[str] = frozenset()    # site hosts served over HTTPS (probed so)
    quotas: dict[str, int] = field(default_factory=dict)
    # tenant -> its node probes that failed the compliance rule this round ([]: none)
    failed: dict[str, list[dict]] = field(default_factory=dict)
    # (tenant, node) -> why its live content is not the unit's live release; every
    # (tenant, replica) that was checked is listed, "none" when it is right
    content_drift: dict[tuple[str, str], str] = field(default_factory=dict)
    error: str = ""
    # the round's series in Prometheus's text format (round_exposition), made once
    exposition: bytes | None = None


class Prober(threading.Thread):
    """Probes every tenant on every node once per interval (homepage through that node)."""

    # A round's probes start spread over this share of the interval, not all at once.
    SPREAD = 0.5

    def __init__(self, county: County, interval: float, workers: int = 32,
                 record: bool = True):
        super().__init__(daemon=True, name="govhost-prober")
        self.record = record          # keep each round in the state store (compliance)
        self.county = county
        self.interval = interval
        self.workers = workers
        self.latest = Round()
        self.rounds = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inv_key: tuple | None = None
        self._inv: inventory_mod.Inventory | None = None
        # the last content check: (what it depended on, when, its result)
        self._content: tuple[tuple, float, dict[tuple[str, str], str]] | None = None
        self._desired_key: tuple | None = None
        self._desired: tuple[dict[str, str], dict[str, int], frozenset[str]] = (
            {}, {}, frozenset())
        self.trust: dict[str, ssl.SSLContext] = {}     # site host -> what its cert verifies to

    def _inventory(self) -> inventory_mod.Inventory:
        """Reload the inventory only when one of its files changed (every file the loader
        reads: a unit's `.yml` and the wording lists went unseen before stop 67)."""
        key = inventory_mod.stamp(self.county.root)
        if key != self._inv_key or self._inv is None:
            self.county = self.county.reloaded()
            self._inv = self.county.inv
            self._inv_key = key
        return self._inv

    def _desired_releases(self, inv
                          ) -> tuple[dict[str, str], dict[str, int], frozenset[str]]:
        """What apply would put on each node now, certificates included, and which sites
        are served over HTTPS (rendered again only when an input changed)."""
        st = self.county.open_state()
        try:
            placements, drained, applied = st.placements(), st.drained(), st.applied_ids()
            stored = self.county.certs.stamp()
            key = (self._inv_key, tuple(sorted(placements.items())), tuple(sorted(drained)),
                   tuple(sorted(applied.items())), stored, st.certificates_stamp(),
                   tuple(sorted(apply.waf_modes(inv, st.launched()).items())))
            if key != self._desired_key:
                cert_records = st.certificates()
                with_certs = apply.deployable(self.county, st)
                plan = make_plan(with_certs, drained, placements, st.applied())
                self._desired = ({n: r.id for n, r in plan.releases.items()},
                                 {t: len(v) for t, v in plan.placement.items()},
                                 with_certs.https_hosts())
                self.trust = trust.for_inventory(self.county, with_certs, cert_records)
                self._desired_key = key
        finally:
            st.close()
        return self._desired

    # How often the nodes' content is checked when nothing it depends on changed: each
    # check stats every live file of every unit on every node (at 3,333 units of 200 files
    # a node, about 3.7 s of its CPU), and the alert on its result waits 10 minutes.
    CONTENT_EVERY = 120.0

    def _content_drift(self, inv, live_release: Mapping[str, str | None],
                       up: Mapping[str, bool]) -> dict[tuple[str, str], str]:
        """Ask every node what content it holds (one SSH round trip each; files re-hashed
        only where they changed) and compare with each unit's live release: again at once
        when a placement, a unit's live release, a node's release or which nodes answer
        changed, else at most every CONTENT_EVERY seconds (every round before stop 67)."""
        st = self.county.open_state()
        try:
            placements = st.placements()
            live_content = st.live_releases()
        finally:
            st.close()
        key = (tuple(sorted((t, tuple(ns)) for t, ns in placements.items())),
               tuple(sorted(live_content.items())), tuple(sorted(live_release.items())),
               tuple(sorted(up.items())))
        now = time.monotonic()
        last = self._content
        if last is not None and last[0] == key and now - last[1] < self.CONTENT_EVERY:
            return last[2]
        statuses = remote.node_status(inv.hosts, list(inv.hosts.nodes),
                                      self.county.known_hosts, content=True)
        held = replicas.holdings_of(statuses)
        out = {(t, n): "none" for t, ns in placements.items() if t in live_content
               for n in ns if n in held}
        for d in replicas.drift(placements, live_content, held):
            out[(d.tenant, d.node)] = d.why
        # kept only when every node answered: one that did not is asked again next round
        self._content = (key, now, out) if len(held) == len(inv.hosts.nodes) else None
        return out

    def probe_once(self, spread: bool = True) -> Round:
        t0, c0 = time.monotonic(), time.process_time()
        rnd = Round()
        try:
            inv = self._inventory()
            rnd.desired_release, rnd.replicas, rnd.https = self._desired_releases(inv)
        except Exception as exc:  # a broken manifest must not stop monitoring of the rest
            rnd.error = str(exc)
            if self._inv is None:
                self.latest = rnd
                return rnd
            inv = self._inv
        nodes = list(inv.hosts.nodes)
        targets = [(inv.site_host(t), n.name, n.address) for t in inv.tenants for n in nodes]
        v6 = [(inv.site_host(t), n.name, n.address6) for t in inv.tenants for n in nodes
              if n.address6]
        public = ([(inv.site_host(t), a, a) for t in inv.tenants
                   for a in dns_plan.published(inv)[0]] if inv.hosts.vrrp is not None else [])
        by_host = {inv.site_host(t): t for t in inv.tenants}
        limit = inv.cluster.compliance.probe_timeout_seconds
        done = probes.probe_many(targets + v6 + public, workers=self.workers, timeout=limit,
                                 https=rnd.https, verify=self.trust,
                                 spread_seconds=self.SPREAD * self.interval if spread else 0)
        for i, r in enumerate(done):
            into = (rnd.tenants if i < len(targets) else
                    rnd.ipv6 if i < len(targets) + len(v6) else rnd.public)
            into.setdefault(by_host[r.host].name, {})[r.node] = r
        for n in nodes:  # the node's own health, and the release id it serves
            rnd.nodes_up[n.name] = probes.probe(paths.PROBE_HOST, n.name, n.address,
                                                "/health", timeout=2).up
            r = probes.probe(paths.PROBE_HOST, n.name, n.address, "/release", timeout=2,
                             keep_body=True)
            rnd.live_release[n.name] = r.body.strip() if r.up else None
        try:
            rnd.content_drift = self._content_drift(inv, rnd.live_release, rnd.nodes_up)
        except Exception as exc:   # SSH trouble must not stop the HTTP probes' metrics
            rnd.error = f"reading the nodes' content failed: {exc}"
        rnd.kinds = {t.name: t.kind for t in inv.tenants}
        rnd.site_types = {t.name: t.site.type for t in inv.tenants}
        rnd.quotas = {t.name: inv.quota_bytes(t) for t in inv.tenants}
        rnd.finished = time.time()
        # The inspections' rule: a probe fails unless the homepage loaded completely within
        # the limit; through any address a citizen may be given, so one failing counts: each
        # floating address where the county has them (a dead node's address moves and
        # keeps serving), each node's own otherwise.
        # A failure names the node (for a floating address, the address's home node: where it
        # is served unless that node is away) and the address the probe went to.
        home = {n.floating: n.name for n in nodes if n.floating}
        rnd.failed = {t: [{"node": home.get(r.address, r.node), "address": r.address,
                           "scheme": r.scheme, "status": r.status,
                           "seconds": round(r.seconds, 3), "error": r.error[:200]}
                          for r in by_node.values() if not r.up or r.seconds >= limit]
                      for t, by_node in (rnd.public or rnd.tenants).items()}
        if self.record:
            try:
                compliance_run.record_round(self.county, rnd.finished, rnd.failed)
            except Exception as exc:     # monitoring goes on without the record
                rnd.error = f"recording the probe round failed: {exc}"
        rnd.seconds = time.monotonic() - t0
        rnd.cpu_seconds = time.process_time() - c0
        rnd.exposition = round_exposition(rnd)      # here, not in the scrape's time
        self.latest = rnd
        self.rounds += 1
        return rnd

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.probe_once()
            self._wake.wait(max(0.0, self.interval - (time.monotonic() - started)))
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


class _Families(Collector):
    def __init__(self, families: list):
        self.families = families

    def collect(self) -> Iterator:
        return iter(self.families)


def round_exposition(rnd: Round) -> bytes:
    """A probe round's own series (each unit through each node, each node's health and
    drift) in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*GovhostCollector._tenants(rnd),
                                 *GovhostCollector._nodes(rnd)]))
    return generate_latest(registry)


def scrape(collector: GovhostCollector) -> bytes:
    """What a scrape answers: the series read fresh and the latest round's, formatted when
    the round ended; both from the same round (one read of `prober.latest`: a round that
    ends during the scrape shows in the next one)."""
    rnd = collector.prober.latest
    if rnd.exposition is None:          # a round made elsewhere (a test sets one)
        rnd.exposition = round_exposition(rnd)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(collector.families(rnd))))
    return generate_latest(registry) + rnd.exposition


def wsgi_app(collector: GovhostCollector):
    """/metrics as `scrape` makes it, in the text format every Prometheus reads; not
    compressed (Prometheus scrapes the control machine over a local network, and gzip's
    default level cost more than the formatting saved). GET and HEAD only."""
    def app(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: /metrics\n"]
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"),
                                                      ("Allow", "GET, HEAD")])
            return [b"GET /metrics\n"]
        body = scrape(collector)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]
    return app


class GovhostCollector:
    """The series a scrape reads fresh (`scrape` adds the round's own). Not a registry
    collector: registered alone it would leave out every unit's probe series."""

    def __init__(self, county: County, prober: Prober):
        self.county = county
        self.prober = prober

    def families(self, rnd: Round) -> Iterator:
        """The series read fresh at a scrape, beside round `rnd`'s (round_exposition)."""
        st = self.county.open_state()      # one read of the state store per scrape
        try:
            runs = [r for r in st.runs(20) if r["kind"] == "apply" and r["finished_at"]]
            drained, published = st.drained(), st.last_published(rnd.quotas)
            checked = st.compliance()
            week = compliance.week_of(time.time())
            w0, _ = compliance.week_bounds(week)
            counts = st.probe_week_counts(rnd.quotas, w0, time.time() + 1)
            probe_week = {t: counts.get(t, (0, 0)) for t in rnd.quotas}
            certs = st.certificates()
            attacked = people_store.login_pressure(st)
            failed = people_store.failed_logins(st)
            control_last = {k: at for (_, k), at in st.last_backups("_control").items()}
        finally:
            st.close()
        yield from self._control_plane(rnd, runs, drained)
        yield from self._content(rnd, published)
        yield from self._compliance(checked, probe_week)
        yield from self._certificates(certs)
        yield self._control_backups(control_last)
        yield GaugeMetricFamily("govhost_console_names_under_attack", "Console accounts with "
                                "a burst of failed logins in the last 15 minutes (password "
                                "guessing; they are slowed down, never locked out).",
                                value=len(attacked))
        yield GaugeMetricFamily("govhost_console_failed_logins", "Failed console logins "
                                "checked in the last 15 minutes, all accounts.", value=failed)

    def _control_backups(self, last: dict[str, float]) -> GaugeMetricFamily:
        """The control machine's own snapshots (backup/control.py), per repository; 0 for one
        that should have them and never did, so the age alert fires for it too."""
        g = GaugeMetricFamily("govhost_control_backup_last_success_timestamp_seconds",
                              "When a control snapshot (state, secrets, CA, inventory) last "
                              "reached this repository (Unix time; 0: never).",
                              labels=["repository"])
        try:
            inv = self.county.inv
            wanted = {"control"} if inv.backup_node else set()
            if inv.backup_node and inv.cluster.backup.offsite:
                wanted.add("control-offsite")
        except GovhostError:
            wanted = set()
        for kind in sorted(wanted | set(last)):
            g.add_metric([kind], last.get(kind, 0.0))
        return g

    @staticmethod
    def _certificates(certs: dict) -> Iterator:
        """Days to expiry per name (from the store's record of each certificate) and
        renewals failing in a row, for the expiry and renewal alerts."""
        expiry = GaugeMetricFamily("govhost_certificate_not_after_timestamp_seconds",
                                   "When the certificate serving this name expires.",
                                   labels=["certificate", "name", "issuer"])
        failing = GaugeMetricFamily("govhost_certificate_renewal_failures",
                                    "Failed issue/renew attempts in a row (0 after a success).",
                                    labels=["certificate", "issuer"])
        for lid, rec in sorted(certs.items()):
            failing.add_metric([lid, rec["issuer"]], rec["failures"] or 0)
            if rec["not_after"]:
                for name in rec["names"]:
                    expiry.add_metric([lid, name, rec["issuer"]], rec["not_after"])
        yield from (expiry, failing)

    @staticmethod
    def _compliance(checked: dict, probe_week: dict) -> Iterator:
        """The inspection indicators: this week's probe failures (continuous), and the
        verdicts of the last `govhost compliance check`."""
        ratio = GaugeMetricFamily("govhost_compliance_probe_failure_ratio",
                                  "Share of this week's homepage probes that failed (the site "
                                  "fails the week at 5 % by default).", labels=["tenant"])
        probes_n = GaugeMetricFamily("govhost_compliance_probes", "Homepage probes this week.",
                                     labels=["tenant"])
        for t, (n, failed) in sorted(probe_week.items()):
            probes_n.add_metric([t], n)
            if n:
                ratio.add_metric([t], failed / n)
        ok = GaugeMetricFamily("govhost_compliance_indicator_ok", "1 if the unit passed the "
                               "indicator at the last compliance check.",
                               labels=["tenant", "indicator"])
        broken = GaugeMetricFamily("govhost_compliance_broken_links", "Broken links found by "
                                   "the last crawl.", labels=["tenant"])
        stale = GaugeMetricFamily("govhost_compliance_stale_columns", "Columns stale, empty or "
                                  "never updated at the last check.", labels=["tenant"])
        due = GaugeMetricFamily("govhost_compliance_columns_due", "Columns up to date at the "
                                "last check but past 10/14 of their limit.", labels=["tenant"])
        home = GaugeMetricFamily("govhost_compliance_homepage_update_timestamp_seconds",
                                 "When the homepage last changed (from the publish record).",
                                 labels=["tenant"])
        shown = GaugeMetricFamily("govhost_compliance_homepage_shown_date_timestamp_seconds",
                                  "The newest publication date the homepage shows (local "
                                  "midnight), as the inspection reads it.", labels=["tenant"])
        for t, rec in sorted(checked.items()):
            v = rec["verdicts"]
            for name, verdict in sorted(v.items()):
                ok.add_metric([t, name], 1 if verdict["ok"] else 0)
            if "links" in v:
                broken.add_metric([t], len(v["links"]["evidence"]) if not v["links"]["ok"] else 0)
            if "columns_fresh" in v:
                stale.add_metric([t], sum(1 for r in v["columns_fresh"]["evidence"]
                                          if isinstance(r, dict)
                                          and r.get("state") not in (None, "ok")))
                due.add_metric([t], sum(1 for r in v["columns_fresh"]["evidence"]
                                        if isinstance(r, dict) and r.get("state") == "ok"
                                        and (r.get("age_days") or 0) > r["limit_days"] * 10 / 14))
            ev = v.get("homepage_fresh", {}).get("evidence") or []
            if ev and ev[0].get("last_update"):
                home.add_metric([t], ev[0]["last_update"])
            if ev and ev[0].get("shown_date"):
                shown.add_metric([t], datetime.fromisoformat(ev[0]["shown_date"]).timestamp())
        yield from (ratio, probes_n, ok, broken, stale, due, home, shown)

    @staticmethod
    def _content(rnd: Round, published: dict[str, float]) -> Iterator:
        """Quota from the inventory, content freshness from the publish record."""
        quota = GaugeMetricFamily("govhost_tenant_quota_bytes", "The tenant's disk quota.",
                                  labels=["tenant"])
        for tenant, n in sorted(rnd.quotas.items()):
            quota.add_metric([tenant], n)
        last = GaugeMetricFamily("govhost_tenant_last_publish_timestamp_seconds",
                                 "When content that went live was last published (Unix time).",
                                 labels=["tenant"])
        for tenant, when in sorted(published.items()):
            if tenant in rnd.quotas:
                last.add_metric([tenant], when)
        yield from (quota, last)

    @staticmethod
    def _tenants(rnd: Round) -> Iterator:
        up = GaugeMetricFamily("govhost_tenant_up", "1 if the tenant's homepage answered "
                               "2xx/3xx through this node in the last probe round.",
                               labels=["tenant", "node", "kind"])
        dur = GaugeMetricFamily("govhost_tenant_probe_duration_seconds",
                                "Time the last homepage probe took through this node.",
                                labels=["tenant", "node"])
        code = GaugeMetricFamily("govhost_tenant_probe_status_code",
                                 "HTTP status of the last homepage probe (0: no answer).",
                                 labels=["tenant", "node"])
        info = GaugeMetricFamily("govhost_tenant_info", "One series per tenant.",
                                 labels=["tenant", "kind", "site_type"])
        reps = GaugeMetricFamily("govhost_tenant_replicas",
                                 "Nodes that hold the tenant's content.", labels=["tenant"])
        up6 = GaugeMetricFamily("govhost_tenant_ipv6_up", "1 if the tenant's homepage loaded "
                                "through this node's IPv6 address in the last probe round.",
                                labels=["tenant", "node"])
        for tenant, per_node in sorted(rnd.ipv6.items()):
            for node, r in sorted(per_node.items()):
                up6.add_metric([tenant, node], 1 if r.up else 0)
        for tenant, per_node in sorted(rnd.tenants.items()):
            kind = rnd.kinds.get(tenant, "")
            info.add_metric([tenant, kind, rnd.site_types.get(tenant, "")], 1)
            if tenant in rnd.replicas:
                reps.add_metric([tenant], rnd.replicas[tenant])
            for node, r in sorted(per_node.items()):
                up.add_metric([tenant, node, kind], 1 if r.up else 0)
                dur.add_metric([tenant, node], r.seconds)
                code.add_metric([tenant, node], r.status or 0)
        yield from (up, dur, code, info, reps, up6)

    @staticmethod
    def _nodes(rnd: Round) -> Iterator:
        up = GaugeMetricFamily("govhost_node_up", "1 if the node's nginx answered its health "
                               "probe in the last probe round.", labels=["node"])
        drift = GaugeMetricFamily("govhost_node_drift", "1 if the release the node serves "
                                  "differs from what apply would put there now.",
                                  labels=["node"])
        content = GaugeMetricFamily(
            "govhost_tenant_replica_drift", "1 if this replica's live content is not the "
            "unit's live release (why: missing, older, other, modified); 0 if it is.",
            labels=["tenant", "node", "why"])
        for (tenant, node), why in sorted(rnd.content_drift.items()):
            content.add_metric([tenant, node, why], 0 if why == "none" else 1)
        yield content
        for node, ok in sorted(rnd.nodes_up.items()):
            up.add_metric([node], 1 if ok else 0)
            want = rnd.desired_release.get(node)
            if want is not None:
                drift.add_metric([node], 0 if rnd.live_release.get(node) == want else 1)
        yield from (up, drift)

    def _control_plane(self, rnd: Round, runs: list[dict], drained: frozenset[str]) -> Iterator:
        last = runs[0] if runs else None
        when = GaugeMetricFamily("govhost_last_apply_timestamp_seconds",
                                 "When the last apply finished (Unix time).")
        ok = GaugeMetricFamily("govhost_last_apply_success", "1 if the last apply converged "
                               "every node (changed or unchanged), else 0.")
        took = GaugeMetricFamily("govhost_last_apply_duration_seconds",
                                 "How long the last apply took.")
        if last:
            when.add_metric([], last["finished_at"])
            ok.add_metric([], 1 if last["result"] in ("changed", "unchanged") else 0)
            took.add_metric([], last["finished_at"] - last["started_at"])
        yield from (when, ok, took)
        yield GaugeMetricFamily("govhost_apply_lock_held", "1 while an apply holds the lock.",
                                value=1 if lock_holder(self.county) else 0)
        dr = GaugeMetricFamily("govhost_node_drained", "1 if the node is drained.",
                               labels=["node"])
        for node in sorted(rnd.nodes_up):
            dr.add_metric([node], 1 if node in drained else 0)
        yield dr
        yield GaugeMetricFamily("govhost_probe_round_duration_seconds",
                                "Wall time of the last probe round.", value=rnd.seconds)
        yield GaugeMetricFamily("govhost_probe_round_cpu_seconds",
                                "CPU time the exporter used in the last probe round.",
                                value=rnd.cpu_seconds)
        yield GaugeMetricFamily("govhost_probe_last_round_timestamp_seconds",
                                "When the last probe round finished (Unix time).",
                                value=rnd.finished)
        yield GaugeMetricFamily("govhost_probe_interval_seconds", "The probe interval.",
                                value=self.prober.interval)
        yield GaugeMetricFamily("govhost_inventory_error", "1 if the inventory failed to "
                                "load in the last round (monitoring keeps its last good copy).",
                                value=1 if rnd.error else 0)
        c = CounterMetricFamily("govhost_probe_rounds", "Probe rounds completed.")
        c.add_metric([], self.prober.rounds)
        yield c
