"""Compliance checks on the real lab: probes through every node, a real crawl of published
sites, the publish record for freshness, and the HTML report rendered by headless Chromium.
All requests stay on loopback (external links are not fetched: check_external_links off)."""
import csv
import io
import json
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.lab import network
from tests.helpers import example_inventory

from .conftest import REPO, govhost, with_county_keys
from .test_apply_lab import NODES, apply_json, on_node
from .test_tenants_lab import reset_content

MODE = {"slowunit": "ok", "flakyunit": "ok"}
FOOTER = ("<footer>主办单位：青水县教育局 联系电话：0571-6512-3301 网站标识码：3301000001 "
          "浙ICP备12345678号-1 浙公网安备 33010602000001号</footer>")


class App(BaseHTTPRequestHandler):
    """Two units' own applications behind the platform: slow or failing on demand."""

    def do_GET(self) -> None:  # noqa: N802
        unit = (self.headers.get("Host") or "").split(".")[0]
        mode = MODE.get(unit, "ok")
        if mode == "slow":
            time.sleep(2.5)
        code = 500 if mode == "down" else 200
        body = f"<html><body>{unit}</body></html>".encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


def _json(proc):
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _publish(inv, tenant, node, files: dict[str, str]) -> None:
    cmds = [f"cd /srv/govhost/sites/{tenant}/upload && rm -rf ./*"]
    for path, text in files.items():
        cmds.append(f"mkdir -p $(dirname {path}) && cat > {path} <<'EOF'\n{text}\nEOF")
    cmds.append(f"chown -R gh-{tenant}:gh-{tenant} .")
    on_node(node, "\n".join(cmds))
    proc = govhost(inv, "publish", tenant)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def county(lab_cluster, tmp_path_factory, county_keys):
    server = ThreadingHTTPServer((network.HOST4, 0), App)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("compliance")
    inv = root / "inventory"
    with_county_keys(example_inventory(inv), county_keys)
    with (inv / "cluster.yaml").open("a") as f:
        f.write("compliance:\n  probe_timeout_seconds: 1\n  check_external_links: false\n")
        # The test's application listens on the control machine: allowed for units' proxies by the
        # county here (a unit's manifest cannot allow it).
        f.write("proxy:\n  allow_upstreams: ['10.77.8.1/32']\n")
    for unit in MODE:
        (inv / "tenants" / f"{unit}.yaml").write_text(
            f"name: {unit}\ntitle: 测试单位{unit}\nkind: department\n"
            f"contact: {{name: 李强, email: it@{unit}.qingshui.gov.cn, phone: '0571-6512-3399'}}\n"
            f"site: {{type: proxy, upstreams: ['http://10.77.8.1:{port}']}}\n")
    with (inv / "tenants" / "jiaoyu.yaml").open("a") as f:
        f.write("identity: {site_code: '3301000001', icp: 浙ICP备12345678号-1, "
                "psb: 浙公网安备 33010602000001号}\n"
                "columns:\n"
                "  - {path: /xwdt/, title: 新闻动态, category: news}\n"
                "  - {path: /zcwj/, title: 政策文件, category: policy}\n"
                "  - {path: /rsxx/, title: 人事信息, category: personnel}\n")
    with (inv / "tenants" / "wenlv.yaml").open("a") as f:
        f.write("identity: {site_code: '3301000009', icp: 浙ICP备12345678号-9, "
                "psb: 浙公网安备 33010602000009号}\n")
    for t in ("jiaoyu", "wenlv"):
        reset_content(t)
    apply_json(inv)
    placement = _json(govhost(inv, "plan", "--json", check=True))["placement"]
    first = {t: NODES[placement[t][0]] for t in ("jiaoyu", "wenlv")}
    _publish(inv, "jiaoyu", first["jiaoyu"], jiaoyu_files())
    # wenlv shows everything but its site code
    _publish(inv, "wenlv", first["wenlv"], {
        "index.html": (f"<html><body><p>{time.strftime('%Y年%m月%d日')}</p>"
                       "<footer>主办单位：青水县文化和旅游局 "
                       "0571-6512-3309 浙ICP备12345678号-9 浙公网安备 33010602000009号</footer>"
                       "</body></html>")})
    yield {"inv": inv, "root": root, "first": first}
    server.shutdown()
    for t in ("jiaoyu", "wenlv"):
        reset_content(t)


