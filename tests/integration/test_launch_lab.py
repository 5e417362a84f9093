"""The launch gate on the real lab: a new unit with `launch: pending` is served only to the
county's addresses (the control machine 10.77.8.1 and 10.77.8.0/28 here) while the public
(`govhost lab outside`, 10.77.9.2) gets 403;
`govhost launch` refuses the placeholder with its WAF off, then a site with a database dump
in it, then passes and opens the site to everyone, behind a WAF that blocks. Every attempt is in the audit log."""
import json
import subprocess
import time

import pytest

from controlplane.core.county import County
from controlplane.lab import network
from tests.helpers import upload

from .conftest import govhost
from .test_apply_lab import NODES, apply_json

HOST = "xinjian.qingshui.gov.cn"
FOOTER = ("<footer>主办单位：青水县新建局 联系电话：0571-6512-3388 网站标识码：3301000088 "
          "浙ICP备12345678号-8 浙公网安备 33010602000088号</footer>")
PUBLIC, COUNTY = "outside", network.HOST4


def _status(source: str, address: str, host: str = HOST, path: str = "/") -> int:
    argv = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            "--resolve", f"{host}:443:{address}", f"https://{host}{path}"]
    argv = network.outside_argv(argv) if source == PUBLIC else argv + ["--interface", source]
    r = subprocess.run(argv, capture_output=True, text=True)
    return int(r.stdout or 0)


def _launch(inv, *args):
    proc = govhost(inv, "launch", "xinjian", "--json", *args, timeout=900)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture
def pending(county):
    (county / "tenants" / "xinjian.yaml").write_text(
        "name: xinjian\ntitle: 青水县新建局\nkind: department\n"
        "contact: {name: 王芳, email: it@xinjian.qingshui.gov.cn, phone: '0571-6512-3388'}\n"
        "identity: {site_code: '3301000088', icp: 浙ICP备12345678号-8, "
        "psb: 浙公网安备 33010602000088号}\n"
        "tls: {issuer: internal}\n"
        "launch: pending\nwaf: off\n")
    apply_json(county)
    govhost(county, "cert", "issue", "xinjian", check=True, timeout=900)
    apply_json(county)
    yield county
    (county / "tenants" / "xinjian.yaml").unlink()
    apply_json(county)


def test_a_pending_unit_is_served_only_to_the_county_until_launch_passes(pending):
    inv = pending
    for _, address in NODES.items():
        assert _status(PUBLIC, address) == 403
        assert _status(COUNTY, address) == 200
    portal = subprocess.run(["curl", "-s", "--resolve", f"www.qingshui.gov.cn:80:{NODES['n1']}",
                             "http://www.qingshui.gov.cn/"], capture_output=True, text=True)
    assert "青水县教育局" in portal.stdout and "青水县新建局" not in portal.stdout

    # 1. The placeholder, with `waf: off`: refused, with what to do; nothing opened.
    rc, res = _launch(inv)
    checks = {c["check"]: c for c in res["checks"]}
    assert rc == 1 and not res["passed"] and not res["launched"]
    assert checks["https"]["ok"] and checks["headers"]["ok"], checks
    assert not checks["content"]["ok"] and "publish" in checks["content"]["fix"]
    assert not checks["footer"]["ok"] and "site code" in checks["footer"]["detail"]
    assert not checks["waf"]["ok"] and "waf replay" in checks["waf"]["fix"]
    assert _status(PUBLIC, NODES["n1"]) == 403
    # The WAF back to the default (a static site blocks from the start).
    manifest = inv / "tenants" / "xinjian.yaml"
    manifest.write_text(manifest.read_text().replace("waf: off\n", ""))
    apply_json(inv)

    # 2. A real site with a database dump left in it: refused on that alone.
    placement = json.loads(govhost(inv, "plan", "--json", check=True).stdout)["placement"]
    first = NODES[placement["xinjian"][0]]
    page = (f"<html lang='zh-CN'><head><title>青水县新建局</title></head><body>"
            f"<h1>青水县新建局</h1><p>{time.strftime('%Y-%m-%d')} 新局成立</p>{FOOTER}"
            "</body></html>").encode()
    upload(first, "xinjian", {"index.html": page, "backup.sql": b"CREATE TABLE users (...);"},
           replace=True)
    assert govhost(inv, "publish", "xinjian").returncode == 0
    rc, res = _launch(inv)
    checks = {c["check"]: c for c in res["checks"]}
    assert rc == 1 and [c for c, v in checks.items() if not v["ok"]] == ["exposed"], checks
    # The WAF already refuses `.sql` (a static unit blocks from the start), and the file
    # is still refused among the published files: a backup has no place on the web server.
    assert "backup.sql (in the published files)" in checks["exposed"]["detail"]
    assert _status(PUBLIC, NODES["n2"]) == 403

    # 3. Without it: a dry run passes and opens nothing; the launch passes and opens it.
    upload(first, "xinjian", {"index.html": page}, replace=True)
    assert govhost(inv, "publish", "xinjian").returncode == 0
    rc, res = _launch(inv, "--dry-run")
    assert rc == 0 and res["passed"] and not res["launched"]
    assert _status(PUBLIC, NODES["n3"]) == 403
    rc, res = _launch(inv)
    assert rc == 0 and res["passed"] and res["launched"], res
    assert res["apply"]["result"] == "changed"
    for _, address in NODES.items():
        assert _status(PUBLIC, address) == 200
    # Protected from its first public day.
    assert _status(PUBLIC, NODES["n1"], path="/?id=1%27%20OR%20%271%27%3D%271") == 403
    assert "青水县新建局" in subprocess.run(
        ["curl", "-s", "--resolve", f"www.qingshui.gov.cn:80:{NODES['n2']}",
         "http://www.qingshui.gov.cn/"], capture_output=True, text=True).stdout
    rc, res = _launch(inv)
    assert rc == 0 and res["already"]
    assert apply_json(inv)["result"] == "unchanged"

    st = County(inv).open_state()
    try:
        log = [(e["action"], e["detail"].get("failed")) for e in st.audit_log(200)
               if e["target"] == "xinjian" and e["action"].startswith("launch.")]
    finally:
        st.close()
    assert log == [("launch.passed", []), ("launch.refused", ["exposed"]),
                   ("launch.refused", ["footer", "content", "waf"])]
