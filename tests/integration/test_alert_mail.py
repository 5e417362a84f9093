"""Alert mail for real: `govhost monitoring render` writes alertmanager.yml, Debian's
Alertmanager runs it on loopback, alerts shaped as monitoring/rules fires them are posted to
it, and a local SMTP sink (aiosmtpd) receives the mail. Each unit's alerts reach that unit's
contact address and nobody else's; platform alerts reach the county team; outside office
hours units are not mailed. (The rules' labels are checked by promtool in test_monitoring.)"""
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import Sink, example_inventory, free_port

from .conftest import govhost

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager is not "
                                "installed (scripts/setup.sh installs it)")


def _county(root: Path, smtp_port: int, office_hours) -> Path:
    inv = root / "inventory"
    example_inventory(inv)
    cluster = yaml.safe_load((inv / "cluster.yaml").read_text())
    cluster["alerts"].update(smarthost=f"127.0.0.1:{smtp_port}", group_wait_seconds=1,
                             office_hours=office_hours)
    (inv / "cluster.yaml").write_text(yaml.safe_dump(cluster, allow_unicode=True))
    return inv


def _alertmanager(inv: Path, root: Path):
    out = root / "monitoring"
    govhost(inv, "monitoring", "render", "--out", str(out), check=True)
    cfg = out / "alertmanager.yml"
    check = subprocess.run(["amtool", "check-config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = subprocess.Popen([ALERTMANAGER, f"--config.file={cfg}",
                             f"--storage.path={root / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=open(root / "am.log", "wb"))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return proc, port, cfg
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("alertmanager did not start: " + (root / "am.log").read_text())


ALERTS = [
    {"labels": {"alertname": "GovhostHomepageStale", "tenant": "jiaoyu", "audience": "unit",
                "severity": "warning"},
     "annotations": {"summary": "jiaoyu: homepage not updated for 11d",
                     "what_to_do": "Publish new dated items on the homepage within 14 days."}},
    {"labels": {"alertname": "GovhostBrokenLinks", "tenant": "chahe", "audience": "unit",
                "severity": "warning"},
     "annotations": {"summary": "chahe: 3 broken link(s) on the site",
                     "what_to_do": "Fix or remove the broken links."}},
    {"labels": {"alertname": "GovhostNodeDown", "node": "n2", "severity": "critical"},
     "annotations": {"summary": "node n2 is down"}},
]


def _post(port: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/alerts", method="POST",
                                 data=json.dumps(ALERTS).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _wait(sink: Sink, n: int, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and len(sink.mails) < n:
        time.sleep(0.2)


def test_each_unit_hears_its_own_alerts_and_the_county_the_platforms(tmp_path):
    sink = Sink()
    inv = _county(tmp_path, sink.port, {"weekdays": ["sunday:saturday"], "times": ["00:00-24:00"],
                                         "location": "Asia/Shanghai"})
    proc, port, cfg = _alertmanager(inv, tmp_path)
    try:
        routes = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={cfg}",
                                 "audience=unit", "tenant=wenlv"], capture_output=True, text=True)
        assert routes.stdout.strip() == "unit-wenlv", routes.stdout + routes.stderr
        _post(port)
        _wait(sink, 3)
        jiaoyu = sink.to("webmaster@jiaoyu.qingshui.gov.cn")
        chahe = sink.to("webmaster@chahe.qingshui.gov.cn")
        county = sink.to("ops@qingshui.gov.cn")
        assert len(jiaoyu) == len(chahe) == len(county) == 1, sink.mails
        assert "homepage not updated" in jiaoyu[0] and "within 14 days" in jiaoyu[0]
        assert "chahe" not in jiaoyu[0] and "n2" not in jiaoyu[0]
        assert "broken link" in chahe[0] and "jiaoyu" not in chahe[0]
        assert "node n2 is down" in county[0] and "jiaoyu" not in county[0]
        assert all(len(rcpt) == 1 for rcpt, _ in sink.mails)
    finally:
        proc.terminate()
        proc.wait(10)
        sink.stop()


def test_units_are_not_mailed_outside_office_hours(tmp_path):
    """Office hours on a weekday that is not today: the county is mailed, the units wait."""
    sink = Sink()
    tomorrow = time.strftime("%A", time.gmtime(time.time() + 2 * 86400)).lower()
    inv = _county(tmp_path, sink.port, {"weekdays": [tomorrow], "times": ["00:00-24:00"],
                                         "location": "UTC"})
    proc, port, _ = _alertmanager(inv, tmp_path)
    try:
        _post(port)
        _wait(sink, 1)
        time.sleep(5)          # the units' mails would have come with the county's
        assert [rcpt for rcpt, _ in sink.mails] == [["ops@qingshui.gov.cn"]]
    finally:
        proc.terminate()
        proc.wait(10)
        sink.stop()