def jiaoyu_files(shown: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
    """jiaoyu's site; its homepage's news list shows the date `shown` (today by default)."""
    shown = shown or time.strftime("%Y-%m-%d")
    return {
        "index.html": (f"<html><body><h1>青水县教育局</h1><a href='/xwdt/1.html'>新闻</a> "
                       f"<span>{shown}</span>"
                       "<a href='/xwdt/missing.html'>旧新闻</a><img src='/img/none.png'>"
                       "<a href='http://chahe.qingshui.gov.cn/'>茶河镇</a>"
                       "<a href='http://example.com/'>外部</a>"
                       f"<a href='/zcwj/2026-1.pdf'>政策</a>{FOOTER}</body></html>"),
        "xwdt/1.html": ("<html><body><img src='/img/logo.png'>"
                        "<a href='http://chahe.qingshui.gov.cn/nope.html'>茶河通知</a>"
                        "<a href='/'>首页</a></body></html>"),
        "img/logo.png": "png",
        "zcwj/2026-1.pdf": "%PDF-1.4",
        **(extra or {}),
    }


def test_probes_fail_the_week_only_past_five_percent(county):
    inv = county["inv"]
    # 21 rounds: slowunit slower than the limit in 2 (9.5 %), flakyunit down in 1 (4.8 %, the
    # fewest rounds where one failure stays under 5 %).
    MODE.update(slowunit="slow", flakyunit="down")
    first = _json(govhost(inv, "compliance", "probe", "--rounds", "1", "--json", check=True))
    MODE.update(flakyunit="ok")
    govhost(inv, "compliance", "probe", "--rounds", "1", "--json", check=True)
    MODE.update(slowunit="ok")
    # Spaced out: back-to-back rounds would meet the sites' own rate limit (429 = failure).
    rest = _json(govhost(inv, "compliance", "probe", "--rounds", "19", "--interval", "0.3",
                         "--json", check=True))
    assert first["failed_rounds"] == {"flakyunit": 1, "slowunit": 1}
    assert rest["failed_rounds"] == {}, rest["failures"]
    res = _json(govhost(inv, "compliance", "check", "slowunit", "flakyunit", "--json"))
    slow, flaky = res["slowunit"]["reachable"], res["flakyunit"]["reachable"]
    assert not slow["ok"] and "2 of 21 probes failed" in slow["summary"]
    # probed as the inspector does: through each floating address DNS names
    assert len(slow["evidence"]) == 2
    assert {(n["node"], n["address"]) for n in slow["evidence"][0]["nodes"]} \
        == {("n1", "10.77.0.101"), ("n2", "10.77.0.102"), ("n3", "10.77.0.103")}
    assert flaky["ok"] and "1 of 21" in flaky["summary"]
    assert flaky["evidence"][0]["nodes"][0]["status"] == 500


def test_broken_links_and_missing_image_are_reported_with_their_pages(county):
    res = _json(govhost(county["inv"], "compliance", "check", "jiaoyu", "--json"))["jiaoyu"]
    links = res["links"]
    assert not links["ok"]
    broken = {b["link"]: b for b in links["evidence"]}
    assert set(broken) == {"http://jiaoyu.qingshui.gov.cn/xwdt/missing.html",
                           "http://jiaoyu.qingshui.gov.cn/img/none.png",
                           "http://chahe.qingshui.gov.cn/nope.html"}
    assert broken["http://jiaoyu.qingshui.gov.cn/img/none.png"]["pages"] == \
        ["http://jiaoyu.qingshui.gov.cn/"]
    assert broken["http://chahe.qingshui.gov.cn/nope.html"]["pages"] == \
        ["http://jiaoyu.qingshui.gov.cn/xwdt/1.html"]
    assert broken["http://chahe.qingshui.gov.cn/nope.html"]["status"] == 404
    assert res["footer"]["ok"], res["footer"]


def test_a_homepage_without_the_site_code_fails_the_footer_check(county):
    res = _json(govhost(county["inv"], "compliance", "check", "wenlv", "--json"))["wenlv"]
    assert not res["footer"]["ok"] and res["footer"]["evidence"] == ["site code (网站标识码)"]


def test_columns_older_than_their_limit_are_stale_with_their_last_update(county):
    later = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() + 20 * 86400))
    res = _json(govhost(county["inv"], "compliance", "check", "jiaoyu", "--at", later,
                        "--json"))["jiaoyu"]
    cols = {c["path"]: c for c in res["columns_fresh"]["evidence"]}
    assert cols["/xwdt/"]["state"] == "stale" and 19.9 < cols["/xwdt/"]["age_days"] < 20.1
    assert abs(cols["/xwdt/"]["last_update"] - time.time()) < 600
    assert cols["/zcwj/"]["state"] == "ok"
    assert cols["/rsxx/"]["state"] == "empty" and cols["/rsxx/"]["files"] == 0
    # one stale column and one empty: findings with their deduction, below the veto's counts
    tally = res["columns_fresh"]["tally"]
    assert res["columns_fresh"]["ok"] and "新闻动态 (/xwdt/) stale" in \
        res["columns_fresh"]["summary"]
    assert tally["counts"] == {"stale_first_level": 1, "long_stale": 0, "empty": 1}
    assert tally["deduction"] == 2
    home = res["homepage_fresh"]
    assert not home["ok"] and home["evidence"][0]["shown_date"] == time.strftime("%Y-%m-%d")
    now = _json(govhost(county["inv"], "compliance", "check", "jiaoyu", "--json"))["jiaoyu"]
    assert now["homepage_fresh"]["ok"] and now["homepage_fresh"]["evidence"][0][
        "shown_age_days"] == 0


