"""Content safety on the real lab: wording checks at publish and over the live county, the
county search answered by every node's nginx, and tamper protection putting live files back.
Real sshd, nginx, SFTP uploads, jieba and SQLite FTS5 on the nodes, inotify."""
import http.client
import json
import shutil
import subprocess
import time
import urllib.parse

import pytest

from .conftest import govhost
from .test_apply_lab import NODES, node_metrics, on_node
from .test_tenants_lab import (
    _primary,
    clean,
    page,
    publish,
    tenants,  # noqa: F401 - the module's applied county
)
from .test_tenants_lab import upload as _upload


def upload(tn, tenant: str, files: dict[str, str]) -> None:
    """The upload area holds exactly `files` (what earlier tests left is deleted first)."""
    clean(tenant, _primary(tn, tenant))
    _upload(tn, tenant, files)


def _search(address: str, host: str, query: str) -> dict:
    q = urllib.parse.quote(query)
    out = subprocess.run(["curl", "-s", "-H", f"Host: {host}",
                          f"http://{address}/search?q={q}&format=json"],
                         capture_output=True, text=True, timeout=20).stdout
    return json.loads(out)


def _wait(cond, seconds: float, what: str, node_address: str = ""):
    """Wait for `cond`; on a timeout, the tamper watcher's log on `node_address` says why."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    log = (on_node(node_address, "tail -n 30 /var/log/govhost/tamper.log; "
                                 "cat /var/lib/govhost/tamper/state.json")
           if node_address else "")
    raise AssertionError(f"timed out waiting for {what}" + (f"; the watcher:\n{log}" if log
                                                            else ""))


def _incidents(tn) -> list[dict]:
    res = json.loads(govhost(tn["inv"], "tamper", "list", "--json", check=True).stdout)
    return [i for r in res.values() for i in r.get("incidents", [])]


def _page(title: str, body: str, date: str = "2026-11-20") -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<meta name=\"PubDate\" content=\"{date}\"></head>\n<body>\n<h1>{title}</h1>\n"
            f"<p>{body}</p>\n</body></html>\n")


# wording ---------------------------------------------------------------------------------

def test_a_block_word_is_refused_naming_the_file_and_line(tenants):  # noqa: F811
    tn = tenants
    upload(tn, "jiaoyu", {"index.html": _page("青水县教育局", "全县教育工作会议召开"),
                          "news/spam.html": "<html><body>\n<p>第一行</p>\n"
                                            "<p>本站 代 开 發 票，请联系</p>\n</body></html>\n"})
    before = {a: page("jiaoyu", a) for a in NODES.values()}
    proc = govhost(tn["inv"], "publish", "jiaoyu")
    assert proc.returncode == 1
    # spaces inside the word and a traditional character do not hide it
    assert "news/spam.html, line 3" in proc.stderr and "代开发票" in proc.stderr
    assert {a: page("jiaoyu", a) for a in NODES.values()} == before
    rows = json.loads(govhost(tn["inv"], "releases", "jiaoyu", "--json", check=True).stdout)
    assert all(r["status"] != "pending" for r in rows)
    rows = subprocess.run(["sqlite3", "-json", str(tn["inv"] / ".govhost" / "state.db"),
                           "SELECT detail FROM audit WHERE action = 'content.refused' "
                           "AND target LIKE 'jiaoyu/%'"], capture_output=True, text=True).stdout
    details = [json.loads(r["detail"]) for r in json.loads(rows or "[]")]
    assert details and details[-1]["reason"] == "wording"
    assert details[-1]["findings"][0]["file"] == "news/spam.html"


def test_a_review_word_is_shown_to_the_reviewer(tenants):  # noqa: F811
    tn = tenants
    upload(tn, "weijian", {"index.html": _page(
        "卫健局", "根据原國家工商行政 管理总局的通知，ＡＢＣ" + str(time.time()))})
    pending = publish(tn, "weijian")
    assert pending["status"] == "pending"
    assert pending["wording"] == {"block": 0, "review": 1, "note": 0}
    shown = json.loads(govhost(tn["inv"], "review", "show", "weijian", pending["release"],
                               "--json", check=True).stdout)
    [f] = shown["wording"]
    assert (f["file"], f["line"], f["word"], f["right"]) == (
        "index.html", 4, "国家工商行政管理总局", "国家市场监督管理总局")
    assert f["found"] == "國家工商行政 管理总局"
    text = govhost(tn["inv"], "review", "show", "weijian", pending["release"], check=True).stdout
    assert "國家工商行政 管理总局" in text and "国家市场监督管理总局" in text
    govhost(tn["inv"], "review", "reject", "weijian", pending["release"], check=True)


def test_a_list_change_rechecks_the_live_county(tenants):  # noqa: F811
    tn = tenants
    upload(tn, "jiaoyu", {"index.html": _page("青水县教育局", "冬季运动会将于下月举行"),
                          "news/a.html": _page("通知", "我们提供最佳服务")})
    publish(tn, "jiaoyu")
    first = json.loads(govhost(tn["inv"], "wording", "check", "--json").stdout)
    assert [f["word"] for f in first["units"]["jiaoyu"]["findings"]] == ["最佳"]  # a note
    # the county adds a word: the live site is checked again and now fails
    inv = tn["inv"]
    (inv / "wording" / "events.yaml").write_text(
        "severity: review\nentries:\n  - {word: 冬季运动会, right: 冬季全民运动会}\n")
    try:
        # the apply that takes the inventory change in checks the live county again
        applied = govhost(inv, "apply", "--yes")
        assert applied.returncode == 0, applied.stderr
        assert "the live county was checked again: 1 finding(s)" in applied.stderr
        proc = govhost(inv, "wording", "check", "--json")
        assert proc.returncode == 1
        res = json.loads(proc.stdout)
        assert res["lists"] != first["lists"]
        assert res["units"]["jiaoyu"]["read"] == 0       # read by the apply, not twice
        words = sorted(f["word"] for f in res["units"]["jiaoyu"]["findings"])
        assert words == ["冬季运动会", "最佳"]
        verdict = json.loads(govhost(inv, "compliance", "check", "jiaoyu", "--json").stdout)
        assert verdict["jiaoyu"]["wording"]["ok"] is False
        assert "冬季运动会" in verdict["jiaoyu"]["wording"]["summary"]
    finally:
        (inv / "wording" / "events.yaml").unlink()
    assert govhost(inv, "apply", "--yes").returncode == 0


# search ----------------------------------------------------------------------------------

def test_search_on_every_node_segments_highlights_and_filters(tenants):  # noqa: F811
    tn = tenants
    stamp = str(int(time.time()))
    upload(tn, "jiaoyu", {"index.html": _page("青水县教育局", "茶河镇中心小学介绍经验"),
                          "news/sports.html": _page("冬季运动会通知",
                                                    f"第{stamp}届冬季运动会在茶河镇举行",
                                                    "2026-11-28")})
    publish(tn, "jiaoyu")
    upload(tn, "chahe", {"index.html": _page("茶河镇人民政府", "茶河镇秋收工作总结",
                                             "2026-10-01")})
    publish(tn, "chahe")
    for address in NODES.values():
        county_wide = _search(address, "www.qingshui.gov.cn", "茶河镇")
        units = sorted({r["unit"] for r in county_wide["results"]})
        assert units == ["chahe", "jiaoyu"], (address, county_wide)
        assert any("<mark>茶河镇</mark>" in r["excerpt_html"] for r in county_wide["results"])
        # a unit's own search is its own
        own = _search(address, "jiaoyu.qingshui.gov.cn", "茶河镇")
        assert own["total"] == 2 and {r["unit"] for r in own["results"]} == {"jiaoyu"}
        # words, not characters: 镇中 is two characters of 茶河镇中心小学, not a word
        assert _search(address, "www.qingshui.gov.cn", "镇中")["total"] == 0
        assert _search(address, "www.qingshui.gov.cn", stamp)["total"] == 1
    page_html = _search_html("10.77.0.11", "www.qingshui.gov.cn", "<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in page_html and "&lt;script&gt;" in page_html
    # behind the portal's rate limit (20/s, burst 40): a burst of 100 is partly refused
    conn = http.client.HTTPConnection("10.77.0.11", 80, timeout=10)
    codes = []
    for _ in range(100):
        conn.request("GET", "/search?q=x", headers={"Host": "www.qingshui.gov.cn"})
        r = conn.getresponse()
        r.read()
        codes.append(r.status)
    conn.close()
    assert 200 in codes and any(c in (429, 503) for c in codes), codes
    time.sleep(2.5)                 # the bucket refills (20/s) for the tests that follow


def _search_html(address: str, host: str, query: str) -> str:
    q = urllib.parse.quote(query)
    return subprocess.run(["curl", "-s", "-H", f"Host: {host}", f"http://{address}/search?q={q}"],
                          capture_output=True, text=True, timeout=20).stdout


def test_a_rolled_back_page_leaves_the_results_on_every_node(tenants):  # noqa: F811
    tn = tenants
    word = "第" + str(int(time.time())) + "号公告"
    upload(tn, "jiaoyu", {"index.html": _page("青水县教育局", "首页"),
                          "news/notice.html": _page("公告", word)})
    publish(tn, "jiaoyu")
    assert all(_search(a, "www.qingshui.gov.cn", word)["total"] == 1 for a in NODES.values())
    govhost(tn["inv"], "rollback", "jiaoyu", check=True)
    assert all(_search(a, "www.qingshui.gov.cn", word)["total"] == 0 for a in NODES.values())


def test_a_node_that_missed_a_change_is_sent_the_whole_unit(tenants):  # noqa: F811
    tn = tenants
    # n2's index loses everything (a replaced disk): the next sync sends it every unit whole
    on_node(NODES["n2"], "rm -f /var/lib/govhost/search/index.db*")
    assert _search(NODES["n2"], "www.qingshui.gov.cn", "茶河镇")["total"] == 0
    res = json.loads(govhost(tn["inv"], "search", "sync", "--json", check=True).stdout)
    assert "jiaoyu" in res["nodes"]["n2"]["sent_whole"]
    assert res["nodes"]["n1"]["sent_whole"] == []
    assert _search(NODES["n2"], "www.qingshui.gov.cn", "茶河镇")["total"] >= 1


# tamper protection -----------------------------------------------------------------------

def test_tampered_files_are_put_back_and_reported(tenants):  # noqa: F811
    tn = tenants
    upload(tn, "jiaoyu", {"index.html": _page("青水县教育局", "原版首页"),
                          "news/a.html": _page("通知", "原版通知")})
    publish(tn, "jiaoyu")
    node = tn["placement"]["jiaoyu"][0]
    address = NODES[node]
    live = "/srv/govhost/sites/jiaoyu/current"
    good = page("jiaoyu", address)
    release = on_node(address, f"basename $(readlink -f {live})")
    _wait(lambda: json.loads(on_node(address, "cat /var/lib/govhost/tamper/state.json"))[
        "watching"].get("jiaoyu") == release, 10, "the watcher on the published release",
        address)
    start = time.time()
    # Issue 34: the defacer's words are in the title, where search engines read them.
    on_node(address, f"echo '<title>网上博彩</title><h1>HACKED</h1>' > {live}/index.html; "
                     f"echo '<?php system($_GET[1]);' > {live}/shell.php; rm {live}/news/a.html")
    _wait(lambda: page("jiaoyu", address) == good, 10, "index.html put back", address)
    _wait(lambda: on_node(address, f"test -f {live}/news/a.html && test ! -e {live}/shell.php "
                                   "&& echo ok || true") == "ok", 10, "the other files put back",
          address)
    mine = [i for i in _incidents(tn) if i["at"] >= start and i["tenant"] == "jiaoyu"]
    assert sorted((i["node"], i["file"], i["change"], i["restored"]) for i in mine) == [
        (node, "index.html", "modified", True), (node, "news/a.html", "removed", True),
        (node, "shell.php", "added", True)]
    hacked = next(i for i in mine if i["file"] == "index.html")
    assert on_node(address, f"cat {hacked['evidence']}") == "<title>网上博彩</title><h1>HACKED</h1>"
    # ... put back, and reported with the word the county blocks, its place and line
    assert {(w["found"], w["severity"], w["place"], w["line"]) for w in hacked["words"]} == {
        ("网上博彩", "block", "title", 1)}, hacked["words"]
    assert next(i for i in mine if i["file"] == "news/a.html")["words"] == []
    metrics = node_metrics(tn["inv"], address)
    assert "govhost_tamper_watcher_up 1" in metrics
    assert 'govhost_tamper_unrepaired_files{tenant="jiaoyu"} 0' in metrics
    st = json.loads(govhost(tn["inv"], "status", "--no-probe", "--json", check=True).stdout)
    assert all(n["tamper_watcher"] for n in st["nodes"])
    assert next(t for t in st["tenants"] if t["tenant"] == "jiaoyu")["tamper_incidents"] >= 3
    assert not [p for p in st["problems"] if "tamper" in p["what"]]


def test_changes_while_the_watcher_is_down_are_put_back_when_it_starts(tenants):  # noqa: F811
    tn = tenants
    node = tn["placement"]["jiaoyu"][0]
    address = NODES[node]
    live = "/srv/govhost/sites/jiaoyu/current"
    good = page("jiaoyu", address)
    on_node(address, "kill $(cat /run/govhost-tamper.pid)")
    time.sleep(0.5)
    start = time.time()
    on_node(address, f"echo defaced > {live}/index.html")
    time.sleep(1.5)
    assert page("jiaoyu", address)[1].strip() == "defaced"        # nobody watching
    on_node(address, f"/usr/local/sbin/govhost-node agents {address}")
    _wait(lambda: page("jiaoyu", address) == good, 20, "put back by the start-up check",
          address)
    mine = [i for i in _incidents(tn) if i["at"] >= start and i["tenant"] == "jiaoyu"]
    assert [(i["file"], i["change"], i["restored"]) for i in mine] == [
        ("index.html", "modified", True)]
    assert mine[0]["live_seconds"] >= 1.5


def test_a_publish_is_not_mistaken_for_tampering(tenants):  # noqa: F811
    tn = tenants
    start = time.time()
    for i in range(3):
        upload(tn, "jiaoyu", {"index.html": _page("青水县教育局", f"第{i}版 {start}"),
                              f"news/n{i}.html": _page("通知", f"通知{i}")})
        publish(tn, "jiaoyu")
    govhost(tn["inv"], "rollback", "jiaoyu", check=True)
    time.sleep(2)
    assert [i for i in _incidents(tn) if i["at"] >= start] == []


def test_a_script_planted_in_a_php_sites_files_area_is_moved_out(tenants):  # noqa: F811
    tn = tenants
    address = _primary(tn, "renshe")        # a PHP site: its PHP writes to files/
    files = "/srv/govhost/sites/renshe/files"
    start = time.time()
    on_node(address, f"mkdir -p {files}/up && echo '<?php eval($_POST[x]);' > {files}/up/x.php "
                     f"&& echo picture > {files}/up/photo.jpg")
    try:
        out = json.loads(on_node(address, "/usr/local/sbin/govhost-tamper check"))
        moved = [i for i in out if i["change"] == "script"]
        assert [(i["file"], i["restored"]) for i in moved] == [("files/up/x.php", True)]
        assert on_node(address, f"ls {files}/up") == "photo.jpg"
        assert any(i["file"] == "files/up/x.php" for i in _incidents(tn) if i["at"] >= start)
    finally:
        on_node(address, f"rm -rf {files}/up")


@pytest.fixture(autouse=True, scope="module")
def _no_left_overs(tenants):  # noqa: F811
    yield
    shutil.rmtree(tenants["root"] / "src-jiaoyu", ignore_errors=True)
