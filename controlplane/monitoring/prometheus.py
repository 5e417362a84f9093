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


def prometheus_config(hosts: Hosts, exporter: str, interval_seconds: int = 15,
                      rule_files: tuple[str, ...] = ("rules/*.yml",)) -> dict[str, Any]:
    """Scrape the control-plane exporter, each node's govhost-agent and node_exporter.

    Every node target carries a `node` label with the name from hosts.yaml, so node series
    from all three jobs join on `node` in rules and dashboards."""
    def per_node(port: int) -> list[dict[str, Any]]:
        return [{"targets": [_target(n.address, port)], "labels": {"node": n.name}}
                for n in hosts.nodes]

    return {
        "global": {"scrape_interval": f"{interval_seconds}s",
                   "evaluation_interval": f"{interval_seconds}s"},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": "govhost", "static_configs": [{"targets": [exporter]}]},
            {"job_name": "govhost-agent", "static_configs": per_node(AGENT_PORT)},
            {"job_name": "node", "static_configs": per_node(NODE_EXPORTER_PORT)},
        ],
    }


def render(hosts: Hosts, exporter: str, interval_seconds: int = 15) -> str:
    head = ("# Rendered by `govhost monitoring render` from hosts.yaml; rerun it after adding\n"
            "# or removing a node instead of editing this file.\n")
    return head + yaml.safe_dump(prometheus_config(hosts, exporter, interval_seconds),
                                 sort_keys=False, allow_unicode=True)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write(out_dir: Path, hosts: Hosts, exporter: str, interval_seconds: int = 15) -> list[Path]:
    """prometheus.yml, the rules it loads (copied unless out_dir is the repo's monitoring/)
    and the dashboards; each file replaced atomically."""
    out_dir = Path(out_dir).resolve()
    written = [_write(out_dir / "prometheus.yml", render(hosts, exporter, interval_seconds))]
    if out_dir / "rules" != RULES:
        for rule in sorted(RULES.glob("*.yml")):
            written.append(_write(out_dir / "rules" / rule.name, rule.read_text("utf-8")))
    for name, text in dashboards.render_all().items():
        written.append(_write(out_dir / "dashboards" / name, text))
    return written
