"""`govhost waf replay`: an old server's access log read safely (pure), and replayed through
the unit's real rules: ModSecurity and Debian's CRS in a real nginx on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.core.county import County
from controlplane.security import waf_log, waf_replay
from tests.helpers import can_run_nginx, tenant, write_inventory

LINE = ('10.1.1.{n} - - [01/Dec/2026:10:00:0{n} +0800] "{request}" 200 512 "{referer}" '
        '"{agent}"')
LOG = [
    ("GET /index.html HTTP/1.1", "-", "Mozilla/5.0"),
    ("GET /list.php?page=2&q=%E9%80%9A%E7%9F%A5 HTTP/1.1", "https://a.gov.cn/", "Mozilla/5.0"),
    ("GET /exam.php?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1", "-", "sqlmap/1.7"),
    ("GET /download.php?file=../../../../etc/passwd HTTP/1.1", "-", "curl/8.0"),
    # the unit's own CMS posts an SQL-looking text: a false alarm of one rule
    ("GET /cms/edit.php?content=select%20title%20from%20news%20where%20id%3D1 HTTP/1.1",
     "-", "Mozilla/5.0"),
    ("GET /search.php?q=\\xE9\\x80\\x9A\\xE7\\x9F\\xA5 HTTP/1.1", "-", "Mozilla/5.0"),
]


def _log(rows=LOG) -> str:
    return "".join(LINE.format(n=i, request=r, referer=ref, agent=a) + "\n"
                   for i, (r, ref, a) in enumerate(rows, 1))


# -- reading the log (pure) --------------------------------------------------------------

def test_combined_lines_become_requests_and_the_rest_is_named():
    text = _log() + "garbage\n" + LINE.format(n=9, request="\\x16\\x03\\x01", referer="-",
                                               agent="-") + "\n"
    got = list(waf_log.parse(text.splitlines(True)))
    requests = [g for g in got if isinstance(g, waf_log.Request)]
    assert [r.line for r in requests] == [1, 2, 3, 4, 5, 6]
    assert requests[2].agent == b"sqlmap/1.7" and requests[0].referer == b""
    # what the server logged as \xHH is sent as those bytes
    assert requests[5].target == "/search.php?q=通知".encode()
    assert [(s.line, s.why[:12]) for s in got if isinstance(s, waf_log.Skipped)] == [
        (7, "not in the c"), (8, "no request l")]


@pytest.mark.parametrize("field", ["request", "referer", "agent"])
def test_a_logged_line_break_cannot_become_a_header_of_the_replay(field):
    evil = "x\\x0d\\x0aX-Govhost-Replay:1\\x0d\\x0a"
    row = {"request": "GET /a HTTP/1.1", "referer": "-", "agent": "ua"}
    row[field] = f"GET /a{evil} HTTP/1.1" if field == "request" else evil
    got = list(waf_log.parse([LINE.format(n=1, **row)]))
    assert got == [waf_log.Skipped(1, "a line break or NUL inside the request")]


@given(st.text(max_size=300))
def test_no_line_makes_a_request_with_a_line_break_or_nul(text):
    for got in waf_log.parse([text, "1.2.3.4 - - [x] " + text]):
        if isinstance(got, waf_log.Request):
            for part in (got.target, got.referer, got.agent, got.method.encode()):
                assert not set(part) & {10, 13, 0}
            assert got.target.startswith(b"/")


def test_judge_groups_refusals_per_rule_and_says_which_pass_if_excluded():
    requests = [waf_log.Request(n, "GET", b"/", b"", b"") for n in (1, 2, 3)]
    sqli = waf_log.Match(942100, 5, "SQL Injection Attack Detected via libinjection")
    ua = waf_log.Match(913100, 5, "Found User-Agent associated with security scanner")
    score = waf_log.Match(waf_log.REFUSES, 0, "Inbound Anomaly Score Exceeded")
    v = waf_log.judge(requests, {1: [sqli, ua, score], 2: [sqli, score], 3: [ua]})
    assert sorted(v.refused) == [1, 2]          # line 3 matched but stayed under the threshold
    rows = {r.rule: r for r in v.rules}
    assert [r.rule for r in v.rules] == [942100, 913100]
    assert rows[942100].refused == [1, 2] and rows[942100].alone == [2]
    assert rows[913100].refused == [1] and rows[913100].alone == []


# -- the replay through real nginx and ModSecurity ---------------------------------------

needs_nginx = pytest.mark.skipif(not can_run_nginx(), reason="needs root and nginx")


def _county(tmp_path, **waf) -> County:
    doc = tenant("renshe", site={"type": "php"}, **({"waf": waf} if waf else {}))
    return County(write_inventory(tmp_path / "inventory", [doc]))


@needs_nginx
def test_replay_refuses_the_attacks_of_an_old_log_and_not_its_visitors(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(_log())
    got = waf_replay.replay(_county(tmp_path), "renshe", log)
    assert got["replayed"] == 6 and got["skipped"] == 0
    rules = {r["rule"]: r for r in got["rules"]}
    refused = {e["line"] for r in got["rules"] for e in r["examples"]}
    assert refused == {3, 4, 5}                 # the visitors (1, 2, 6) pass
    assert got["refused"] == 3
    assert {e["line"] for e in rules[942100]["examples"]} == {3, 5}
    assert rules[942100]["pass_if_excluded"] == 1          # the CMS's text, not the attack
    assert 930100 in rules and 913100 in rules


@needs_nginx
def test_an_excluded_rule_no_longer_refuses_and_the_attack_still_is(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(_log())
    got = waf_replay.replay(_county(tmp_path, mode="block", exclude_rules=[942100]),
                            "renshe", log)
    assert 942100 not in {r["rule"] for r in got["rules"]}
    refused = {e["line"] for r in got["rules"] for e in r["examples"]}
    assert 5 not in refused and {3, 4} <= refused


@needs_nginx
def test_the_command_prints_json_and_refuses_a_missing_file_clearly(tmp_path):
    county = _county(tmp_path)
    log = tmp_path / "access.log"
    log.write_text(_log(LOG[:1]))
    cmd = [str(Path(sys.executable).parent / "govhost"), "--inventory", str(county.root),
           "waf", "replay", "renshe"]
    ok = subprocess.run([*cmd, str(log), "--json"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["refused"] == 0
    missing = subprocess.run([*cmd, str(tmp_path / "nope.log")], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


@needs_nginx
def test_a_line_separator_in_a_logged_header_loses_no_entry(tmp_path):
    attack = "GET /exam.php?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1"
    rows = [(attack, "-", "Mozilla/5.0"), (attack, "-", "Mozilla\\xE2\\x80\\xA8x"),
            (attack, "-", "x\\xE2\\x80\\xA81\\xE2\\x80\\xA8y"),
            (attack.replace("exam", "ex\\xC2\\x85am"), "-", "Mozilla/5.0")]
    log = tmp_path / "access.log"
    log.write_text(_log(rows))
    got = waf_replay.replay(_county(tmp_path), "renshe", log)
    assert got["refused"] == 4, got


@needs_nginx
def test_assets_are_left_out_as_the_nodes_serve_them_without_the_waf(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(_log([("GET /style.CSS?id=1%27%20union%20select%201-- HTTP/1.1", "-", "M"),
                         ("GET /x.php/y.png?id=1%27%20union%20select%201-- HTTP/1.1", "-", "M")]))
    got = waf_replay.replay(_county(tmp_path), "renshe", log)
    assert got["assets_not_judged"] == 1 and got["replayed"] == 1 and got["refused"] == 1


@needs_nginx
def test_nothing_the_worker_can_write_is_read_by_root(tmp_path, monkeypatch):
    seen = {}
    real = waf_replay._send

    def look(sock, host, r):
        if r.line == 0:
            work = sock.parent
            for p in [work, *work.iterdir()]:
                st = p.lstat()
                seen[p.name] = (st.st_uid, oct(st.st_mode & 0o777))
        return real(sock, host, r)

    monkeypatch.setattr(waf_replay, "_send", look)
    log = tmp_path / "access.log"
    log.write_text(_log(LOG[:1]))
    waf_replay.replay(_county(tmp_path), "renshe", log)
    assert all(uid == 0 for uid, _ in seen.values()), seen
    work = next(k for k in seen if k.startswith("govhost-waf-replay-"))
    assert seen[work][1] == "0o711" and seen["nginx.conf"][1] == "0o600"
    assert seen["unit.conf"][1] == "0o600" and seen["main.conf"][1] == "0o600"


@needs_nginx
def test_markup_in_a_logged_request_is_printed_not_interpreted(tmp_path):
    county = _county(tmp_path)
    log = tmp_path / "access.log"
    log.write_text(_log([("GET /a?id=1%27%20union%20select%201--&x=[/b][red] HTTP/1.1", "-",
                          "M")]))
    cmd = [str(Path(sys.executable).parent / "govhost"), "--inventory", str(county.root),
           "waf", "replay", "renshe", str(log)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr            # before: rich's MarkupError on [/b]
    assert "1 of 1 request(s) would be refused" in r.stdout