def _later(days: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() + days * 86400))


def test_five_stale_first_level_news_columns_veto_four_do_not(county):
    inv = county["inv"]
    manifest = inv / "tenants" / "jiaoyu.yaml"
    original = manifest.read_text()
    news = {f"/n{i}/": f"新闻{i}" for i in range(1, 5)}       # with /xwdt/: five news columns
    _publish(inv, "jiaoyu", county["first"]["jiaoyu"], jiaoyu_files(
        extra={f"{p.strip('/')}/1.html": "<p>稿件</p>" for p in news}))
    try:
        manifest.write_text(original + "".join(
            f"  - {{path: {p}, title: {t}, category: news}}\n" for p, t in news.items()))
        five = _json(govhost(inv, "compliance", "check", "jiaoyu", "--at", _later(15),
                             "--json"))["jiaoyu"]["columns_fresh"]
        assert not five["ok"] and five["summary"].startswith(
            "veto: 5 first-level news/notice columns past their limits (the limit is 5)")
        manifest.write_text(original + "".join(
            f"  - {{path: {p}, title: {t}, category: news}}\n" for p, t in
            list(news.items())[:3]))
        four = _json(govhost(inv, "compliance", "check", "jiaoyu", "--at", _later(15),
                             "--json"))["jiaoyu"]["columns_fresh"]
        assert four["ok"] and four["at_risk"]
        assert four["tally"]["counts"]["stale_first_level"] == 4
    finally:
        manifest.write_text(original)


def test_a_homepage_republished_with_only_old_dates_is_not_fresh(county):
    inv = county["inv"]
    old = time.strftime("%Y年%m月%d日", time.localtime(time.time() - 30 * 86400))
    _publish(inv, "jiaoyu", county["first"]["jiaoyu"], jiaoyu_files(shown=old))
    try:
        home = _json(govhost(inv, "compliance", "check", "jiaoyu", "--json"))["jiaoyu"][
            "homepage_fresh"]
        assert not home["ok"] and "published again but shows only old items" in home["summary"]
        assert home["evidence"][0]["shown_age_days"] == 30
        assert time.time() - home["evidence"][0]["last_update"] < 600    # the record is new
    finally:
        _publish(inv, "jiaoyu", county["first"]["jiaoyu"], jiaoyu_files())


