"""The agent's security metrics: WAF audit entries counted and split per unit, apt's
simulated upgrades counted by archive."""
from __future__ import annotations

import json

from govhost_node.agent import WafLog, count_upgrades


def _entry(host: str, code: int, rules: list[str]) -> bytes:
    return json.dumps({"transaction": {
        "client_ip": "127.0.9.9", "request": {"method": "GET", "uri": "/?id=1",
                                              "headers": {"Host": host}},
        "response": {"http_code": code},
        "messages": [{"message": "x", "details": {"ruleId": r}} for r in rules]}}).encode()


def test_waf_entries_are_counted_for_their_unit_and_copied_to_its_log(tmp_path):
    logs = tmp_path / "tenants"
    (logs / "renshe").mkdir(parents=True)
    (logs / "jiaoyu").mkdir()
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"renshe.qingshui.gov.cn": "renshe",
                                 "jiaoyu.qingshui.gov.cn": "jiaoyu",
                                 "jyj.qingshui.gov.cn": "jiaoyu"}))
    audit = tmp_path / "waf-audit.log"
    lines = [_entry("renshe.qingshui.gov.cn", 403, ["942100", "949110"]),
             _entry("RENSHE.qingshui.gov.cn:443", 403, ["930120"]),
             _entry("jyj.qingshui.gov.cn", 200, ["942100"]),
             _entry("other.example", 403, ["1"]),          # no unit of ours
             _entry("jiaoyu.qingshui.gov.cn", 403, []),     # no rule matched: not the WAF's
             b"not json"]
    audit.write_bytes(b"\n".join(lines) + b"\n" + _entry("jiaoyu.qingshui.gov.cn", 403, ["1"]))
    w = WafLog(str(audit), str(hosts), str(logs))
    w.refresh()
    assert w.counts == {("renshe", "blocked"): 2, ("jiaoyu", "detected"): 1}
    assert len((logs / "renshe" / "waf-audit.log").read_bytes().splitlines()) == 2
    # the half-written last line is read once it is complete, and only once
    with audit.open("ab") as f:
        f.write(b"\n")
    w.refresh()
    w.refresh()
    assert w.counts[("jiaoyu", "blocked")] == 1
    text = "\n".join(w.lines())
    assert 'govhost_waf_requests_total{tenant="renshe",action="blocked"} 2' in text


def test_upgrades_are_counted_by_archive():
    simulated = """NOTE: This is only a simulation!
Inst libc6 [2.36-9+deb12u3] (2.36-9+deb12u4 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024a-0+deb12u1] (2025a-0+deb12u1 Debian:12.9/stable [all])
Inst govhost-dummy [1.0] (2.0 govhost-lab:lab-security [all])
Conf libc6 (2.36-9+deb12u4 Debian-Security:12/stable-security [amd64])
"""
    assert count_upgrades(simulated) == (3, 2)
    assert count_upgrades("") == (0, 0)
