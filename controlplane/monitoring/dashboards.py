"""Grafana dashboards, generated so that every panel's query is also testable.

`PANELS` is the single list of (dashboard, title, kind, PromQL); the JSON files in
monitoring/dashboards/ are rendered from it and a test runs every query against a real
Prometheus scraping the lab. Panels for certificates and backups are added by the issues that
export those metrics, so no panel ever shows "no data" by design. Content freshness is a
panel only for a tenant that has published (see `govhost status TENANT`); its alert rule
covers the rest.
"""
from __future__ import annotations

import json
from typing import Any

OVERVIEW = "govhost-overview"
TENANT = "govhost-tenant"

# (dashboard uid, title, panel type, expression, unit)
PANELS: list[tuple[str, str, str, str, str]] = [
    (OVERVIEW, "Nodes up", "stat", "sum(govhost_node_up)", "short"),
    (OVERVIEW, "Sites up on every node", "stat",
     "count(min by (tenant) (govhost_tenant_up) == 1) or vector(0)", "short"),
    (OVERVIEW, "Sites failing on some node", "stat",
     "count(min by (tenant) (govhost_tenant_up) == 0) or vector(0)", "short"),
    (OVERVIEW, "Nodes drifting from the inventory", "stat", "sum(govhost_node_drift)", "short"),
    (OVERVIEW, "Last apply succeeded", "stat", "govhost_last_apply_success", "bool_yes_no"),
    (OVERVIEW, "Since last apply", "stat", "time() - govhost_last_apply_timestamp_seconds", "s"),
    (OVERVIEW, "Requests by status class", "timeseries",
     "sum by (code) (rate(govhost_tenant_requests_total[5m]))", "reqps"),
    (OVERVIEW, "Share of 5xx responses", "timeseries",
     'sum(rate(govhost_tenant_requests_total{code="5xx"}[5m]) or vector(0)) / '
     "clamp_min(sum(rate(govhost_tenant_requests_total[5m])), 1e-9)", "percentunit"),
    (OVERVIEW, "Busiest sites", "timeseries",
     "topk(10, sum by (tenant) (rate(govhost_tenant_requests_total[5m])))", "reqps"),
    (OVERVIEW, "Traffic out", "timeseries",
     "sum by (node) (rate(govhost_tenant_response_bytes_total[5m]))", "Bps"),
    (OVERVIEW, "Slowest homepage probe per node", "timeseries",
     "max by (node) (govhost_tenant_probe_duration_seconds)", "s"),
    (OVERVIEW, "Node load", "timeseries", "govhost_node_load1", "short"),
    (OVERVIEW, "Node memory used", "timeseries", "govhost_node_memory_used_ratio", "percentunit"),
    (OVERVIEW, "Node disk used", "timeseries",
     "max by (node) (govhost_node_filesystem_used_ratio)", "percentunit"),
    (OVERVIEW, "Sites using most CPU", "timeseries",
     "topk(10, sum by (tenant) (rate(govhost_tenant_cpu_seconds_total[5m])))", "percentunit"),
    (OVERVIEW, "Sites nearest their quota", "timeseries",
     "topk(10, max by (tenant) (govhost_tenant_disk_bytes) / on (tenant) "
     "max by (tenant) (govhost_tenant_quota_bytes))", "percentunit"),
    (OVERVIEW, "Oldest last backups", "timeseries",
     "topk(10, time() - max by (tenant, kind) (govhost_tenant_last_backup_timestamp_seconds))",
     "s"),
    (OVERVIEW, "Probe round: wall and CPU seconds", "timeseries",
     "govhost_probe_round_duration_seconds or govhost_probe_round_cpu_seconds", "s"),
    (TENANT, "Up through each node", "stat", 'govhost_tenant_up{tenant="$tenant"}', "short"),
    (TENANT, "Homepage probe time per node", "timeseries",
     'govhost_tenant_probe_duration_seconds{tenant="$tenant"}', "s"),
    (TENANT, "Requests by status class", "timeseries",
     'sum by (code) (rate(govhost_tenant_requests_total{tenant="$tenant"}[5m]))', "reqps"),
    (TENANT, "Traffic out", "timeseries",
     'sum(rate(govhost_tenant_response_bytes_total{tenant="$tenant"}[5m]))', "Bps"),
    (TENANT, "Disk used (largest replica)", "stat",
     'max(govhost_tenant_disk_bytes{tenant="$tenant"})', "bytes"),
    (TENANT, "Quota used (largest replica)", "stat",
     'max(govhost_tenant_disk_bytes{tenant="$tenant"}) / '
     'max(govhost_tenant_quota_bytes{tenant="$tenant"})', "percentunit"),
    (TENANT, "CPU used per node", "timeseries",
     'rate(govhost_tenant_cpu_seconds_total{tenant="$tenant"}[5m])', "percentunit"),
    (TENANT, "Memory per node", "timeseries",
     'govhost_tenant_memory_bytes{tenant="$tenant"}', "bytes"),
    (TENANT, "Since last successful backup", "stat",
     'time() - max by (kind) (govhost_tenant_last_backup_timestamp_seconds{tenant="$tenant"})',
     "s"),
    (TENANT, "Replicas", "stat", 'govhost_tenant_replicas{tenant="$tenant"}', "short"),
]

TITLES = {OVERVIEW: "govhost: cluster overview", TENANT: "govhost: one unit's site"}


def _panel(i: int, title: str, kind: str, expr: str, unit: str) -> dict[str, Any]:
    width = 6 if kind == "stat" else 12
    return {
        "id": i + 1, "type": kind, "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 4 if kind == "stat" else 8, "w": width, "x": 0, "y": i * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
    }


def dashboard(uid: str) -> dict[str, Any]:
    panels = [p for p in PANELS if p[0] == uid]
    variables: list[dict[str, Any]] = [{
        "name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
    }]
    if uid == TENANT:
        variables.append({
            "name": "tenant", "type": "query", "label": "Unit",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": "label_values(govhost_tenant_info, tenant)", "refId": "T"},
            "refresh": 2, "sort": 1,
        })
    return {
        "uid": uid, "title": TITLES[uid], "schemaVersion": 39, "version": 1,
        "tags": ["govhost"], "timezone": "browser", "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": [_panel(i, *p[1:]) for i, p in enumerate(panels)],
    }


def render_all() -> dict[str, str]:
    """File name -> JSON text for monitoring/dashboards/."""
    return {f"{uid}.json": json.dumps(dashboard(uid), indent=2, ensure_ascii=False) + "\n"
            for uid in (OVERVIEW, TENANT)}


def queries(tenant: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query with $tenant filled in) for every panel."""
    return [(uid, title, expr.replace("$tenant", tenant)) for uid, title, _, expr, _ in PANELS]
