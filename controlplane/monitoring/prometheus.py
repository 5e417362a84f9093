"""Prometheus configuration for a cluster, rendered from hosts.yaml (pure)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from controlplane.core import paths
from controlplane.core.manifest import Hosts
from controlplane.core.paths import AGENT_PORT, NODE_EXPORTER_PORT
from controlplane.monitoring import dashboards

RULES = paths.REPO / "monitoring" / "rules"


def _target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


CA_FILE = "metrics-ca.pem"              # next to prometheus.yml: Prometheus resolves
PASSWORD_FILE = "metrics-password"      # relative file names against the config's folder


def prometheus_config(hosts: Hosts, exporter: str, interval_seconds: int = 15,
                      rule_files: tuple[str, ...] = ("rules/*.yml",),
                      metrics_user: str | None = None,
                      alertmanager: str | None = None) -> dict[str, Any]:
    """Scrape the control-plane exporter, each node's govhost-agent and node_exporter.

    Every node target carries a `node` label with the name from hosts.yaml, so node series
    from all three jobs join on `node` in rules and dashboards. With `metrics_user`, the
    nodes are scraped over TLS (the county's metrics CA) with basic auth."""
    def per_node(port: int) -> list[dict[str, Any]]:
        return [{"targets": [_target(n.address, port)], "labels": {"node": n.name}}
                for n in hosts.nodes]

    auth: dict[str, Any] = {}
    if metrics_user:
        auth = {"scheme": "https", "tls_config": {"ca_file": CA_FILE},
                "basic_auth": {"username": metrics_user, "password_file": PASSWORD_FILE}}

    alerting = ({"alerting": {"alertmanagers": [{"static_configs": [
        {"targets": [alertmanager]}]}]}} if alertmanager else {})
    return {
        **alerting,
        "global": {"scrape_interval": f"{interval_seconds}s",
                   "evaluation_interval": f"{interval_seconds}s"},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": "govhost", "static_configs": [{"targets": [exporter]}]},
            {"job_name": "govhost-agent", **auth, "static_configs": per_node(AGENT_PORT)},
            {"job_name": "node", **auth, "static_configs": per_node(NODE_EXPORTER_PORT)},
        ],
    }


def render(hosts: Hosts, exporter: str, interval_seconds: int = 15,
           metrics_user: str | None = None, alertmanager: str | None = None) -> str:
    head = ("# Rendered by `govhost monitoring render` from hosts.yaml; rerun it after adding\n"
            "# or removing a node instead of editing this file.\n")
    return head + yaml.safe_dump(prometheus_config(hosts, exporter, interval_seconds,
                                                   metrics_user=metrics_user,
                                                   alertmanager=alertmanager),
                                 sort_keys=False, allow_unicode=True)


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def write(out_dir: Path, hosts: Hosts, exporter: str, interval_seconds: int = 15,
          access: Any = None, alertmanager: str | None = None,
          alertmanager_yml: str | None = None) -> list[Path]:
    """prometheus.yml, the rules it loads (copied unless out_dir is the repo's monitoring/)
    and the dashboards; with `access` (tls.metrics.MetricsAccess), the metrics CA and the
    password file (mode 0640: give the group Prometheus runs as) beside them. Each file is
    replaced atomically."""
    out_dir = Path(out_dir).resolve()
    user = access.user if access is not None else None
    written = [_write(out_dir / "prometheus.yml",
                      render(hosts, exporter, interval_seconds, user,
                             alertmanager if alertmanager_yml else None))]
    if alertmanager_yml:
        written.append(_write(out_dir / "alertmanager.yml", alertmanager_yml))
    if access is not None:
        written.append(_write(out_dir / CA_FILE, access.ca_pem.decode()))
        written.append(_write(out_dir / PASSWORD_FILE, access.password + "\n", 0o640))
    if out_dir / "rules" != RULES:
        for rule in sorted(RULES.glob("*.yml")):
            written.append(_write(out_dir / "rules" / rule.name, rule.read_text("utf-8")))
    for name, text in dashboards.render_all().items():
        written.append(_write(out_dir / "dashboards" / name, text))
    return written
