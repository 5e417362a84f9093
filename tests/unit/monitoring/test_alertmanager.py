"""alertmanager.yml from cluster.yaml `alerts:` and the units' manifests (pure), checked by
Debian's amtool where it is installed."""
import shutil
import subprocess

import pytest
import yaml

from controlplane.core import inventory
from controlplane.core.errors import ManifestError
from controlplane.monitoring import alertmanager
from tests.helpers import CLUSTER, tenant, write_inventory

ALERTS = {"smarthost": "mail.qingshui.gov.cn:25", "sender": "govhost@qingshui.gov.cn",
          "county": ["ops@qingshui.gov.cn", "duty@qingshui.gov.cn"]}


def _inv(tmp_path, alerts=ALERTS):
    units = [tenant("jiaoyu"), tenant("chahe", kind="township")]
    return inventory.load(write_inventory(tmp_path / "inv", units,
                                          cluster={**CLUSTER, "alerts": alerts}))


def test_each_unit_routes_to_its_contact_at_office_hours(tmp_path):
    inv = _inv(tmp_path)
    cfg = alertmanager.config(inv)
    routes = {r["receiver"]: r for r in cfg["route"]["routes"]}
    assert set(routes) == {"unit-jiaoyu", "unit-chahe"}
    assert routes["unit-jiaoyu"]["matchers"] == ['audience="unit"', 'tenant="jiaoyu"']
    assert routes["unit-jiaoyu"]["active_time_intervals"] == ["office-hours"]
    receivers = {r["name"]: r["email_configs"][0]["to"] for r in cfg["receivers"]}
    contact = {t.name: t.contact.email for t in inv.tenants}
    assert receivers == {"county": "ops@qingshui.gov.cn, duty@qingshui.gov.cn",
                         "unit-jiaoyu": contact["jiaoyu"], "unit-chahe": contact["chahe"]}
    assert cfg["route"]["receiver"] == "county" and "active_time_intervals" not in cfg["route"]
    hours = cfg["time_intervals"][0]["time_intervals"][0]
    assert hours == {"weekdays": ["monday:friday"], "location": "Asia/Shanghai",
                     "times": [{"start_time": "08:30", "end_time": "12:00"},
                               {"start_time": "14:00", "end_time": "17:30"}]}
    text = alertmanager.render(inv)
    assert "&id" not in text and yaml.safe_load(text) == cfg
    if shutil.which("amtool"):
        (tmp_path / "am.yml").write_text(text)
        r = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_no_alerts_section_no_file_and_any_time_without_office_hours(tmp_path):
    assert alertmanager.render(inventory.load(write_inventory(tmp_path / "a", [tenant("x")]))) \
        is None
    cfg = alertmanager.config(_inv(tmp_path, {**ALERTS, "office_hours": None}))
    assert "time_intervals" not in cfg
    assert all("active_time_intervals" not in r for r in cfg["route"]["routes"])


@pytest.mark.parametrize("field,value,expect", [
    ("office_hours", {"weekdays": ["monday:sunday"]}, "runs forward from Sunday"),
    ("office_hours", {"times": ["17:30-08:30"]}, "end must come after the start"),
    ("office_hours", {"location": "Mars/Olympus"}, "is not a time zone"),
    ("county", ["ops@qingshui.gov.cn\nbcc: x@y.cn"], "not an e-mail address"),
    ("smarthost", "mail.qingshui.gov.cn:25\nglobal: {}", "smarthost"),
])
def test_bad_alert_settings_are_refused_naming_the_field(tmp_path, field, value, expect):
    with pytest.raises(ManifestError, match=expect):
        _inv(tmp_path, {**ALERTS, field: value})