def test_ipv6_probes_through_every_node_and_one_node_without_its_listener(county):
    """https_ipv6 is measured: jiaoyu's homepage through each node's fd00:77::1N. With n2's
    address taken off its network interface (nothing answers there), n2 alone fails, with
    the reason."""
    n2 = ["ip", "-n", network.node_ns("n2"), "addr"]
    address = ["fd00:77::12/64", "dev", "eth0"]

    def v6() -> dict:
        v = _json(govhost(county["inv"], "compliance", "check", "jiaoyu", "--json"))[
            "jiaoyu"]["https_ipv6"]
        return v, {e["node"]: e for e in v["evidence"]}

    v, rows = v6()
    assert set(rows) == {"n1", "n2", "n3"} and all(r["ok"] for r in rows.values()), rows
    assert rows["n2"]["address6"] == "fd00:77::12" and rows["n2"]["status"] == 200
    assert "IPv6 through" not in v["summary"]
    subprocess.run([*n2, "del", *address], check=True)
    try:
        v, rows = v6()
        assert not v["ok"] and rows["n1"]["ok"] and rows["n3"]["ok"] and not rows["n2"]["ok"]
        assert "IPv6 through n2 (fd00:77::12)" in v["summary"], v["summary"]
        assert rows["n2"]["error"], rows["n2"]     # no route to host, or no answer in time
    finally:
        subprocess.run([*n2, "add", *address, "nodad"], check=True)
    assert all(r["ok"] for r in v6()[1].values())


def test_the_crawl_goes_in_over_ipv4_and_ipv6(county):
    """Sites take turns over every healthy node's two addresses: of two units checked, one
    is crawled through a node's IPv4 address and the other through its IPv6 one, and both
    find their pages."""
    got = _json(govhost(county["inv"], "compliance", "check", "jiaoyu", "chahe", "--json"))
    through = {u: got[u]["links"]["summary"].rsplit("crawled through ", 1)[-1]
               for u in ("jiaoyu", "chahe")}
    assert sorted(":" in a for a in through.values()) == [False, True], through
    for u in through:                                   # the crawl read the site's pages
        pages = int(re.search(r"on (\d+) pages", got[u]["links"]["summary"]).group(1))
        assert pages >= 1, got[u]["links"]


def _browser_page(img: str, alt: str | None) -> bytes:
    alt_attr = f" alt='{alt}'" if alt is not None else ""
    return (f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            f"<title>青水县教育局</title></head><body><h1>青水县教育局</h1>"
            f"<p>{time.strftime('%Y-%m-%d')} 通知</p><img src='/img/{img}'{alt_attr}>"
            f"{FOOTER}</body></html>").encode()


def test_a_heavy_homepage_is_slow_in_the_browser_and_an_image_without_alt_is_reported(county):
    """Headless Chromium through a node, at the default visitor's connection (10 Mbit/s,
    40 ms): a 4 MB image takes the homepage past 3 s, named as its heaviest asset; axe-core
    names the image without alt text. With a small image that has alt text, both pass."""
    from tests.helpers import noise_png, upload
    inv, node = county["inv"], county["first"]["jiaoyu"]
    upload(node, "jiaoyu", {"index.html": _browser_page("big.png", None),
                            "img/big.png": noise_png()}, replace=True)
    assert govhost(inv, "publish", "jiaoyu").returncode == 0
    try:
        v = _json(govhost(inv, "compliance", "check", "jiaoyu", "--json"))["jiaoyu"]
        load, a11y = v["load_time"], v["accessibility"]
        assert not load["ok"], load
        page = load["evidence"][0]
        assert page["load_seconds"] > 3 and page["bytes"] > 4_000_000
        assert page["heaviest"][0]["url"].endswith("/img/big.png")
        assert "big.png" in load["summary"] and "limit 3 s" in load["summary"]
        assert not a11y["ok"], a11y
        alt = next(r for r in a11y["evidence"] if r["id"] == "image-alt")
        assert alt["impact"] == "critical" and "big.png" in alt["nodes"][0]["html"]
        upload(node, "jiaoyu", {"index.html": _browser_page("logo.png", "青水县教育局标志"),
                                "img/logo.png": noise_png(40, 40)}, replace=True)
        assert govhost(inv, "publish", "jiaoyu").returncode == 0
        v = _json(govhost(inv, "compliance", "check", "jiaoyu", "--json"))["jiaoyu"]
        assert v["load_time"]["ok"], v["load_time"]
        assert v["load_time"]["evidence"][0]["load_seconds"] < 3
        assert v["accessibility"]["ok"] and not v["accessibility"]["evidence"], \
            v["accessibility"]
    finally:
        _publish(inv, "jiaoyu", node, jiaoyu_files())


