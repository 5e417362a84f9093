#!/usr/bin/env python3
"""Benchmark content safety, measured side by side in one run:

  1. wording check of PAGES pages (default 60,000) against the example county's lists plus
     5,000 more words: pages per second, next to `grep -F -f` (a multi-pattern fixed-string
     search over the same files, which knows nothing of HTML, evasions or line numbers) as
     the floor, and next to the page reader before issue 34 (body text only; read from Git
     at READER_BEFORE) on the same pages: the cost of reading titles, meta tags, alt and
     title attributes, inline scripts' strings, comments and CSS content;
  2. the county search index of the same pages: build time, size; query latency (median,
     p99) in process, and through a lab node's nginx under wrk; next to `grep -rl WORD` over
     the same pages as the floor;
  3. tamper protection with UNITS units (default 300) live on one lab node: time from a file
     changed to put back (median, p99), measured on the node;
  4. a citizen's message of 5,000 characters screened against the same lists the way a node
     does (govhost_node/words.py), next to the control machine's automaton on the same text.

Parts 2 (wrk) and 3 need root and the lab (they bring up 3 overlay nodes and apply the
example county); part 1 and the in-process numbers do not. Pages are synthetic Chinese
government pages (titles, dates, ~600 characters of text from a fixed vocabulary).

Usage: bench/content_safety.py [PAGES] [UNITS] [--no-lab] [--search] [--json]
(--search: part 2 only, the index and its queries, and the node's search server on this
machine's loopback next to the one before issue 37, the one before stop 57's rankings and
the one before stop 62's answers in turn, read from Git: no lab needed with --no-lab.)
(--json: every part's figures as one JSON object on the last line.)
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import applied  # noqa: E402

from controlplane.core import inventory  # noqa: E402
from controlplane.core.wordlists import WordList  # noqa: E402
from controlplane.search import dictionary, pages  # noqa: E402
from controlplane.wording.match import Matcher, findings  # noqa: E402
from govhost_node import search as node_search  # noqa: E402

VOCAB = ("青水县 人民政府 教育局 茶河镇 龙潭镇 通知 公告 关于 开展 工作 会议 召开 全县 乡村振兴 "
         "安全生产 检查 部署 落实 群众 服务 项目 建设 农业 农村 卫生健康 疫苗 接种 学校 招生 "
         "报名 时间 地点 联系 电话 政策 解读 文件 规定 办法 实施 方案 年度 总结 计划 预算 决算 "
         "公开 信息 政务 办事 指南 窗口 受理 审批 许可 社会保障 养老 医疗 就业 培训 补贴 发放 "
         "防汛 抗旱 应急 管理 演练 交通 道路 维修 水利 工程 验收 环境 保护 治理 垃圾 分类 "
         "文化 旅游 活动 比赛 运动会 开幕 闭幕 表彰 先进 个人 集体 民政 救助 低保 残疾人 "
         "统计 调查 数据 发布 增长 下降 同比 环比 市场 监督 食品 药品 价格 投诉 举报").split()
EXTRA_WORDS = 5000


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def make_pages(root: Path, count: int, units: int) -> list[tuple[str, str, Path]]:
    rnd = random.Random(7)
    out = []
    for i in range(count):
        unit = f"u{i % units:03d}"
        title = "关于" + "".join(rnd.choice(VOCAB) for _ in range(4)) + "的通知"
        date = f"2026-{rnd.randint(1, 11):02d}-{rnd.randint(1, 28):02d}"
        paras = ["".join(rnd.choice(VOCAB) for _ in range(40)) + "。" for _ in range(6)]
        paras.append(f"文号：青政发〔2026〕{i:06d}号")     # one page per number: a rare word
        if i % 1000 == 0:
            paras.append("原国家工商行政 管理总局的文件已废止")       # a finding per 1,000
        body = "\n".join(f"<p>{p}</p>" for p in paras)
        # what a real county page carries besides its body: meta keywords and description,
        # an image's alt, a link's title, a small inline script, a comment
        keywords = ",".join(rnd.choice(VOCAB) for _ in range(5))
        html = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title>"
                f"<meta name=\"PubDate\" content=\"{date}\">"
                f"<meta name=\"keywords\" content=\"{keywords}\">"
                f"<meta name=\"description\" content=\"{title}\">"
                f"<script>var site = '青水县人民政府'; var id = \"p{i:06d}\";</script>"
                f"</head>\n<body>\n<!-- 正文开始 -->\n<h1>{title}</h1>\n"
                f"<img src=\"/img/logo.png\" alt=\"{rnd.choice(VOCAB)}\">"
                f"<a href=\"/\" title=\"返回首页\">首页</a>\n"
                f"{body}\n</body></html>\n")
        path = root / unit / "news" / f"p{i:06d}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        out.append((unit, f"news/p{i:06d}.html", path))
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def bench_wording(inv, files, root: Path) -> dict:
    rnd = random.Random(11)
    extra = sorted({"".join(rnd.choice(VOCAB) for _ in range(3)) + "错" for _ in range(EXTRA_WORDS)})
    lists = dict(inv.wording)
    lists["bench.yaml"] = WordList.model_validate(
        {"severity": "note", "entries": [{"word": w} for w in extra]})
    t0 = time.perf_counter()
    matcher = Matcher(lists)
    compile_s = time.perf_counter() - t0
    from controlplane.core.pagetext import Page, extract
    c0, t0 = cpu(), time.perf_counter()
    found = 0
    for _, rel, path in files:
        page = extract(rel, path.read_bytes())
        found += len(findings(matcher, page))
    secs, cpus = time.perf_counter() - t0, cpu() - c0
    before = _reader_before()
    if before is not None:       # the same pages through the reader before issue 34
        c0, t0 = cpu(), time.perf_counter()
        for _, rel, path in files:
            old = before(rel, path.read_bytes())
            findings(matcher, Page(old.kind, old.title, old.chunks, old.date))
        before_s = time.perf_counter() - t0
    words_file = root / "words.txt"
    words_file.write_text("\n".join(e.word for wl in lists.values() for e in wl.entries) + "\n")
    t0 = time.perf_counter()
    subprocess.run(["grep", "-rFc", "-f", str(words_file), str(root / "pages")],
                   capture_output=True)
    grep_s = time.perf_counter() - t0
    return {"pages": len(files), "words": len(matcher.rules), "compile_seconds": round(compile_s, 3),
            "seconds": round(secs, 2), "cpu_seconds": round(cpus, 2),
            "pages_per_second": round(len(files) / secs), "findings": found,
            "grep_F_seconds": round(grep_s, 2), "ratio_to_grep": round(secs / grep_s, 1),
            **({"body_only_reader": READER_BEFORE, "body_only_seconds": round(before_s, 2),
                "body_only_pages_per_second": round(len(files) / before_s),
                "ratio_to_body_only": round(secs / before_s, 2)} if before else {})}


# The page reader before issue 34 (body text only; no title, meta, alt, script, comment or
# CSS text), read from Git so that both are measured on the same pages in one run.
READER_BEFORE = "e527630"


def _reader_before():
    src = subprocess.run(["git", "-C", str(REPO), "show",
                          f"{READER_BEFORE}:controlplane/core/pagetext.py"],
                         capture_output=True, text=True)
    if src.returncode != 0:
        return None
    import types
    mod = types.ModuleType("pagetext_before")
    sys.modules[mod.__name__] = mod        # dataclasses look their module up
    exec(compile(src.stdout, "pagetext_before.py", "exec"), mod.__dict__)
    return mod.extract


def bench_index(inv, files, root: Path) -> tuple[dict, Path]:
    words = dictionary.words(inv)
    node_search.load_words(words)
    db = root / "index.db"
    idx = node_search.Index(str(db))
    idx.apply({"words": words})
    c0, t0 = cpu(), time.perf_counter()
    by_unit: dict[str, list] = {}
    for unit, rel, path in files:
        rec = pages.record(f"{unit}.qingshui.gov.cn", rel, "0" * 64, path.read_bytes(),
                           node_search.segment)
        by_unit.setdefault(unit, []).append(rec)
    seg_s = time.perf_counter() - t0
    for unit, recs in by_unit.items():
        idx.apply({"tenant": unit, "title": unit, "release": "r1", "base": None, "drop": [],
                   "put": recs})
    secs, cpus = time.perf_counter() - t0, cpu() - c0
    idx.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # Common words: the synthetic pages draw on ~150 words, so each of these is on about half
    # of all pages (a worst case). Rare: a document number that is on one page.
    queries = ["茶河镇", "乡村振兴 通知", "疫苗接种", "运动会 开幕", "低保 救助", "防汛 演练",
               "招生 报名", "预算 公开"]
    lat, rare = [], []
    for i in range(400):
        q = queries[i % len(queries)]
        t = time.perf_counter()
        idx.search(q, None if i % 2 else f"u{i % 300:03d}", "relevance" if i % 3 else "date")
        lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        res = idx.search(f"{(i * 149) % len(files):06d}")
        rare.append((time.perf_counter() - t) * 1000)
        assert res["total"] == 1, res
    # The same common queries with every match counted and ranked (the search before issue
    # 37 bounded them), side by side.
    bounds = node_search.WINDOW, node_search.COUNTED
    node_search.WINDOW = node_search.COUNTED = 10**9
    unbounded = []
    try:
        for i in range(40):
            q = queries[i % len(queries)]
            t = time.perf_counter()
            idx.search(q, None if i % 2 else f"u{i % 300:03d}", "relevance" if i % 3 else "date")
            unbounded.append((time.perf_counter() - t) * 1000)
    finally:
        node_search.WINDOW, node_search.COUNTED = bounds
    grep = []
    for q in ["茶河镇", "疫苗", "运动会", "低保", "防汛"]:
        t = time.perf_counter()
        subprocess.run(["grep", "-rl", q, str(root / "pages")], capture_output=True)
        grep.append((time.perf_counter() - t) * 1000)
    idx.close()
    return ({"pages": len(files), "segment_seconds": round(seg_s, 1),
             "build_seconds": round(secs, 1), "cpu_seconds": round(cpus, 1),
             "size_mb": round(db.stat().st_size / 2**20, 1),
             "pages_mb": round(sum(p.stat().st_size for _, _, p in files) / 2**20, 1),
             "common_query_ms_median": round(statistics.median(lat), 2),
             "common_query_ms_p99": round(pct(lat, 99), 2),
             "common_query_unbounded_ms_median": round(statistics.median(unbounded), 2),
             "ratio_unbounded_to_bounded": round(statistics.median(unbounded)
                                                 / statistics.median(lat), 1),
             "rare_query_ms_median": round(statistics.median(rare), 2),
             "rare_query_ms_p99": round(pct(rare, 99), 2),
             "grep_rl_ms_median": round(statistics.median(grep), 1),
             "ratio_grep_to_common_query": round(statistics.median(grep) / statistics.median(lat)),
             "ratio_grep_to_rare_query": round(statistics.median(grep) / statistics.median(rare))},
            db)


def ssh(address: str, cmd: str, data: bytes | None = None) -> str:
    from controlplane.lab import machines as lab
    return subprocess.run([*lab.ssh_argv(address), cmd], input=data, capture_output=True,
                          check=True, timeout=1800).stdout.decode()


WRK_LUA = """
local queries = {%s}
local i = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  i = (id - 1) * math.floor(#queries / 2)   -- the threads half the cycle apart
end
request = function()
  i = i + 1
  return wrk.format("GET", "/search?format=json&" .. queries[(i %% #queries) + 1])
end
"""


def _wrk(url: str, headers: dict[str, str], queries: list[str] | None = None,
         connections: int = 8) -> dict:
    """`queries`: each a query string's words, or (words, page)."""
    from urllib.parse import quote
    cmd = ["wrk", "-t2", f"-c{connections}", "-d10s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    script = None
    if queries:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(WRK_LUA % ", ".join(
            f'"q={quote(q)}"' if isinstance(q, str) else f'"q={quote(q[0])}&page={q[1]}"'
            for q in queries))
        script.close()
        cmd += ["-s", script.name]
    try:
        out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=60).stdout
    finally:
        if script:
            os.unlink(script.name)
    res: dict = {}
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["Requests/sec:"]:
            res["requests_per_second"] = float(parts[1])
        elif parts[:1] == ["Non-2xx"]:
            res["non_2xx"] = int(parts[-1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            v = parts[1]
            ms = float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") \
                else float(v[:-1]) * 1000
            res["ms_" + parts[0].rstrip("%")] = ms
    return res


SEARCH_BEFORE = "352e680"     # the search server before issue 37 bounded a query's cost
# ... and before its pages came from one ranking of their query (stop 57)
SEARCH_PAGED = "be28525"
# ... and before its answers were made in turn (stop 62)
SEARCH_UNTURNED = "20827eb"


def _queries(pages_count: int) -> dict[str, list]:
    rnd = random.Random(3)
    return {
        # One common word each (通知, 公开 ...), on any of its 100 result pages: 4,000 distinct
        # queries, none answered from the answer cache, asked by 50 clients at once (issue
        # 37's target). wrk's two threads run half the cycle apart, so a query comes back
        # after 4,000 requests, about 2,000 a worker, and a worker keeps 1,024 answers (stop
        # 62: with 20 words, 2,000 queries, a reviewer counted 20-48 % answered from the
        # cache). Since stop 57 the 40 words are ranked once each (a worker keeps 512
        # rankings) and every page is a slice of its word's ranking.
        "common_word_uncached": [(w, p) for p in range(1, 101) for w in VOCAB[:40]],
        # 2,000 distinct pairs of common words, in a cycle longer than the server's answer
        # cache: every request is ranked anew (8 clients, and 50 below).
        "common_words_uncached": [f"{a} {b}" for a in VOCAB[:50] for b in VOCAB[50:90]][:2000],
        "common_words_popular": ["乡村振兴", "疫苗 接种", "运动会 开幕", "低保 救助", "防汛 演练",
                                 "预算 公开"],
        "rare_word": [f"{rnd.randrange(pages_count):06d}" for _ in range(50)],
    }


def _quiet(procs: list[subprocess.Popen], settle: float = 0.5, limit: float = 120) -> bool:
    """Until the servers (their workers too) have used no CPU for `settle` seconds, at most
    `limit` seconds; False if they never rested (the figures then say so)."""
    import psutil

    def used() -> float:
        total = 0.0
        for proc in procs:
            try:
                top = psutil.Process(proc.pid)
                for p in [top, *top.children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                pass
        return total

    deadline = time.monotonic() + limit
    before = used()
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = used()
        if now - before < 0.02:
            return True
        before = now
    return False


def bench_search_loopback(db: Path, pages_count: int) -> dict:
    """The node's search server on this machine's loopback, today's next to the one before
    its pages came from one ranking (SEARCH_PAGED) and the one before issue 37
    (SEARCH_BEFORE), both read from Git, on the same index, taking turns: what each change
    gained, and whether a rare word lost anything. No nginx, no lab."""
    tmp = Path(tempfile.mkdtemp(prefix="govhost-bench-search-"))
    scripts = {"today": REPO / "govhost_node" / "search.py"}
    for label, rev in (("unturned", SEARCH_UNTURNED), ("paged", SEARCH_PAGED),
                       ("before", SEARCH_BEFORE)):
        scripts[label] = tmp / f"search_{label}.py"
        scripts[label].write_bytes(subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:govhost_node/search.py"],
            capture_output=True, check=True).stdout)
    from tests.helpers import free_port
    servers = {}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        for label, script in scripts.items():
            port = free_port()
            servers[label] = (port, subprocess.Popen(
                [sys.executable, str(script), "serve", "--listen", f"127.0.0.1:{port}",
                 "--db", str(db)], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        time.sleep(4)                                   # jieba's dictionary
        out: dict = {"before": SEARCH_BEFORE, "paged": SEARCH_PAGED,
                     "unturned": SEARCH_UNTURNED}
        queries = _queries(pages_count)
        for name, query_set, clients in (
                ("common_word_uncached", "common_word_uncached", 50),
                # the same again on the same servers: their 40 rankings kept and their pages
                # read once, as on a node that has answered for a while (the run above is
                # a server's first ten seconds)
                ("common_word_uncached_warm", "common_word_uncached", 50),
                ("common_words_uncached", "common_words_uncached", 8),
                ("common_words_uncached_50_clients", "common_words_uncached", 50),
                ("common_words_popular", "common_words_popular", 8),
                ("rare_word", "rare_word", 8)):
            for label in servers:
                port, proc = servers[label]
                if proc.poll() is not None:
                    raise SystemExit(f"the {label} search server stopped")
                # the server measured before may still be answering what wrk asked it
                # (the oldest, at 8 answers a second, for seconds after wrk has gone): the
                # next one is measured on a machine at rest, not against that
                if not _quiet([p for _, p in servers.values()]):
                    out["never_quiet"] = out.get("never_quiet", 0) + 1
                out.setdefault(name, {})[label] = _wrk(f"http://127.0.0.1:{port}/search", {},
                                                       queries[query_set], clients)
            t, g, b = (out[name][k].get("requests_per_second") or 0
                       for k in ("today", "paged", "before"))
            out[name]["today_x_before"] = round(t / b, 2) if b else None
            out[name]["today_x_paged"] = round(t / g, 2) if g else None
            # what answering in turn changed: the tail, at the same throughput
            u = out[name]["unturned"]
            if u.get("ms_99") and out[name]["today"].get("ms_99"):
                out[name]["p99_unturned_over_today"] = round(
                    u["ms_99"] / out[name]["today"]["ms_99"], 2)
        return out
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_search_http(db: Path, pages_count: int) -> dict:
    """The big index on n1, queried on its search server (nginx in front would answer most of
    a wrk load with 429: the sites' rate limit), next to a static page through nginx."""
    from controlplane.lab import network
    # The search server takes connections from the cluster only (nftables); wrk runs on the
    # control machine, let in for the bench and out again after it.
    opening = f"nft add element inet govhost_n1 cluster4 {{ {network.HOST4} }}"
    closing = f"nft delete element inet govhost_n1 cluster4 {{ {network.HOST4} }}"
    ssh("10.77.0.11", opening + " 2>/dev/null || true")
    ssh("10.77.0.11", "kill $(cat /run/govhost-search.pid) 2>/dev/null; sleep 0.5; "
                     "mkdir -p /var/lib/govhost/search; "
                     "cat > /var/lib/govhost/search/bench.db", db.read_bytes())
    ssh("10.77.0.11", "cd /var/lib/govhost/search && mv index.db index.db.keep 2>/dev/null; "
                     "rm -f index.db-wal index.db-shm; mv bench.db index.db; "
                     "/usr/local/sbin/govhost-node agents 10.77.0.11")
    time.sleep(3)
    queries = _queries(pages_count)
    common, rare = queries["common_words_popular"], queries["rare_word"]
    pairs, singles = queries["common_words_uncached"], queries["common_word_uncached"]
    server = "http://10.77.0.11:9275/search"
    try:
        return {"county_common_word_uncached_50_clients": _wrk(server, {}, singles, 50),
                # again, the server warm (its rankings kept, its pages read once)
                "county_common_word_uncached_50_clients_warm": _wrk(server, {}, singles, 50),
                "county_common_words_uncached": _wrk(server, {}, pairs),
                "county_common_words_popular": _wrk(server, {}, common),
                "county_rare_word": _wrk(server, {}, rare),
                "unit_common_words_uncached": _wrk(server, {"X-Govhost-Unit": "u007"}, pairs),
                "nginx_health_page": _wrk("http://10.77.0.11/health",
                                          {"Host": "govhost-probe"})}
    finally:
        ssh("10.77.0.11", "kill $(cat /run/govhost-search.pid) 2>/dev/null; sleep 0.5; "
                         "cd /var/lib/govhost/search && rm -f index.db index.db-wal index.db-shm;"
                         " mv index.db.keep index.db 2>/dev/null; "
                         "/usr/local/sbin/govhost-node agents 10.77.0.11; " + closing)


TAMPER_ON_NODE = r'''
import hashlib, json, os, random, sys, time
units, files, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = "/srv/govhost/sites"
if sys.argv[4] == "make":
    for u in range(units):
        rel = os.path.join(base, f"zzbench{u:03d}", "releases", "r1")
        os.makedirs(os.path.join(rel, "news"), exist_ok=True)
        lines = []
        for f in range(files):
            data = (f"<p>unit {u} page {f}</p>" * 20).encode()
            name = f"news/p{f:03d}.html"
            with open(os.path.join(rel, name), "wb") as fh:
                fh.write(data)
            os.chmod(os.path.join(rel, name), 0o644)
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        open(os.path.join(rel, ".digests"), "w").writelines(lines)
        link = os.path.join(base, f"zzbench{u:03d}", "current")
        if not os.path.islink(link):
            os.symlink("releases/r1", link)
    sys.exit(0)
if sys.argv[4] == "clean":
    import shutil
    for u in range(units):
        shutil.rmtree(os.path.join(base, f"zzbench{u:03d}"), ignore_errors=True)
    sys.exit(0)
rnd = random.Random(5)
lat = []
for i in range(rounds):
    u, f = rnd.randrange(units), rnd.randrange(files)
    path = os.path.join(base, f"zzbench{u:03d}", "current", "news", f"p{f:03d}.html")
    good = open(path, "rb").read()
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        fh.write(b"<h1>defaced</h1>")
    while True:
        try:
            if open(path, "rb").read() == good:
                break
        except OSError:
            pass
        if time.perf_counter() - t0 > 30:
            break
        time.sleep(0.001)
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.05)
print(json.dumps(lat))
'''


def bench_tamper(units: int, files: int = 20, rounds: int = 200) -> dict:
    script = "/tmp/govhost-bench-tamper.py"
    ssh("10.77.0.11", f"cat > {script}", TAMPER_ON_NODE.encode())
    ssh("10.77.0.11", f"python3 {script} {units} {files} 0 make")
    try:
        t0 = time.perf_counter()
        ssh("10.77.0.11", "kill $(cat /run/govhost-tamper.pid) 2>/dev/null; sleep 0.3; "
                         "/usr/local/sbin/govhost-node agents 10.77.0.11")
        while True:          # the watcher adopted every unit (its start-up full check)
            st = json.loads(ssh("10.77.0.11", "cat /var/lib/govhost/tamper/state.json"))
            if len([s for s in st.get("watching", {}) if s.startswith("zzbench")]) == units \
                    and st.get("last_full_check", 0) > 0:
                break
            time.sleep(0.5)
        start_s = time.perf_counter() - t0
        lat = json.loads(ssh("10.77.0.11", f"python3 {script} {units} {files} {rounds} run"))
    finally:
        ssh("10.77.0.11", f"python3 {script} {units} {files} 0 clean; rm -f {script}")
    return {"units": units, "files": units * files, "rounds": rounds,
            "watcher_start_seconds": round(start_s, 1),
            "put_back_ms_median": round(statistics.median(lat), 1),
            "put_back_ms_p99": round(pct(lat, 99), 1), "put_back_ms_max": round(max(lat), 1)}


def bench_message_screen(inv, rounds: int = 200) -> dict:
    """A 5,000-character message (the longest a citizen may send) with one listed word at
    its end, screened as a node screens it and as the control machine's matcher reads it."""
    from controlplane.core import wordlists
    from controlplane.wording.match import Matcher
    from govhost_node.words import Screen
    lists = dict(inv.wording)
    screen, matcher = Screen(wordlists.for_messages(lists)), Matcher(lists)
    rnd = random.Random(7)
    text = "".join(rnd.choice(VOCAB) for _ in range(2500))[:4990] + "代开发票"
    assert [f.word for f in screen.find(text)] == ["代开发票"]

    def per_call(fn) -> float:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn(text)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000
    node_ms, control_ms = per_call(screen.find), per_call(matcher.find)
    return {"message_chars": len(text), "node_screen_ms": round(node_ms, 3),
            "control_matcher_ms": round(control_ms, 3),
            "node_x_control": round(node_ms / control_ms, 2)}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 60_000
    units = int(args[1]) if len(args) > 1 else 300
    use_lab = "--no-lab" not in sys.argv
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-safety-"))
    try:
        # the inventory's state (its secret) in the scratch directory, removed with it
        inv = inventory.load(REPO / "inventory", work / "state")
        t0 = time.perf_counter()
        files = make_pages(work / "pages", count, units)
        print(f"generated {count} pages for {units} units in {time.perf_counter() - t0:.1f} s",
              flush=True)
        figures: dict = {"bench": "content_safety", "pages": count, "units": units}
        if "--search" not in sys.argv:
            w = figures["wording"] = bench_wording(inv, files, work)
            print("wording:", json.dumps(w, ensure_ascii=False), flush=True)
        if "--search" not in sys.argv:
            m = figures["message_screen"] = bench_message_screen(inv)
            print("message screen:", json.dumps(m), flush=True)
        s, db = bench_index(inv, files, work)
        figures["search_index"] = s
        print("search index:", json.dumps(s, ensure_ascii=False), flush=True)
        if "--search" in sys.argv and shutil.which("wrk"):
            lb = figures["search_loopback"] = bench_search_loopback(db, count)
            print("search server on loopback, today and before:", json.dumps(lb), flush=True)
        if use_lab:
            from controlplane.lab import machines as lab
            if not all(n.ssh_open for n in lab.up(3)[:3]):
                sys.exit("lab nodes are not answering")
            inv_dir = work / "inventory"
            shutil.copytree(REPO / "inventory", inv_dir,
                            ignore=shutil.ignore_patterns(".govhost"))
            applied(inv_dir)
            h = figures["search_http"] = bench_search_http(db, count)
            print("search server on n1 (wrk -t2 -c8 -d10s):", json.dumps(h), flush=True)
            if "--search" not in sys.argv:
                t = figures["tamper"] = bench_tamper(units)
                print("tamper:", json.dumps(t), flush=True)
        if "--json" in sys.argv:
            print(json.dumps(figures, ensure_ascii=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
