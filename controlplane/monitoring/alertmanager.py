"""Alertmanager's configuration (pure): who hears which alert.

Dead sites die quietly because nobody at the unit is told. Alerts a unit can act on carry
`audience: unit` in monitoring/rules (homepage or columns going stale, broken links, footer
marks, a week at risk); each goes to that unit's contact address from its manifest, grouped
per unit, at office hours, with what to do. Everything else (nodes, backups, certificates,
tamper, applies) goes to the county team at any time. Only names that passed manifest
validation go into matchers and addresses, and the file is written by a YAML dumper, so no
manifest can add a route or a receiver.
"""
from __future__ import annotations

from typing import Any

import yaml

from controlplane.core.inventory import Inventory
from controlplane.core.manifest import AlertMail

COUNTY = "county"
OFFICE_HOURS = "office-hours"

_SUBJECT = ("[govhost {{ .Status }}] {{ if .CommonLabels.tenant }}{{ .CommonLabels.tenant }} "
            "{{ end }}{{ if .CommonLabels.alertname }}{{ .CommonLabels.alertname }}{{ else }}"
            "{{ .Alerts | len }} alerts{{ end }}")
_TEXT = """{{ range .Alerts.Firing }}* {{ .Annotations.summary }}
{{ if .Annotations.what_to_do }}  怎么办 What to do: {{ .Annotations.what_to_do }}
{{ end }}{{ end }}{{ range .Alerts.Resolved }}* 已恢复 resolved: {{ .Annotations.summary }}
{{ end }}
-- govhost
"""


def unit_receiver(tenant: str) -> str:
    return f"unit-{tenant}"


def _email(to: str) -> dict[str, Any]:
    return {"to": to, "send_resolved": True, "headers": {"Subject": _SUBJECT},
            "text": _TEXT, "html": ""}


def _intervals(am: AlertMail) -> list[dict[str, Any]]:
    oh = am.office_hours
    if oh is None:
        return []
    times = [{"start_time": t.split("-")[0], "end_time": t.split("-")[1]} for t in oh.times]
    return [{"name": OFFICE_HOURS, "time_intervals": [
        {"weekdays": list(oh.weekdays), "times": times, "location": oh.location}]}]


def config(inv: Inventory) -> dict[str, Any] | None:
    """alertmanager.yml as data; None when cluster.yaml has no `alerts:`."""
    am = inv.cluster.alerts
    if am is None:
        return None
    timing = {"group_wait": f"{am.group_wait_seconds}s",
              "group_interval": f"{am.group_interval_minutes}m",
              "repeat_interval": f"{am.repeat_hours}h"}
    office = [OFFICE_HOURS] if am.office_hours is not None else []
    routes = [{"receiver": unit_receiver(t.name),
               "matchers": ['audience="unit"', f'tenant="{t.name}"'],
               "group_by": ["tenant"], **timing,
               **({"active_time_intervals": office} if office else {})}
              for t in inv.tenants]
    receivers = [{"name": COUNTY, "email_configs": [_email(", ".join(am.county))]}]
    receivers += [{"name": unit_receiver(t.name), "email_configs": [_email(t.contact.email)]}
                  for t in inv.tenants]
    cfg: dict[str, Any] = {
        "global": {"smtp_smarthost": am.smarthost, "smtp_from": am.sender,
                   "smtp_require_tls": am.require_tls},
        "route": {"receiver": COUNTY, "group_by": ["alertname", "tenant", "node"], **timing,
                  "routes": routes},
        "inhibit_rules": [
            # A node that is down takes every site on it down: one alert, not one per site.
            {"source_matchers": ['alertname="GovhostNodeDown"'],
             "target_matchers": ['alertname="GovhostSiteDownOnNode"'], "equal": ["node"]}],
        "receivers": receivers,
    }
    if office:
        cfg["time_intervals"] = _intervals(am)
    return cfg


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:     # no &id001 anchors: a file people read
        return True


def render(inv: Inventory) -> str | None:
    cfg = config(inv)
    if cfg is None:
        return None
    head = ("# Rendered by `govhost monitoring render` from cluster.yaml `alerts:` and the\n"
            "# units' manifests (their contact e-mail); rerun it instead of editing this file.\n")
    return head + yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                            width=1000)
