"""The inspection indicators as pure rules: weeks, probe share, homepage and column freshness
from the publish record, footer marks, link extraction; and the report's refusals."""
import pytest

from controlplane.compliance import rules
from controlplane.core import inventory
from controlplane.core.errors import ManifestError
from controlplane.core.manifest import Column, Tenant
from tests.helpers import CLUSTER, tenant, write_inventory

DAY = 86400.0
NOW = 1_795_000_000.0


def _release(at, added=(), changed=(), removed=(), status="live"):
    return {"published_at": at, "status": status,
            "changes": {"added": [[p, 1] for p in added], "changed": [[p, 1] for p in changed],
                        "removed": list(removed), "skipped": []}}


def _tenant(**extra):
    return Tenant.model_validate(tenant("jiaoyu", **extra))


def test_week_bounds_and_week_of_agree():
    start, end = rules.week_bounds("2026-W47")
    assert end - start == 7 * DAY or abs(end - start - 7 * DAY) <= 3600   # DST-safe
    assert rules.week_of(start) == "2026-W47" and rules.week_of(end - 1) == "2026-W47"
    for bad in ("2026-47", "2026-W54", "W47"):
        with pytest.raises(ValueError):
            rules.week_bounds(bad)


@pytest.mark.parametrize("probes,failures,ok,risk", [
    (2016, 0, True, False), (2016, 100, True, True), (2016, 101, False, False),
    (100, 5, False, False), (100, 4, True, True), (0, 0, False, False)])
def test_unreachable_fails_the_week_at_five_percent(probes, failures, ok, risk):
    v = rules.reachability(probes, failures, [], 0.05)
    assert (v.ok, v.at_risk) == (ok, risk)


def test_homepage_freshness_comes_from_releases_that_changed_the_index():
    releases = [_release(NOW - 30 * DAY, added=["index.html", "a.html"]),
                _release(NOW - 5 * DAY, changed=["a.html"]),              # not the homepage
                _release(NOW - 1 * DAY, changed=["index.html"], status="pending")]
    v = rules.homepage_freshness(releases, NOW, 14)
    assert not v.ok and "30.0 days ago" in v.summary and "could not be read" in v.summary
    releases.append(_release(NOW - 3 * DAY, changed=["index.html"]))
    assert rules.homepage_freshness(releases, NOW, 14).ok
    assert not rules.homepage_freshness([], NOW, 14).ok


def _day_before(days: int) -> str:
    from datetime import datetime, timedelta
    return (datetime.fromtimestamp(NOW).date() - timedelta(days=days)).isoformat()


@pytest.mark.parametrize("age,ok", [(0, True), (13, True), (14, True), (15, False),
                                    (40, False)])
def test_the_newest_date_shown_on_the_homepage_decides_at_the_limit(age, ok):
    fresh = [_release(NOW - DAY, changed=["index.html"])]
    html = (f"<ul><li>旧闻 <span>{_day_before(200)}</span></li>"
            f"<li>新闻 <span>{_day_before(age)}</span></li></ul>")
    v = rules.homepage_freshness(fresh, NOW, 14, html)
    assert v.ok is ok
    assert v.evidence[0]["shown_date"] == _day_before(age)
    assert v.evidence[0]["shown_age_days"] == age and v.evidence[0]["dates_shown"] == 2
    assert v.evidence[0]["last_update"] == NOW - DAY


def test_a_republished_homepage_showing_only_old_dates_is_not_updated():
    v = rules.homepage_freshness([_release(NOW - DAY, changed=["index.html"])], NOW, 14,
                                 f"<p>通知 {_day_before(30)}</p>")
    assert not v.ok and "published again but shows only old items" in v.summary
    v = rules.homepage_freshness([_release(NOW - DAY, changed=["index.html"])], NOW, 14,
                                 "<h1>欢迎访问</h1><p>没有日期</p>")
    assert not v.ok and "shows no publication dates" in v.summary
    # the shown date wins the other way too: the record is old, the page shows a new item
    v = rules.homepage_freshness([_release(NOW - 60 * DAY, added=["index.html"])], NOW, 14,
                                 f"<p>{_day_before(2)}</p>")
    assert v.ok


def test_dates_in_the_forms_pages_use_and_not_in_scripts_or_the_future():
    from datetime import date
    today = date(2026, 11, 30)
    html = ("<p>2026-11-20</p><p>2026/11/19</p><p>2026.11.18</p><p>2026年11月17日</p>"
            "<p>2026 年 1 月 6 日</p><li>[11-16]</li><li>（11-15）</li><li>[12-25]</li>"
            "<script>var d='2026-11-29'</script><p>2027-01-01 会议</p><p>2026-02-30</p>"
            "<p>电话 0571-2026-1111</p><meta name='PubDate' content='2026-11-28'>")
    assert rules.shown_dates(html, today) == [
        date(2026, 11, d) for d in (20, 19, 18, 17, 16, 15)] + [date(2026, 1, 6),
                                                                 date(2025, 12, 25)]


