"""The yearly report's figures (pure) and the node's count of page views from real log
lines in nginx's govhost format, live and rotated (gzip)."""
import gzip
import os
import time

from controlplane.compliance import yearly
from controlplane.core import inventory
from govhost_node import visits
from tests.helpers import tenant, write_inventory


def _line(ip="203.0.113.7", day="02/Dec/2026", path="/", status=200, agent="Mozilla/5.0",
          hop="-", method="GET") -> bytes:
    return (f'{ip} - - [{day}:09:15:01 +0800] "{method} {path} HTTP/1.1" {status} 512 "-" '
            f'"{agent}" 0.003 jiaoyu.qingshui.gov.cn {hop}\n').encode()


def test_page_views_leave_out_assets_errors_robots_our_checks_and_forwarded_requests():
    days: dict = {}
    lines = [_line(), _line(path="/xwdt/1.html?x=1"), _line(path="/xwdt/"),
             _line(ip="198.51.100.1", status=304), _line(path="/img/a.png"),
             _line(status=404), _line(status=301), _line(method="POST"),
             _line(agent="Mozilla/5.0 (compatible; Googlebot/2.1)"),
             _line(agent="Baiduspider"), _line(agent="govhost-compliance"),
             _line(agent="Mozilla/5.0 HeadlessChrome/156"), _line(hop="1"),
             _line(day="01/Dec/2026"), b"garbage\n"]
    visits.count(iter(lines), "2026-12-01", days)
    assert days["2026-12-02"]["views"] == 4 and len(days["2026-12-02"]["ips"]) == 2
    assert days["2026-12-01"]["views"] == 1
    days = {}
    visits.count(iter(lines), "2026-12-02", days)
    assert set(days) == {"2026-12-02"}
    assert visits.visitor_hash(b"203.0.113.7") in days["2026-12-02"]["ips"]
    assert "203.0.113.7" not in str(days)          # only hashes leave the node


def test_rotated_and_compressed_logs_are_read_old_ones_skipped(tmp_path):
    (tmp_path / "access.log").write_bytes(_line() * 2)
    with gzip.open(tmp_path / "access.log-20261201.gz", "wb") as f:
        f.write(_line(day="01/Dec/2026") * 3)
    (tmp_path / "access.log-20261130").write_bytes(_line(day="30/Nov/2026"))
    (tmp_path / "error.log").write_bytes(_line())
    old = tmp_path / "access.log-20250101.gz"     # last written before the first day asked
    with gzip.open(old, "wb") as f:
        f.write(_line(day="30/Nov/2026") * 5)
    os.utime(old, (time.time() - 400 * 86400,) * 2)
    got = visits.unit_days(str(tmp_path), (time.strftime("%Y-%m-%d", time.localtime(
        time.time() - 300 * 86400))))
    assert {d: v["views"] for d, v in got.items()} == {
        "2026-12-02": 2, "2026-12-01": 3, "2026-11-30": 1}


def test_merge_adds_views_and_counts_a_visitor_on_two_nodes_once():
    a = {"jiaoyu": {"2026-12-02": {"views": 3, "ips": ["aa", "bb"]}}}
    b = {"jiaoyu": {"2026-12-02": {"views": 2, "ips": ["bb", "cc"]}},
         "chahe": {"2026-12-01": {"views": 1, "ips": ["aa"]}}}
    assert yearly.merge([a, b]) == [("chahe", "2026-12-01", 1, 1),
                                    ("jiaoyu", "2026-12-02", 5, 3)]


def test_figures_per_unit_from_the_year_only(tmp_path):
    t = tenant("jiaoyu")
    t["columns"] = [{"path": "/xwdt/", "title": "新闻动态", "category": "news"},
                    {"path": "/zcwj/", "title": "政策文件", "category": "policy"}]
    inv = inventory.load(write_inventory(tmp_path / "inv", [t, tenant("chahe")]))
    this = time.mktime((2026, 6, 1, 12, 0, 0, 0, 0, -1))
    last = time.mktime((2025, 6, 1, 12, 0, 0, 0, 0, -1))

    def rel(at, status, added):
        return {"tenant": "jiaoyu", "status": status, "published_at": at,
                "changes": {"added": [[p, 10] for p in added], "changed": [], "removed": []}}
    releases = [rel(this, "live", ["xwdt/1.html", "xwdt/2.htm", "zcwj/a.pdf", "img/x.png"]),
                rel(this, "superseded", ["zcwj/b.docx", "zcwj/c.html"]),
                rel(this, "rejected", ["xwdt/9.html"]), rel(this, "pending", ["xwdt/8.html"]),
                rel(last, "superseded", ["xwdt/0.html"])]
    rows = {r["tenant"]: r for r in yearly.figures(
        inv, 2026, releases, {"jiaoyu": (120, 40, 30)}, {"jiaoyu": (2000, 10)},
        {"jiaoyu": 2})}
    j = rows["jiaoyu"]
    assert (j["page_views"], j["visitors"], j["days_counted"]) == (120, 40, 30)
    assert j["uptime_percent"] == 99.5 and j["security_incidents"] == 2
    assert (j["updates"], j["pages_published"], j["attachments_published"]) == (2, 3, 2)
    assert j["by_column"] == [
        {"path": "/xwdt/", "title": "新闻动态", "pages": 2, "attachments": 0},
        {"path": "/zcwj/", "title": "政策文件", "pages": 1, "attachments": 2}]
    c = rows["chahe"]
    assert c["uptime_percent"] is None and c["page_views"] == 0 and c["by_column"] == []
    text = yearly.to_csv(list(rows.values()))
    assert "新闻动态 /xwdt/: 2 pages, 0 attachments" in text
    html = yearly.to_html("青水县", 2026, list(rows.values()), "2026-12-02")
    assert "99.50 %" in html and "<script" not in html