def _visit(source: str, address: str, path: str, agent: str = "Mozilla/5.0") -> int:
    r = subprocess.run(network.outside_argv(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", source, "-A",
         agent, "-H", "Host: jiaoyu.qingshui.gov.cn", f"http://{address}{path}"]),
        capture_output=True, text=True, timeout=30)
    return int(r.stdout or 0)


def test_yearly_report_counts_visits_published_pages_and_uptime(county):
    """Page views and visitors from the nodes' logs (our own probes, robots, assets and
    errors left out; a visitor on two nodes is one), pages and attachments per column from
    the publish record, uptime from the probes; as JSON, CSV and an HTML page."""
    inv, year = county["inv"], time.localtime().tm_year

    def jiaoyu() -> dict:
        data = _json(govhost(inv, "compliance", "yearly", "--year", str(year), "--format",
                             "json"))
        return next(u for u in data["units"] if u["tenant"] == "jiaoyu")

    before = jiaoyu()
    n1, n2 = "10.77.0.11", "10.77.0.12"
    V1, V2, V3, V4, V5 = network.OUTSIDE_MORE4[2:7]     # five strangers on the internet
    visits = [(V1, n1, "/"), (V1, n1, "/xwdt/1.html"),
              (V2, n2, "/"), (V3, n2, "/xwdt/1.html"),
              (V3, n1, "/")]
    assert [_visit(*v) for v in visits] == [200] * 5
    assert _visit(V2, n1, "/img/logo.png") == 200            # an asset
    assert _visit(V2, n1, "/xwdt/missing.html") == 404       # an error
    assert _visit(V4, n1, "/", "Googlebot/2.1") == 200       # a robot
    assert _visit(V5, n2, "/", "govhost-probe") == 200       # our own probe
    after = jiaoyu()
    assert after["page_views"] - before["page_views"] == 5
    assert after["visitors"] - before["visitors"] == 3
    assert after["days_counted"] >= 1 and after["columns"] == 3
    cols = {c["path"]: c for c in after["by_column"]}
    assert cols["/xwdt/"]["pages"] >= 1 and cols["/zcwj/"]["attachments"] >= 1
    assert after["updates"] >= 1 and after["pages_published"] >= 2
    assert after["probes"] > 0 and 0 <= after["uptime_percent"] <= 100
    rows = list(csv.DictReader(io.StringIO(govhost(
        inv, "compliance", "yearly", "--year", str(year), "--no-collect", check=True).stdout)))
    row = next(r for r in rows if r["tenant"] == "jiaoyu")
    assert int(row["page_views"]) == after["page_views"] and "新闻动态 /xwdt/" in row["by_column"]
    html = govhost(inv, "compliance", "yearly", "--year", str(year), "--no-collect",
                   "--format", "html", check=True).stdout
    assert "政府网站工作年度报表" in html and "青水县教育局" in html


def test_report_in_three_formats_and_rendered_by_chromium(county):
    inv = county["inv"]
    govhost(inv, "compliance", "check", "--json")
    html = county["root"] / "report.html"
    proc = govhost(inv, "compliance", "report", "--format", "html", "-o", str(html))
    assert proc.returncode == 0, proc.stderr
    text = html.read_text()
    assert "青水县教育局" in text and "FAIL" in text and "xwdt/missing.html" in text
    assert "<script" not in text                      # self-contained, nothing to run
    rows = list(csv.DictReader(io.StringIO(govhost(inv, "compliance", "report", "--format",
                                                   "csv", check=True).stdout)))
    assert {r["tenant"] for r in rows} >= {"jiaoyu", "wenlv", "slowunit"}
    wenlv = next(r for r in rows if r["tenant"] == "wenlv")
    assert wenlv["footer"] == "FAIL" and "site code" in wenlv["why failed"]
    data = _json(govhost(inv, "compliance", "report", "--format", "json", check=True))
    assert data["units"]["jiaoyu"]["verdicts"]["links"]["ok"] is False
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (scripts/setup.sh installs it)")
    shot = REPO / "test-artifacts" / "compliance-report.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1400,2400",
                        f"--screenshot={shot}", html.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