def _cols(spec):
    return [Column(path=p, title=f"栏目{i}", category=cat) for i, (p, cat) in enumerate(spec)]


def _columns_verdict(spec, ages, empty=(), compliance=None):
    """Columns `spec` [(path, category)], each last updated `ages[path]` days ago."""
    releases = [_release(NOW - age * DAY, added=[p.lstrip("/") + "x.html"])
                for p, age in ages.items()]
    live = [p.lstrip("/") + "x.html" for p, _ in spec if p not in empty]
    return rules.column_freshness(_cols(spec), releases, live, NOW,
                                  compliance or inventory_compliance())


@pytest.mark.parametrize("stale,ok", [(4, True), (5, False)])
def test_five_stale_first_level_news_columns_veto_four_do_not(stale, ok):
    spec = [(f"/n{i}/", "news") for i in range(6)]
    ages = {p: (15 if i < stale else 13) for i, (p, _) in enumerate(spec)}
    v = _columns_verdict(spec, ages)
    tally = v.tally
    assert v.ok is ok and tally["counts"]["stale_first_level"] == stale
    assert tally["limits"] == {"stale_first_level": 5, "long_stale": 10, "empty": 5}
    assert tally["deduction"] == stale
    if ok:
        assert v.at_risk and "below the veto's counts; deduction 4" in v.summary
    else:
        assert v.summary.startswith("veto: 5 first-level news/notice columns")


def test_notices_count_after_six_months_and_second_level_columns_not_at_all():
    spec = [("/tz/", "notices"), ("/zc/", "policy"), ("/xw/a/", "news"), ("/xw/b/", "news"),
            ("/xw/c/", "news"), ("/xw/d/", "news"), ("/xw/e/", "news")]
    ages = {"/tz/": 183, "/zc/": 181, **{p: 100 for p, _ in spec[2:]}}
    v = _columns_verdict(spec, ages)
    rows = {r["path"]: r for r in v.evidence}
    assert rows["/tz/"]["state"] == "stale" and rows["/zc/"]["state"] == "ok"
    assert rows["/xw/a/"]["level"] == 2 and rows["/xw/a/"]["state"] == "stale"
    assert v.ok and v.tally["counts"]["stale_first_level"] == 1
    assert v.tally["deduction"] == 6          # every stale column costs points


@pytest.mark.parametrize("n,ok", [(9, True), (10, False)])
def test_ten_columns_not_updated_for_a_year_veto(n, ok):
    spec = [(f"/r{i}/a/", "personnel") for i in range(12)]
    ages = {p: (366 if i < n else 364) for i, (p, _) in enumerate(spec)}
    v = _columns_verdict(spec, ages)
    assert v.ok is ok and v.tally["counts"]["long_stale"] == n


@pytest.mark.parametrize("n,ok", [(4, True), (5, False)])
def test_five_empty_columns_veto(n, ok):
    spec = [(f"/e{i}/", "plans") for i in range(6)]
    v = _columns_verdict(spec, {p: 1 for p, _ in spec}, empty={p for p, _ in spec[:n]})
    assert v.ok is ok and v.tally["counts"]["empty"] == n


def test_the_column_limits_come_from_cluster_yaml():
    from controlplane.core.manifest import Compliance
    c = Compliance(stale_columns_veto=2, long_stale_days=30, long_stale_columns_veto=3,
                   empty_columns_veto=1, stale_column_deduction=0.5)
    spec = [("/a/", "news"), ("/b/", "news"), ("/c/", "plans")]
    v = _columns_verdict(spec, {"/a/": 31, "/b/": 15, "/c/": 31}, compliance=c)
    assert not v.ok and v.tally["counts"] == {"stale_first_level": 2, "long_stale": 2,
                                                    "empty": 0}
    assert v.tally["deduction"] == 1.0
    assert not _columns_verdict([("/a/", "news")], {}, empty={"/a/"}, compliance=c).ok