def test_pages_most_read_per_day_without_queries_bounded_and_added_up_over_nodes():
    days: dict = {}
    lines = [_line(path="/xwdt/1.html?x=1"), _line(path="/xwdt/1.html"), _line(),
             _line(path="/" + "a" * 500), _line(path="/img/a.png")]
    visits.count(iter(lines), "2026-12-01", days)
    pages = days["2026-12-02"]["pages"]
    assert pages["/xwdt/1.html"] == 2 and pages["/"] == 1 and "/img/a.png" not in pages
    assert max(len(p) for p in pages) == visits.PATH_MAX
    many = {f"/p{i}.html": i for i in range(200)}
    assert list(visits.top(many, 3)) == ["/p199.html", "/p198.html", "/p197.html"]
    a = {"jiaoyu": {"2026-12-02": {"views": 3, "ips": [], "pages": {"/": 2, "/a.html": 1}}}}
    b = {"jiaoyu": {"2026-12-02": {"views": 2, "ips": [], "pages": {"/a.html": 2}}}}
    assert yearly.merge_pages([a, b], keep=1) == [("jiaoyu", "2026-12-02", "/a.html", 3)]


def test_the_state_keeps_the_pages_of_a_day_counted_again(tmp_path):
    from controlplane.core.state import State
    st = State(tmp_path / "state.db")
    st.record_visit_days([("jiaoyu", "2026-12-02", 3, 2)],
                         [("jiaoyu", "2026-12-02", "/", 2), ("jiaoyu", "2026-12-02", "/a", 1)])
    st.record_visit_days([("jiaoyu", "2026-12-02", 5, 2)],
                         [("jiaoyu", "2026-12-02", "/a", 4)])
    st.record_visit_days([("jiaoyu", "2026-11-01", 1, 1)], [("jiaoyu", "2026-11-01", "/", 9)])
    assert st.visits("jiaoyu", "2026-12-01") == [("2026-12-02", 5, 2)]
    assert st.top_pages("jiaoyu", "2026-12-01") == [("/a", 4)]
    st.close()


def test_messages_per_site_received_answered_and_median_days(tmp_path):
    """Counted where the citizen wrote (a forward does not move it), in the county's year."""
    from datetime import datetime, timedelta, timezone
    cn = timezone(timedelta(hours=8))

    def at(y, m, d):
        return datetime(y, m, d, 10, tzinfo=cn).timestamp()
    index = [{"number": "JY-1", "unit": "jiaoyu", "received": "2026-03-01T02:00:00Z"},
             {"number": "JY-2", "unit": "jiaoyu", "received": "2026-03-02T02:00:00Z"},
             {"number": "JY-3", "unit": "jiaoyu", "received": "2026-03-03T02:00:00Z"},
             {"number": "JY-4", "unit": "jiaoyu", "received": "2026-03-04T02:00:00Z"},
             # 31 December 2025, 17:00 UTC: already 1 January 2026 in the county
             {"number": "JY-5", "unit": "jiaoyu", "received": "2025-12-31T17:00:00Z"},
             {"number": "JY-6", "unit": "jiaoyu", "received": "2025-12-30T02:00:00Z"}]
    answers = [{"number": "JY-1", "answered_at": at(2026, 3, 2)},      # 1 day
               {"number": "JY-2", "answered_at": at(2026, 3, 12)},     # 10 days
               {"number": "JY-5", "answered_at": at(2026, 1, 3)},      # 2 days
               {"number": "JY-6", "answered_at": at(2026, 1, 3)}]      # the year before
    got = yearly.message_figures(index, answers, 2026)
    assert got == {"jiaoyu": {"received": 5, "answered": 3, "median_days": 2}}
    inv = inventory.load(write_inventory(tmp_path / "inv", [tenant("jiaoyu"), tenant("chahe")]))
    rows = {r["tenant"]: r for r in yearly.figures(inv, 2026, [], {}, {}, {}, got)}
    j = rows["jiaoyu"]
    assert (j["messages_received"], j["messages_answered"], j["median_days_to_answer"]) == (
        5, 3, 2)
    assert rows["chahe"]["median_days_to_answer"] is None
    assert "messages_received" in yearly.to_csv(list(rows.values())).splitlines()[0]
    html = yearly.to_html("青水县", 2026, list(rows.values()), "2026-12-02")
    assert "收到留言" in html