def test_columns_stale_empty_and_fresh_with_their_last_update():
    cols = [Column(path="/xwdt/", title="新闻动态", category="news"),
            Column(path="/zcwj/", title="政策文件", category="policy"),
            Column(path="/rsxx/", title="人事信息", category="personnel")]
    releases = [_release(NOW - 20 * DAY, added=["xwdt/1.html", "zcwj/a.pdf"]),
                _release(NOW - 2 * DAY, changed=["index.html"])]
    live = ["index.html", "xwdt/1.html", "zcwj/a.pdf"]
    v = rules.column_freshness(cols, releases, live, NOW, inventory_compliance())
    states = {r["path"]: (r["state"], r["age_days"]) for r in v.evidence}
    assert states == {"/xwdt/": ("stale", 20.0), "/zcwj/": ("ok", 20.0),
                      "/rsxx/": ("empty", None)}
    # one stale and one empty column: findings with their deduction, not a veto
    assert v.ok and "新闻动态 (/xwdt/) stale, last update" in v.summary
    assert v.tally["deduction"] == 2
    # a removal is an update of the column too
    releases.append(_release(NOW - DAY, removed=["xwdt/old.html"]))
    v = rules.column_freshness(cols[:2], releases, live, NOW, inventory_compliance())
    assert v.ok and v.summary == "2 columns up to date"


@pytest.mark.parametrize("per_day,thin", [({"2026-11-23": 20, "2026-11-24": 20}, False),
                                          ({"2026-11-23": 19, "2026-11-24": 20}, True),
                                          ({"2026-11-23": 20, "2026-11-24": 3}, False)])
def test_a_past_day_with_fewer_than_twenty_probes_is_named(per_day, thin):
    v = rules.reachability(40, 0, [], 0.05, per_day, 20, today="2026-11-24")
    assert v.ok and v.at_risk is thin and ("fewer than 20 probes on 2026-11-23" in v.summary) \
        is thin


def inventory_compliance():
    from controlplane.core.manifest import Compliance
    return Compliance()


def test_footer_needs_every_mark_outside_scripts():
    t = _tenant(identity={"site_code": "3301000001", "icp": "浙ICP备12345678号",
                          "psb": "浙公网安备 33010602000001号"})
    good = ("<html><body><footer>主办单位：测试单位 jiaoyu 电话 0571-1234 网站标识码 3301000001 "
            "浙ICP备12345678号 浙公网安备33010602000001号</footer></body></html>")
    assert rules.footer(good, t).ok
    v = rules.footer(good.replace("3301000001", ""), t)
    assert not v.ok and v.evidence == ["site code (网站标识码)"]
    hidden = good.replace("<footer>", "<script>var s='").replace("</footer>", "';</script>")
    assert not rules.footer(hidden, t).ok
    assert "no `identity`" in rules.footer(good, _tenant()).summary


def test_page_links_resolve_and_skip_non_http():
    html = ('<a href="/xwdt/1.html#top">n</a><img src="img/a.png"><a href="mailto:x@y">m</a>'
            '<a href="https://other.qingshui.gov.cn/">o</a><script src="/s.js"></script>'
            '<a href="javascript:void(0)">j</a><link href="/c.css" rel="stylesheet">')
    assert rules.page_links(html, "http://jiaoyu.qingshui.gov.cn/a/") == [
        "http://jiaoyu.qingshui.gov.cn/xwdt/1.html", "http://jiaoyu.qingshui.gov.cn/a/img/a.png",
        "https://other.qingshui.gov.cn/", "http://jiaoyu.qingshui.gov.cn/s.js",
        "http://jiaoyu.qingshui.gov.cn/c.css"]


def test_logs_pass_on_rotation_long_enough():
    assert rules.logs(NOW - 3 * DAY, 180, 180, NOW).ok
    assert not rules.logs(NOW - 3 * DAY, 30, 180, NOW).ok
    assert not rules.logs(None, None, 180, NOW).ok


@pytest.mark.parametrize("field,value,expect", [
    ("columns", [{"path": "xwdt", "title": "新闻", "category": "news"}], "not a column path"),
    ("columns", [{"path": "/xwdt/", "title": "新闻", "category": "gossip"}], "news"),
    ("identity", {"site_code": "33-01", "icp": "x", "psb": "y"}, "site identification code"),
])
def test_bad_columns_and_identity_are_refused_naming_the_field(tmp_path, field, value, expect):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu", **{field: value})])
    with pytest.raises(ManifestError) as exc:
        inventory.load(root)
    assert "tenants/jiaoyu.yaml" in str(exc.value) and field in str(exc.value)
    assert expect in str(exc.value)


def test_thresholds_are_configurable(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu")], cluster={
        **CLUSTER, "compliance": {"probe_timeout_seconds": 2, "column_limits_days": {"news": 7}}})
    c = inventory.load(root).cluster.compliance
    assert c.probe_timeout_seconds == 2 and rules.column_limits(c)["news"] == 7
    assert rules.column_limits(c)["policy"] == 182
    assert c.crawl_sites_at_once == 8
    bad = write_inventory(tmp_path / "bad", [tenant("jiaoyu")], cluster={
        **CLUSTER, "compliance": {"crawl_sites_at_once": 0}})
    with pytest.raises(ManifestError, match=r"cluster\.yaml.*crawl_sites_at_once"):
        inventory.load(bad)


def test_probe_rounds_are_counted_per_week_in_the_state_store(tmp_path):
    from controlplane.core.state import State
    st = State(tmp_path / "state.db")
    start, end = rules.week_bounds("2026-W47")
    fail = [{"node": "n3", "status": None, "seconds": 15.0, "error": "timeout"}]
    for i in range(20):
        st.record_probe_round(start + i * 30, {"jiaoyu": fail if i < 2 else [], "chahe": []})
    st.record_probe_round(end + 10, {"jiaoyu": fail})              # next week
    assert st.probe_week_counts(["jiaoyu", "chahe", "never"], start, end) == {
        "jiaoyu": (20, 2), "chahe": (20, 0)}
    assert st.probe_week_counts(["chahe"], start, end) == {"chahe": (20, 0)}
    probes, failures, times = st.probe_week("jiaoyu", start, end)
    assert (probes, failures) == (20, 2) and [t["at"] for t in times] == [start, start + 30]
    assert times[0]["nodes"] == fail
    v = rules.reachability(probes, failures, times, 0.05)
    assert not v.ok and "2 of 20" in v.summary
    st.close()


def test_the_crawl_pacer_spaces_requests_to_the_sites_rate_limit():
    """Each request takes the next free slot `1/rate` after the previous one, whichever thread
    asks, so a crawl never outruns the site's nginx limit (which would answer 429)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from controlplane.compliance.run import Pacer
    pacer = Pacer(rate=200.0)
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: pacer.wait(), range(20)))
    # 20 slots handed out, 5 ms apart: the next free one is at least 100 ms after the start
    assert pacer.next >= t0 + 20 * pacer.interval
    assert pacer.interval == 1 / 200.0


def _finding(severity: str, word: str = "茶河乡") -> dict:
    return {"file": "index.html", "line": 3, "where": "line", "word": word, "found": word,
            "right": "茶河镇", "severity": severity, "note": None, "list": "names.yaml",
            "before": "", "after": ""}


def test_wording_fails_on_block_or_review_words_on_the_live_site_not_on_notes():
    assert rules.wording(None, lists=False).ok                       # no lists kept
    assert rules.wording(None, lists=True).ok                        # nothing published
    notes = rules.wording({"release": "r1", "findings": [_finding("note", "最佳")]}, True)
    assert notes.ok and "1 notes" in notes.summary
    for sev in ("review", "block"):
        v = rules.wording({"release": "r1", "findings": [_finding(sev), _finding("note")]},
                          True)
        assert not v.ok and "茶河乡" in v.summary and [f["severity"] for f in v.evidence] == [sev]
    err = rules.wording({"error": "ssh: no route"}, True)
    assert not err.ok and "could not check" in err.summary


def _page(secs: float, timed_out: bool = False, violations=()) -> dict:
    return {"url": "https://jiaoyu.qingshui.gov.cn/", "through": "10.77.0.11", "error": "",
            "load_seconds": secs, "bytes": 4_200_000, "requests": 3, "timed_out": timed_out,
            "status": 200, "heaviest": [
                {"url": "https://jiaoyu.qingshui.gov.cn/img/big.png", "bytes": 4_100_000,
                 "ms": 3300, "type": "img"},
                {"url": "https://jiaoyu.qingshui.gov.cn/a.css", "bytes": 2_000, "ms": 50,
                 "type": "link"}],
            "axe": {"violations": list(violations)}}


@pytest.mark.parametrize("secs,ok,risk", [(2.39, True, False), (2.41, True, True),
                                          (3.0, True, True), (3.01, False, False)])
def test_load_time_fails_past_the_limit_naming_the_heaviest_assets(secs, ok, risk):
    v = rules.load_time(_page(secs), 3)
    assert (v.ok, v.at_risk) == (ok, risk)
    if not ok:
        assert "big.png (4.10 MB)" in v.summary and "limit 3 s" in v.summary


def test_load_time_without_a_browser_or_a_page_fails_with_the_reason():
    assert "chromedriver" in rules.load_time(None, 3, "chromedriver is not installed").summary
    timed = rules.load_time(_page(30, timed_out=True), 3)
    assert not timed.ok and "did not finish loading within 30.0 s" in timed.summary
    err = rules.load_time({**_page(1), "error": "net::ERR_NAME_NOT_RESOLVED"}, 3)
    assert not err.ok and "ERR_NAME_NOT_RESOLVED" in err.summary


def _violation(rule: str, impact: str, count: int) -> dict:
    return {"id": rule, "impact": impact, "help": f"{rule} help", "count": count,
            "nodes": [{"target": "img", "html": "<img src=x>"}] * min(count, 10)}


@pytest.mark.parametrize("impact,count,limit,ok", [
    ("critical", 1, 0, False), ("serious", 1, 0, False), ("moderate", 5, 0, True),
    ("critical", 2, 2, True), ("critical", 3, 2, False)])
def test_accessibility_counts_elements_at_the_fail_impact_or_worse(impact, count, limit, ok):
    v = rules.accessibility(_page(1, violations=[_violation("image-alt", impact, count)]),
                            "serious", limit)
    assert v.ok is ok
    assert v.evidence[0]["id"] == "image-alt"
    assert v.tally["elements"] == (count if impact in ("serious", "critical") else 0)


def test_accessibility_lists_worst_rules_first_and_needs_the_browser():
    v = rules.accessibility(_page(1, violations=[_violation("list", "minor", 1),
                                                 _violation("html-has-lang", "serious", 1)]),
                            "minor", 0)
    assert [r["id"] for r in v.evidence] == ["html-has-lang", "list"]
    assert v.summary.index("html-has-lang") < v.summary.index("list (minor")
    assert not rules.accessibility(None, "serious", 0, "no chromium").ok
    assert not rules.accessibility({**_page(1), "axe": {"error": "boom"}}, "serious", 0).ok
    assert rules.accessibility(_page(1), "serious", 0).summary.startswith("no WCAG")


def test_messages_veto_past_three_months_and_risk_past_the_due_date():
    """As the inspections count a site's box: one message unanswered for more than three
    months fails the site; past the county's due date is a risk, not yet a failure."""
    none = rules.messages([])
    assert none.ok and not none.at_risk and none.tally["received"] == 0
    fine = rules.messages([("JY-1", "answered"), ("JY-2", "open"), ("JY-3", "due_soon")])
    assert fine.ok and not fine.at_risk and "1 of 3 answered" in fine.summary
    late = rules.messages([("JY-1", "answered"), ("JY-2", "overdue"), ("JY-3", "alert")])
    assert late.ok and late.at_risk and late.evidence == ["JY-2", "JY-3"]
    veto = rules.messages([("JY-1", "veto"), ("JY-2", "overdue")])
    assert not veto.ok and "veto" in veto.summary and veto.evidence == ["JY-1"]
    assert veto.tally == {"received": 2, "answered": 0, "open": 0, "due_soon": 0,
                          "overdue": 1, "alert": 0, "veto": 1}
    assert "messages" in rules.INDICATORS and "messages" in rules.TITLES


def _old_last_update(prefix, releases):
    """A column's last update as it was defined before stop 66: every live release walked,
    the last one in publish order that touched the column."""
    last = None
    for r in rules._went_live(releases):
        if any(p.startswith(prefix) for p in rules._touched(r)):
            last = r["published_at"]
    return last


def test_a_columns_last_update_is_the_newest_release_that_touched_it():
    """Stop 66 walks the releases newest first and stops at the first that touched the
    column (each column walked all of them: 5 ms a unit at 180 releases); a property test
    against the definition as it stood, with ties in publish time, pending and rejected
    releases, removals and columns that share a beginning."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    dirs = ["a/", "a/b/", "ab/", "c/"]
    paths = st.sampled_from([d + f for d in dirs for f in ("x.html", "y.html")])
    release = st.fixed_dictionaries({
        "status": st.sampled_from(["live", "superseded", "pending", "rejected"]),
        "published_at": st.integers(0, 5).map(lambda d: NOW - d * DAY),
        "changes": st.fixed_dictionaries({
            "added": st.lists(st.tuples(paths, st.just("0" * 64)), max_size=3),
            "changed": st.lists(st.tuples(paths, st.just("0" * 64)), max_size=2),
            "removed": st.lists(paths, max_size=2)})})

    @settings(max_examples=300, deadline=None)
    @given(st.lists(release, max_size=12))
    def check(releases):
        spec = [("/" + d, "news") for d in dirs] + [("/z/", "policy")]
        v = rules.column_freshness(_cols(spec), releases, [], NOW, inventory_compliance())
        got = {row["path"]: row["last_update"] for row in v.evidence}
        assert got == {p: _old_last_update(p.lstrip("/"), releases) for p, _ in spec}
    check()
