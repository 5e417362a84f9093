"""The console on the lab, in a real browser: `govhost console` serving the example county,
people added with `govhost user add`, headless Chromium (Selenium, Debian's chromium-driver)
logging in. An editor changes the first password and sees the unit's page with its live
status through the three nodes; a reviewer logs in with a TOTP code; another unit's page
is refused; the operator sees the county ranked by days since the last update. The
browser reaches the console through a node's nginx (console.qingshui.gov.cn), as units'
staff do. Screenshots of the pages are kept in test-artifacts/."""
import json
import subprocess
import time
import urllib.error
import urllib.request

import pyotp
import pytest

from controlplane.compliance import browser
from controlplane.core import accounts
from tests.helpers import Sink, example_inventory, free_port, lab_ssh

from .conftest import REPO, govhost, with_county_keys
from .test_apply_lab import NODES, apply_json
from .test_tenants_lab import page, reset_content

HOST = "console.qingshui.gov.cn"
PREVIEW = "caizheng.preview.qingshui.gov.cn"       # one preview host per unit
PREVIEW_JIAOYU = "jiaoyu.preview.qingshui.gov.cn"
SHOTS = REPO / "test-artifacts" / "console"


@pytest.fixture(scope="module")
def console(lab_cluster, tmp_path_factory, county_keys):
    if browser.missing():
        pytest.fail(browser.missing())
    inv = tmp_path_factory.mktemp("console") / "inventory"
    with_county_keys(example_inventory(inv), county_keys)
    with (inv / "tenants" / "caizheng.yaml").open("a") as f:
        f.write("review: {levels: [unit, county]}\n")       # the county checks it too
    # Every node's nginx proxies console.qingshui.gov.cn to the console's address in
    # cluster.yaml: a free port here, so that a console an operator left running on the
    # default port does not answer instead.
    port = free_port()
    sink = Sink()            # the county's mail server: enrolment links and notices
    cluster = (inv / "cluster.yaml").read_text().replace("  port: 8090\n", f"  port: {port}\n")
    assert f"port: {port}" in cluster and "smarthost: 127.0.0.1:2525" in cluster
    cluster = cluster.replace("smarthost: 127.0.0.1:2525", f"smarthost: 127.0.0.1:{sink.port}")
    (inv / "cluster.yaml").write_text(cluster)
    apply_json(inv)
    people = {}
    for name, unit, role in (("wangfang", "jiaoyu", "editor"), ("lisi", "jiaoyu", "reviewer"),
                             ("zhaoliu", None, "operator"), ("qianli", "caizheng", "editor"),
                             ("chenjing", "caizheng", "reviewer"), ("sunqi", None, "operator"),
                             ("zhoujie", "jiaoyu", "admin"), ("wuhua", None, "operator")):
        args = ["user", "add", name, "--display", name, "--role", role, "--json"]
        proc = govhost(inv, *args, *(["--unit", unit] if unit else []), check=True)
        people[name] = json.loads(proc.stdout)
    # No --listen: the console takes its address from cluster.yaml, as the service does.
    proc = subprocess.Popen(["govhost", "--inventory", str(inv), "console", "--http"],
                            stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://10.77.8.1:{port}/login", timeout=2)
            raise AssertionError("the console answered a request that did not come "
                                 "through a node's nginx")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403       # up, and taking only the nodes' nginx
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.3)
    SHOTS.mkdir(parents=True, exist_ok=True)
    reset_content("jiaoyu")
    reset_content("caizheng")
    # The browser reaches the console through n1's nginx, as units' staff do.
    # Two processes: the broker (root) and its web process, as the console's own account.
    from controlplane.core import paths
    from controlplane.security import check
    web = [q for q in check.console_processes() if q["ppid"] == proc.pid]
    assert [(q["part"], q["user"]) for q in web] == [("web", paths.CONSOLE_ACCOUNT)], web
    yield {"inv": inv, "url": f"http://{HOST}", "people": people, "port": port, "mail": sink,
           "pid": proc.pid, "web_pid": web[0]["pid"]}
    sink.stop()
    proc.terminate()
    proc.wait(10)
    reset_content("jiaoyu")
    reset_content("caizheng")


def _chrome(preview_via: str = "10.77.0.11"):
    return browser.driver("10.77.0.11", [HOST], browser.Connection(0, 0), 300,
                          {PREVIEW: preview_via, PREVIEW_JIAOYU: preview_via,
                           "tiyu.qingshui.gov.cn": "10.77.0.11"})


def _click(chrome, by, selector):
    """Click and wait for the next page: a click returns before the browser has left the
    page it was on."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    old = chrome.find_element(By.TAG_NAME, "html")
    chrome.find_element(by, selector).click()

    def left(_) -> bool:
        # Chromium may answer a look at the old page mid-navigation with "Node ... does not
        # belong to the document" instead of a stale element: the page is gone either way.
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            return True
    WebDriverWait(chrome, 120).until(left)
    WebDriverWait(chrome, 120).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def _first_login(chrome, url, person: dict, new_password: str) -> None:
    """Log in with the first password (and the code, for those with a second factor) and
    change it, as the console asks at the first login."""
    from selenium.webdriver.common.by import By
    secret = person["totp_secret"]
    _login(chrome, url, person["name"], person["password"],
           pyotp.TOTP(secret).now() if secret else "")
    assert chrome.current_url.endswith("/password"), chrome.page_source[-1500:]
    for field, value in (("old", person["password"]), ("new", new_password),
                         ("again", new_password)):
        chrome.find_element(By.ID, field).send_keys(value)
    _click(chrome, By.CSS_SELECTOR, "main button[type=submit]")


def _login(chrome, url, name, password, code=""):
    from selenium.webdriver.common.by import By
    chrome.get(f"{url}/login?lang=zh")          # Chinese, whatever the browser asks for
    chrome.find_element(By.ID, "name").send_keys(name)
    chrome.find_element(By.ID, "password").send_keys(password)
    if code:
        chrome.find_element(By.ID, "code").send_keys(code)
    _click(chrome, By.CSS_SELECTOR, "main button[type=submit]")


def test_an_editor_changes_the_first_password_and_sees_the_units_live_status(console):
    from selenium.webdriver.common.by import By
    url, first = console["url"], console["people"]["wangfang"]["password"]
    chrome = _chrome()
    try:
        chrome.get(f"{url}/login?lang=zh")         # Chinese, whatever the browser asks for
        chrome.save_screenshot(str(SHOTS / "login.png"))
        _login(chrome, url, "wangfang", "wrong-password-1")
        assert "用户名、密码或验证码不正确" in chrome.page_source
        _login(chrome, url, "wangfang", first)
        assert chrome.current_url.endswith("/password")
        for field, value in (("old", first), ("new", "新的密码-abc-123"),
                             ("again", "新的密码-abc-123")):
            chrome.find_element(By.ID, field).send_keys(value)
        _click(chrome, By.CSS_SELECTOR, "main button[type=submit]")
        assert chrome.current_url.endswith("/units/jiaoyu"), chrome.page_source[-1500:]
        text = chrome.find_element(By.TAG_NAME, "main").text
        assert "青水县教育局" in text
        for node in ("n1", "n2", "n3"):
            assert f"{node}\n正常" in text or f"{node} 正常" in text, text
        chrome.save_screenshot(str(SHOTS / "unit.png"))
        chrome.get(f"{url}/units/chahe")
        assert "无权访问此页面" in chrome.page_source

        # The site as a zip, uploaded through the browser, submitted, live on every node.
        import zipfile
        site = console["inv"].parent / "site.zip"
        with zipfile.ZipFile(site, "w") as zf:
            zf.writestr("index.html", "<html><body><h1>青水县教育局 控制台上传</h1>"
                                      "<p>2026-12-02 通知</p></body></html>")
            zf.writestr("xwdt/1.html", "<p>新闻</p>")
        chrome.get(f"{url}/units/jiaoyu")
        _click(chrome, By.ID, "upload-link")
        chrome.find_element(By.ID, "site").send_keys(str(site))
        _click(chrome, By.ID, "upload")
        assert "已上传" in chrome.page_source and "2 个文件" in chrome.page_source
        chrome.save_screenshot(str(SHOTS / "upload.png"))
        _click(chrome, By.ID, "submit")
        results = chrome.find_elements(By.ID, "result")
        assert results, chrome.find_element(By.TAG_NAME, "main").text
        result = results[0].text
        assert "新版本已在所有服务器上线" in result, result
        for address in NODES.values():
            status, body = page("jiaoyu", address)
            assert status == 200 and "控制台上传" in body, (address, status)
        # One more file, chosen alone, into a folder next to what the zip brought.
        single = console["inv"].parent / "tongzhi.html"
        single.write_text("<p>单独上传的通知</p>")
        chrome.get(f"{url}/units/jiaoyu/upload")
        chrome.find_element(By.ID, "files").send_keys(str(single))
        chrome.find_element(By.ID, "folder").send_keys("xwdt")
        _click(chrome, By.ID, "upload-files")
        assert "xwdt/tongzhi.html" in chrome.find_element(By.ID, "uploaded").text
        _click(chrome, By.ID, "submit")
        assert "新版本已在所有服务器上线" in chrome.find_element(By.ID, "result").text
        for address in NODES.values():
            assert "单独上传的通知" in page("jiaoyu", address, "/xwdt/tongzhi.html")[1]
            assert page("jiaoyu", address, "/xwdt/1.html")[0] == 200
        chrome.get(f"{url}/units/jiaoyu")
        assert "wangfang" in chrome.find_element(By.TAG_NAME, "main").text  # published by
        chrome.get(f"{url}/units/jiaoyu?lang=en")
        assert "The site on each server" in chrome.page_source
        # The visits the pages above made (curl through every node), counted from the
        # nodes' logs as the compliance check counts them, on the unit's page.
        govhost(console["inv"], "compliance", "yearly", "--year", time.strftime("%Y"),
                "--format", "json", check=True)
        chrome.get(f"{url}/units/jiaoyu?lang=zh")
        visits = chrome.find_element(By.ID, "visits").text
        assert time.strftime("%Y-%m-%d") in visits, visits
        assert "/" in chrome.find_element(By.ID, "top-pages").text
    finally:
        chrome.quit()


def test_a_reviewer_needs_the_code_and_the_operator_sees_the_county(console):
    from selenium.webdriver.common.by import By
    url, people = console["url"], console["people"]
    chrome = _chrome()
    try:
        chrome.get(f"{url}/login?lang=zh")
        _login(chrome, url, "lisi", people["lisi"]["password"], "000000")
        assert "用户名、密码或验证码不正确" in chrome.page_source
        _login(chrome, url, "lisi", people["lisi"]["password"],
               pyotp.TOTP(people["lisi"]["totp_secret"]).now())
        assert chrome.current_url.endswith("/password")
        chrome.delete_all_cookies()
        chrome.get(f"{url}/login?lang=zh")
        _login(chrome, url, "zhaoliu", people["zhaoliu"]["password"],
               pyotp.TOTP(people["zhaoliu"]["totp_secret"]).now())
        pw = people["zhaoliu"]["password"]
        for field, value in (("old", pw), ("new", "operator-pass-12"),
                             ("again", "operator-pass-12")):
            chrome.find_element(By.ID, field).send_keys(value)
        _click(chrome, By.CSS_SELECTOR, "main button[type=submit]")
        rows = chrome.find_elements(By.CSS_SELECTOR, "main table tr")
        assert len(rows) == 1 + 19                     # every unit of the example county
        assert "从未更新" in rows[1].text               # never updated ranks first
        chrome.save_screenshot(str(SHOTS / "overview.png"))
        chrome.get(f"{url}/units/chahe")
        assert "茶河镇" in chrome.page_source
    finally:
        chrome.quit()


def test_a_release_goes_live_only_after_the_unit_and_the_county_approve_it(console):
    """caizheng reviews at two levels (`review: {levels: [unit, county]}`): the editor's
    submission waits; the unit's reviewer approves with a comment and it still waits; the
    county operator approves and it is live on every node. Each decision is audited in the
    person's name."""
    import zipfile

    from selenium.webdriver.common.by import By

    from controlplane.core.county import County
    url, people, inv = console["url"], console["people"], console["inv"]
    first = inv.parent / "caizheng-v1"
    first.mkdir()
    (first / "index.html").write_text("<html><body><h1>青水县财政局 第一版</h1>"
                                      "<p>2026-12-01 通知</p></body></html>")
    govhost(inv, "lab", "upload", "caizheng", str(first), check=True)
    v1 = json.loads(govhost(inv, "publish", "caizheng", "--json", check=True).stdout)
    assert v1["status"] == "pending"
    for _ in range(2):       # the county's operators at the control machine, both levels
        govhost(inv, "review", "approve", "caizheng", v1["release"], check=True)
    site = inv.parent / "caizheng.zip"
    with zipfile.ZipFile(site, "w") as zf:
        zf.writestr("index.html", "<html><body><h1>青水县财政局 两级审核</h1>"
                                  "<p>2026-12-02 预算公开</p></body></html>")
    chrome = _chrome()
    try:
        _first_login(chrome, url, people["qianli"], "财政-编辑-密码-2026-a")
        chrome.get(f"{url}/units/caizheng/upload")
        chrome.find_element(By.ID, "site").send_keys(str(site))
        _click(chrome, By.ID, "upload")
        _click(chrome, By.ID, "submit")
        assert "新版本正在等待审核" in chrome.find_element(By.ID, "result").text
        rid = chrome.find_element(By.ID, "result").text.split("(")[-1].rstrip(")")
        for address in NODES.values():
            assert "两级审核" not in page("caizheng", address)[1]
        chrome.get(f"{url}/units/caizheng/reviews/{rid}")
        assert not chrome.find_elements(By.ID, "approve")      # an editor does not review

        chrome.delete_all_cookies()
        _first_login(chrome, url, people["chenjing"], "财政-审核-密码-2026-b")
        chrome.get(f"{url}/units/caizheng")
        _click(chrome, By.CSS_SELECTOR, "a.release-pending")
        assert "index.html" in chrome.find_element(By.ID, "changes").text
        chrome.find_element(By.ID, "comment").send_keys("<b>第一级</b>：内容无误")
        chrome.save_screenshot(str(SHOTS / "review.png"))
        _click(chrome, By.ID, "approve")
        assert "等待下一级审核" in chrome.find_element(By.ID, "result").text
        chain = chrome.find_element(By.ID, "chain").text
        assert "chenjing" in chain and "<b>第一级</b>：内容无误" in chain     # shown as text
        for address in NODES.values():
            assert "两级审核" not in page("caizheng", address)[1]

        chrome.delete_all_cookies()
        _first_login(chrome, url, people["sunqi"], "county-operator-pass-2")
        chrome.get(f"{url}/units/caizheng/reviews/{rid}")
        _click(chrome, By.ID, "approve")
        assert "审核全部通过" in chrome.find_element(By.ID, "result").text
        chrome.save_screenshot(str(SHOTS / "review-approved.png"))
        for address in NODES.values():
            status, body = page("caizheng", address)
            assert status == 200 and "两级审核" in body, (address, status)

        # A rollback goes through the same steps: the editor proposes the first release,
        # the unit's reviewer and then the county approve, and it is live everywhere.
        chrome.delete_all_cookies()
        _login(chrome, url, "qianli", "财政-编辑-密码-2026-a")
        chrome.get(f"{url}/units/caizheng")
        _click(chrome, By.CSS_SELECTOR, "button.propose-rollback")
        assert chrome.find_element(By.ID, "target").text == v1["release"]
        proposal = chrome.current_url
        for who, password in (("chenjing", "财政-审核-密码-2026-b"),
                              ("sunqi", "county-operator-pass-2")):
            assert "两级审核" in page("caizheng", NODES["n1"])[1]    # not rolled back yet
            chrome.delete_all_cookies()
            _login(chrome, url, who, password,
                   pyotp.TOTP(people[who]["totp_secret"]).at(time.time() + 30))
            chrome.get(proposal)
            _click(chrome, By.ID, "approve")
        assert "已回滚" in chrome.find_element(By.ID, "result").text
        chrome.save_screenshot(str(SHOTS / "rollback.png"))
    finally:
        chrome.quit()
    for address in NODES.values():
        status, body = page("caizheng", address)
        assert status == 200 and "第一版" in body, (address, status)
    with County(inv).state() as st:
        log = st.audit_log(5000)
    decided = [(e["actor"], e["detail"].get("level")) for e in log
               if e["action"] == "content.review.approved" and rid in e["target"]]
    assert sorted(decided) == [("chenjing", 1), ("sunqi", 2)]
    rolled = [(e["actor"], e["detail"].get("level")) for e in log
              if e["action"] == "content.review.approved" and "rollback:" in e["target"]]
    assert sorted(rolled) == [("chenjing", 1), ("sunqi", 2)]
    assert any(e["action"] == "content.rollback-target" and e["actor"] == "sunqi"
               for e in log)


def _preview(address: str, path: str, cookie: str = "", query: str = "",
             extra: dict | None = None, host: str = PREVIEW):
    """A request to a preview host (caizheng's unless `host`) through one node:
    (status, headers, body); status 444 when nginx closed without an answer."""
    import http.client
    conn = http.client.HTTPConnection(address, 80, timeout=10)
    conn.request("GET", path + (f"?{query}" if query else ""),
                 headers={"Host": host, **({"Cookie": cookie} if cookie else {}),
                          **(extra or {})})
    try:
        r = conn.getresponse()
    except http.client.RemoteDisconnected:
        return 444, {}, ""
    out = (r.status, {k.lower(): v for k, v in r.getheaders()},
           r.read().decode(errors="replace"))
    conn.close()
    return out


def test_a_pending_release_is_previewed_through_every_node_only_with_a_signed_link(console):
    """The editor opens the pending release from the console: a signed link, a cookie, the
    release as the public will see it, through the node that holds it and through the one
    that forwards to it. The public site is unchanged; a tampered, expired or other unit's
    link gets nothing; previews are never indexed nor in the unit's own log. Each unit has
    a preview host of its own: caizheng's link and cookie open nothing on jiaoyu's, and the
    old host shared by every unit serves nothing."""
    from urllib.parse import parse_qs, urlencode, urlparse

    from selenium.webdriver.common.by import By

    from controlplane.core.county import County
    from controlplane.sites import preview
    url, inv = console["url"], console["inv"]
    draft = inv.parent / "caizheng-draft"
    draft.mkdir()
    (draft / "index.html").write_text("<html><body><h1>财政局 预览稿</h1>"
                                      "<a href='/yusuan/'>预算</a></body></html>")
    (draft / "yusuan").mkdir()
    (draft / "yusuan" / "index.html").write_text("<p>2026 年预算 预览稿</p>")
    govhost(inv, "lab", "upload", "caizheng", str(draft), check=True)
    rid = json.loads(govhost(inv, "publish", "caizheng", "--json", check=True).stdout)["release"]
    c = County(inv)
    with c.state() as st:
        replicas = st.placements()["caizheng"]
    outside = next(n for n in NODES if n not in replicas)
    chrome = _chrome(preview_via=NODES[outside])     # a node that must forward the preview
    try:
        _login(chrome, url, "qianli", "财政-编辑-密码-2026-a")
        chrome.get(f"{url}/units/caizheng/reviews/{rid}")
        # The button opens a new tab; here it opens in this one.
        chrome.execute_script("document.getElementById('preview-form').removeAttribute("
                              "'target')")
        _click(chrome, By.ID, "preview")
        assert chrome.current_url == f"http://{PREVIEW}/", chrome.current_url
        assert "预览稿" in chrome.find_element(By.TAG_NAME, "h1").text
        _click(chrome, By.LINK_TEXT, "预算")              # the site's own links work
        assert "2026 年预算 预览稿" in chrome.page_source
        chrome.save_screenshot(str(SHOTS / "preview.png"))
        cookie = next(k for k in chrome.get_cookies() if k["name"] == preview.COOKIE)
        assert cookie["httpOnly"]
    finally:
        chrome.quit()
    jar = f"{preview.COOKIE}={cookie['value']}"
    for name, address in NODES.items():
        status, headers, body = _preview(address, "/yusuan/", jar)
        assert status == 200 and "预览稿" in body, (name, status)
        assert "noindex" in headers["x-robots-tag"], headers
        assert "预览稿" not in page("caizheng", address)[1]         # the public site
    assert _preview(NODES["n1"], "/robots.txt", jar)[2].endswith("Disallow: /\n")
    # Issue 31, item 6: a preview host hands out no service worker script and none of
    # govhost's own files of the release; another unit's host (where a page of caizheng's
    # could otherwise have planted a worker) takes neither caizheng's cookie nor its link,
    # and the host every unit once shared serves no preview at all.
    for name, address in NODES.items():
        assert _preview(address, "/sw.js", jar, extra={"Service-Worker": "script"})[0] == 403
        assert _preview(address, "/.meta.json", jar)[0] == 404, name
        assert _preview(address, "/.digests", jar)[0] == 404, name
        status, _, body = _preview(address, "/yusuan/", jar, host=PREVIEW_JIAOYU)
        assert status == 403 and "预览稿" not in body, (name, status)
        status, _, body = _preview(address, "/yusuan/", jar, host="preview.qingshui.gov.cn")
        assert status == 444 and "预览稿" not in body, (name, status)

    # The same link from the CLI (`govhost review preview`), then links nobody gave.
    signed = json.loads(govhost(inv, "review", "preview", "caizheng", rid, "--json",
                                check=True).stdout)
    assert urlparse(signed["url"]).hostname == PREVIEW
    q = {k: v[0] for k, v in parse_qs(urlparse(signed["url"]).query).items()}
    assert q["r"] == rid and "u" not in q         # the unit is the host's, never the link's
    status, headers, _ = _preview(NODES["n2"], preview.ENTRY, query=urlencode(q))
    assert status == 303 and preview.COOKIE in headers["set-cookie"]
    key = preview.key(c.inv.secret)
    past = preview.link(PREVIEW, False, key, "caizheng", rid, time.time() - 7200, 60)
    forged = {**q, "r": rid[:-1] + ("0" if rid[-1] != "0" else "1")}
    # A middle character, changed to one it is not: the last characters of a signature can
    # already be "AA", and the last one carries padding bits that decoding may ignore.
    sig = q["s"]
    tampered = sig[:8] + ("B" if sig[8] != "B" else "C") + sig[9:]
    for bad, want in ((urlencode({**q, "s": tampered}), 403),
                      (urlparse(str(past["url"])).query, 410),
                      (urlencode(forged), 403),
                      (urlencode({**q, "r": rid + "\r\nX: 1"}), 403)):
        assert _preview(NODES["n1"], preview.ENTRY, query=bad)[0] == want, bad
    # caizheng's own link, opened on jiaoyu's preview host
    assert _preview(NODES["n1"], preview.ENTRY, query=urlencode(q),
                    host=PREVIEW_JIAOYU)[0] == 403
    for cookie_value, want in ((f"{rid}.{q['e']}.{tampered}", 403),
                               (f"caizheng.{rid}.{q['e']}.{q['s']}", 403),
                               (f"{past['release']}.{past['expires']}."
                                f"{parse_qs(urlparse(str(past['url'])).query)['s'][0]}", 410),
                               ("", 403)):
        got = _preview(NODES["n3"], "/", f"{preview.COOKIE}={cookie_value}")[0]
        assert got == want, (cookie_value, got)
    for address in NODES.values():
        log = lab_ssh(address, "cat /var/log/govhost/tenants/caizheng/access.log 2>/dev/null;"
                               " true")
        assert "yusuan" not in log and preview.ENTRY not in log
    assert "yusuan" in lab_ssh(NODES[outside], "cat /var/log/govhost/preview-access.log")
    with c.state() as st:
        issued = [e for e in st.audit_log(5000) if e["action"] == "content.preview"]
    assert {(e["actor"], e["target"]) for e in issued} == {("qianli", f"caizheng/{rid}"),
                                                           ("root", f"caizheng/{rid}")}
    govhost(inv, "review", "reject", "caizheng", rid, "--comment", "预览测试", check=True)


def test_a_unit_requests_a_site_and_the_county_approves_it(console):
    """A unit without a site fills in the form (a mistake is named by field), follows its
    request with the link it was given; the operator sees the manifest and its plan and
    approves; the manifest is in inventory/tenants/ and every node serves the new unit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    url, inv, people = console["url"], console["inv"], console["people"]
    chrome = _chrome()
    try:
        chrome.get(f"{url}/login?lang=zh")
        _click(chrome, By.ID, "request-link")
        for field, value in (("title", "青水县体育局"), ("name", "tiyu"),
                             ("contact_name", "赵敏"), ("contact_email", "not-an-address"),
                             ("contact_phone", "0571-6512-3399"),
                             ("columns", "/tzgg/ 通知公告 notices\n/xwdt/ 体育新闻 news"),
                             ("site_code", "3301270099"), ("icp", "浙ICP备00000001号"),
                             ("psb", "浙公网安备 33012702000001号")):
            chrome.find_element(By.ID, field).send_keys(value)
        Select(chrome.find_element(By.ID, "review")).select_by_value("unit_county")
        _click(chrome, By.ID, "send")
        errors = chrome.find_element(By.TAG_NAME, "main").text
        assert "contact.email" in errors and "tiyu" in chrome.find_element(
            By.ID, "name").get_attribute("value")               # what was typed is kept
        chrome.save_screenshot(str(SHOTS / "request-refused.png"))
        box = chrome.find_element(By.ID, "contact_email")
        box.clear()
        box.send_keys("office@tiyu.qingshui.gov.cn")
        _click(chrome, By.ID, "send")
        assert chrome.find_elements(By.ID, "follow"), \
            chrome.find_element(By.TAG_NAME, "main").text
        follow = chrome.find_element(By.ID, "follow").get_attribute("href")
        chrome.save_screenshot(str(SHOTS / "request-sent.png"))
        chrome.get(follow)
        assert "等待县数据中心审核" in chrome.find_element(By.ID, "status").text

        _first_login(chrome, url, people["wuhua"], "county-operator-pass-3")
        _click(chrome, By.ID, "requests-link")
        _click(chrome, By.CSS_SELECTOR, "a.request-pending")
        assert "launch: pending" in chrome.find_element(By.ID, "manifest").text
        assert "tiyu: add" in chrome.find_element(By.ID, "plan").text
        chrome.save_screenshot(str(SHOTS / "request-decide.png"))
        _click(chrome, By.ID, "approve")
        assert "已批准并应用" in chrome.find_element(By.ID, "result").text, \
            chrome.find_element(By.TAG_NAME, "main").text
        chrome.get(follow)
        assert "已批准" in chrome.find_element(By.ID, "status").text
    finally:
        chrome.quit()
    landed = (inv / "tenants" / "tiyu.yaml").read_text()
    assert "launch: pending" in landed and "unit\n  - county" in landed
    plan = json.loads(govhost(inv, "plan", "--json", check=True).stdout)
    assert not plan["changes"], plan                       # the approval applied it
    for address in NODES.values():
        assert "tiyu.qingshui.gov.cn" in lab_ssh(address, "cat /etc/govhost/current/vhosts/"
                                                          "tiyu.conf")
    from controlplane.core.county import County
    with County(inv).state() as st:
        log = [(e["action"], e["actor"]) for e in st.audit_log(5000)]
    assert ("site-request.approved", "wuhua") in log


def test_a_unit_admin_adds_a_person_and_an_sftp_key_that_works_on_the_node(console, tmp_path):
    """The unit's admin adds an editor (first password shown once) and the unit's SFTP key;
    the key is in the manifest and the unit logs in over SFTP with it; a key with options is
    refused by name and changes nothing."""
    from selenium.webdriver.common.by import By

    from .test_tenants_lab import SSH_OPTS, _key, sftp_port
    url, inv, people = console["url"], console["inv"], console["people"]
    path, pub = _key(tmp_path, "jiaoyu-console")
    chrome = _chrome()
    try:
        _first_login(chrome, url, people["zhoujie"], "教育-管理员-密码-2026-c")
        chrome.get(f"{url}/units/jiaoyu")
        _click(chrome, By.ID, "people-link")
        chrome.find_element(By.ID, "new-name").send_keys("xiaowang")
        chrome.find_element(By.ID, "new-display").send_keys("小王")
        chrome.find_element(By.ID, "new-email").send_keys("xiaowang@jiaoyu.example")
        _click(chrome, By.ID, "add-person")
        assert "mailed to xiaowang@jiaoyu.example" in chrome.find_element(By.ID, "result").text
        assert "xiaowang" in chrome.find_element(By.ID, "people").text
        assert console["mail"].to("xiaowang@jiaoyu.example")
        box = chrome.find_element(By.ID, "sftp-keys")
        box.clear()
        box.send_keys("no-pty " + pub)
        _click(chrome, By.ID, "save-keys")
        assert "sftp.keys" in chrome.find_element(By.TAG_NAME, "main").text
        box = chrome.find_element(By.ID, "sftp-keys")
        box.clear()
        box.send_keys(pub)
        _click(chrome, By.ID, "save-keys")
        assert "applied" in chrome.find_element(By.ID, "result").text, \
            chrome.find_element(By.TAG_NAME, "main").text
        assert "jiaoyu-console" in chrome.find_element(By.ID, "keys").text
        chrome.save_screenshot(str(SHOTS / "people.png"))
    finally:
        chrome.quit()
    assert pub in (inv / "tenants" / "jiaoyu.yaml").read_text()
    placement = json.loads(govhost(inv, "plan", "--json", check=True).stdout)["placement"]
    first = NODES[placement["jiaoyu"][0]]
    res = subprocess.run(["sftp", *SSH_OPTS, "-P", str(sftp_port(inv)), "-i", str(path),
                          "-b", "-", f"{accounts.user_name('jiaoyu', None)}@{first}"],
                         input="ls\n", capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# -- Attacks on the console's doors (issue 31: items 1, 4, 5) ----------------------------------

def _http_session(url_host: str = "10.77.0.11", source: str | None = None):
    """An HTTP client that reaches the console through a node's nginx, as a browser does;
    from its own `source` address (one of the control machine's, network.HOST_CLIENTS4) where a test's failures must not slow others."""
    import httpx
    transport = httpx.HTTPTransport(local_address=source) if source else None
    return httpx.Client(base_url=f"http://{url_host}", headers={"Host": HOST}, timeout=120,
                        follow_redirects=False, transport=transport)


def _token(html: str) -> str:
    import re
    found = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert found, html[-1500:]
    return found.group(1)


def _editor_session(console, name: str):
    """A fresh editor of jiaoyu, logged in over HTTP with the first password changed."""
    inv = console["inv"]
    person = json.loads(govhost(inv, "user", "add", name, "--display", name, "--unit",
                                "jiaoyu", "--role", "editor", "--json", check=True).stdout)
    s = _http_session()
    page_ = s.get("/login")
    r = s.post("/login", data={"name": name, "password": person["password"], "code": "",
                               "next": "/", "csrftoken": _token(page_.text)})
    assert r.status_code == 303 and r.headers["location"] == "/password", r.text[-800:]
    form = s.get("/password")
    new = f"{name}-新密码-2026-x"
    r = s.post("/password", data={"old": person["password"], "new": new, "again": new,
                                  "csrftoken": _token(form.text)})
    assert r.status_code == 303, r.text[-800:]
    return s


def test_an_upload_through_a_link_planted_in_the_upload_area_lands_nowhere(console):
    """Item 1: the unit's SFTP account cannot make links any more; a link made before that
    rule (or some other way) in the upload area is not followed by an editor's upload, as a
    single file into its folder or as a zip holding it: refused by name, audited, nothing
    written through it, and `security check` names it."""
    import io
    import zipfile

    from controlplane.core.county import County
    inv = console["inv"]
    placement = json.loads(govhost(inv, "plan", "--json", check=True).stdout)["placement"]
    first = NODES[placement["jiaoyu"][0]]
    up = "/srv/govhost/sites/jiaoyu/upload"
    lab_ssh(first, f"mkdir -p /tmp/govhost-trap && cd {up} && ln -sfn /etc/cron.d docs && "
            "ln -sfn ../../caizheng/upload other && ln -sfn /tmp/govhost-trap/owned index.html")
    before_cron = lab_ssh(first, "ls -A /etc/cron.d")
    before_other = lab_ssh(first, "ls -A /srv/govhost/sites/caizheng/upload")
    s = _editor_session(console, "attacker1")
    try:
        form = s.get("/units/jiaoyu/upload")
        r = s.post("/units/jiaoyu/upload", data={"csrftoken": _token(form.text),
                                                 "folder": "docs"},
                   files={"files": ("evil", b"* * * * * root touch /tmp/pwned\n",
                                    "text/plain")})
        assert r.status_code == 400 and "docs" in r.text and "link" in r.text, r.text[-1500:]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("other/x.html", "not yours")
        form = s.get("/units/jiaoyu/upload")
        r = s.post("/units/jiaoyu/upload", data={"csrftoken": _token(form.text)},
                   files={"site": ("site.zip", buf.getvalue(), "application/zip")})
        # A whole zip replaces the area: the links go (not what they point at), then the zip
        # is written into plain folders of the unit's own.
        assert r.status_code == 200, r.text[-1500:]
        assert lab_ssh(first, "ls -A /etc/cron.d") == before_cron
        assert lab_ssh(first, "ls -A /srv/govhost/sites/caizheng/upload") == before_other
        assert lab_ssh(first, "ls -A /tmp/govhost-trap") == ""
        owners = lab_ssh(first, f"find {up} -mindepth 1 -printf '%u %y %P\\n'").split("\n")
        assert sorted(o for o in owners if o) == [
            f"{accounts.user_name('jiaoyu')} d other",
            f"{accounts.user_name('jiaoyu')} f other/x.html"], owners
        assert not lab_ssh(first, f"find {up} -type l")
    finally:
        s.close()
        lab_ssh(first, f"rm -rf /tmp/govhost-trap; find {up} -mindepth 1 -delete")
    with County(inv).state() as st:
        refused = [e for e in st.audit_log(5000) if e["action"] == "content.upload.refused"]
    assert refused and refused[0]["actor"] == "attacker1" and "docs" in \
        refused[0]["detail"]["error"]
    # security check names a planted link; the console's web process is not root.
    lab_ssh(first, f"ln -sfn /etc/shadow {up}/leak.html")
    try:
        proc = govhost(inv, "security", "check", "--json")
        found = json.loads(proc.stdout)["findings"]
    finally:
        lab_ssh(first, f"rm -f {up}/leak.html")
    links = [f for f in found if f["area"] == "uploads"]
    assert [f["where"].split(" ", 1)[1] for f in links] == ["jiaoyu:leak.html"], links
    assert "/etc/shadow" in links[0]["what"]
    assert not [f for f in found if f["area"] == "console"
                and f["where"] in (f"control pid {console['pid']}",
                                   f"control pid {console['web_pid']}")], found


def test_only_the_nodes_nginx_reaches_the_console_and_says_who_the_visitor_is(console):
    """Item 4: units' PHP runs on the nodes, beside nginx. As the unit's own account on a
    node, the console's address answers 403 with or without a forged X-Forwarded-For, and the
    proxy secret nginx sends cannot be read; through nginx, a forged X-Forwarded-For is not
    believed (the failed login is recorded from the real address)."""
    from controlplane.core.county import County
    port = console["port"]
    node = NODES["n1"]
    user = accounts.user_name("jiaoyu")
    as_unit = f"runuser -u {user} -- "
    out = lab_ssh(node, f"{as_unit} curl -s -o /dev/null -w '%{{http_code}}' "
                  f"-H 'X-Forwarded-For: 198.51.100.7' -H 'X-Govhost-Proxy: guess' "
                  f"http://10.77.8.1:{port}/login")
    assert out == "403"
    from controlplane.lab import machines as lab
    res = subprocess.run([*lab.ssh_argv(node),
                          f"{as_unit} cat /etc/govhost/current/snippets/console-proxy.conf"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "denied" in res.stderr.lower()
    s = _http_session()
    try:
        page_ = s.get("/login")
        r = s.post("/login", data={"name": "wangfang", "password": "wrong-password-xff",
                                   "code": "", "next": "/", "csrftoken": _token(page_.text)},
                   headers={"X-Forwarded-For": "198.51.100.7", "X-Real-IP": "198.51.100.7"})
        assert r.status_code == 401
    finally:
        s.close()
    with County(console["inv"]).state() as st:
        seen = {a for (a,) in st.db.execute(
            "SELECT address FROM logins WHERE name = 'wangfang'")}
    assert "198.51.100.7" not in seen and seen, seen


def test_a_huge_body_is_refused_at_once_declared_or_chunked(console):
    """Item 5: a 300 MB body to /login (declared, or chunked without a length) is refused
    with 413 before the console reads it; the sender is stopped within a few MB."""
    import socket
    for chunked in (False, True):
        sock = socket.create_connection(("10.77.0.11", 80), timeout=30)
        head = (f"POST /login HTTP/1.1\r\nHost: {HOST}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                + ("Transfer-Encoding: chunked\r\n" if chunked else
                   f"Content-Length: {300 << 20}\r\n") + "\r\n")
        sock.sendall(head.encode())
        sent, answer = 0, b""
        sock.settimeout(0.5)
        piece = b"a" * (1 << 20)
        while sent < (300 << 20):
            try:
                answer += sock.recv(4096)
                if answer:
                    break
            except socket.timeout:
                pass
            try:
                sock.sendall((b"100000\r\n" + piece + b"\r\n") if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        sock.settimeout(10)
        try:
            while b"\r\n" not in answer:
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        except (socket.timeout, ConnectionResetError):
            pass
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413"), (chunked, answer[:200])
        assert sent <= (16 << 20), (chunked, sent)


def _login_form(s, name: str, password: str, code: str = ""):
    page_ = s.get("/login")
    return s.post("/login", data={"name": name, "password": password, "code": code,
                                  "next": "/", "csrftoken": _token(page_.text)})


def test_guessing_never_locks_a_name_and_a_malformed_code_is_an_ordinary_refusal(console):
    """Items 3 and 8, through a node's nginx: a dozen wrong passwords slow the name down
    (never a lockout that needs an operator) and are audited as an attack; the right password
    with a code in Arabic-Indic or fullwidth digits is refused like a wrong code (not a 500,
    which would tell the attacker the password was right) and recorded."""
    from controlplane.core.county import County
    from controlplane.people import throttle
    inv = console["inv"]
    govhost(inv, "user", "add", "guessed", "--display", "g", "--unit", "jiaoyu", "--role",
            "editor", "--json", check=True)
    s = _http_session(source="10.77.8.41")
    try:
        answers = [_login_form(s, "guessed", f"wrong-{i}").status_code for i in range(12)]
    finally:
        s.close()
    assert set(answers) == {401}, answers
    row = next(r for r in json.loads(govhost(inv, "user", "list", "--json",
                                             check=True).stdout) if r["name"] == "guessed")
    assert "locked" not in row and row["wait"] <= 300, row
    with County(inv).state() as st:
        assert [e["target"] for e in st.audit_log(5000)
                if e["action"] == "user.attacked"] == ["guessed"]
        tries = st.db.execute("SELECT at, why FROM logins WHERE name = 'guessed' AND ok = 0"
                              ).fetchall()
    # Slowed down: past the third failure, tries that came while the name waited were refused
    # unchecked; right after the last checked one the name waited (the wait `user list` shows
    # may already have run out by the time it is asked, on a loaded machine).
    checked = [at for at, why in tries if why not in ("throttled", "locked")]
    assert len(tries) == 12 and 3 <= len(checked) < 12, tries
    assert 0 < throttle.decide(checked, max(checked)).wait <= 300, checked

    person = json.loads(govhost(inv, "user", "add", "coded", "--display", "c", "--unit",
                                "jiaoyu", "--role", "reviewer", "--json", check=True).stdout)
    code = pyotp.TOTP(person["totp_secret"]).now()
    s = _http_session(source="10.77.8.42")
    try:
        for digits in ("٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９"):
            odd = code.translate(str.maketrans("0123456789", digits))
            r = _login_form(s, "coded", person["password"], odd)
            assert r.status_code == 401 and "用户名、密码或验证码不正确" in r.text, r.status_code
    finally:
        s.close()
    with County(inv).state() as st:
        whys = [w for (w,) in st.db.execute("SELECT why FROM logins WHERE name = 'coded'")]
    assert whys == ["second factor malformed"] * 2, whys


def test_a_password_change_ends_the_other_sessions_and_every_answer_has_the_headers(console):
    """Item 9: a session copied elsewhere (or left open on another computer) ends when the
    password changes; redirects and error pages carry the security headers too."""
    a = _editor_session(console, "twosessions")
    b = _http_session()
    try:
        r = _login_form(b, "twosessions", "twosessions-新密码-2026-x")
        assert r.status_code == 303
        assert b.get("/units/jiaoyu").status_code == 200
        form = a.get("/password")
        new = "twosessions-另一个密码-2026"
        r = a.post("/password", data={"old": "twosessions-新密码-2026-x", "new": new,
                                      "again": new, "csrftoken": _token(form.text)})
        assert r.status_code == 303
        assert a.get("/units/jiaoyu").status_code == 200          # this one goes on
        gone = b.get("/units/jiaoyu")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
        for r in (gone, b.get("/no/such/page"), b.post("/units/jiaoyu/nosuch")):
            assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), \
                (r.status_code, dict(r.headers))
            assert r.headers.get("x-content-type-options") == "nosniff"
    finally:
        a.close()
        b.close()


def test_a_unit_admin_alone_cannot_pass_a_release_through_two_person_review(console):
    """Item 7, the attack as a unit admin acting alone would make it, through a node's nginx:
    add an editor and a reviewer with mailboxes the admin holds, publish as the one and
    approve as the other. The console never shows the first credentials (they are mailed to
    the person's address as a one-time link; the county is told of every account made), and
    the approval is refused: one person made both accounts. A reset of a person without an
    address is refused (the county resets them)."""
    import io
    import re
    import zipfile

    from controlplane.core.county import County
    inv, sink = console["inv"], console["mail"]
    admin = json.loads(govhost(inv, "user", "add", "admin7", "--display", "管理员七", "--unit",
                               "caizheng", "--role", "admin", "--json", check=True).stdout)
    a = _http_session()
    try:
        r = _login_form(a, "admin7", admin["password"],
                        pyotp.TOTP(admin["totp_secret"]).now())
        assert r.headers["location"] == "/password", r.text[-500:]
        form = a.get("/password")
        a.post("/password", data={"old": admin["password"], "new": "admin7-新密码-2026-z",
                                  "again": "admin7-新密码-2026-z",
                                  "csrftoken": _token(form.text)})
        links = {}
        for name, role in (("pen", "editor"), ("sock", "reviewer")):
            page_ = a.get("/units/caizheng/people")
            r = a.post("/units/caizheng/people", data={
                "action": "add", "name": name, "display": name, "role": role,
                "email": f"{name}@attacker.example", "csrftoken": _token(page_.text)})
            assert r.status_code == 200 and f"mailed to {name}@attacker.example" in r.text
            assert "otpauth" not in r.text and "issued-password" not in r.text
            (mail,) = sink.to(f"{name}@attacker.example")
            links[name] = re.search(r"http://" + re.escape(HOST) + r"(/enrol/\S+)",
                                    mail).group(1)
            assert any(name in m for m in sink.to("ops@qingshui.gov.cn"))
        page_ = a.get("/units/caizheng/people")
        r = a.post("/units/caizheng/people", data={"action": "reset", "person": "chenjing",
                                                  "csrftoken": _token(page_.text)})
        assert r.status_code == 400 and "no e-mail address" in r.text
    finally:
        a.close()
    # The admin holds both mailboxes: enrol both, publish as pen, approve as sock.
    secrets_ = {}
    for name, link in links.items():
        s = _http_session()
        try:
            form = s.get(link)
            assert form.status_code == 200
            found = re.search(r'id="enrol-totp">([A-Z2-7]+)<', form.text)
            secrets_[name] = found.group(1) if found else ""
            r = s.post(link, data={"new": f"{name}-password-2026", "again":
                                   f"{name}-password-2026", "csrftoken": _token(form.text)})
            assert r.status_code == 303
        finally:
            s.close()
    assert secrets_["sock"] and not secrets_["pen"]
    pen = _http_session()
    try:
        assert _login_form(pen, "pen", "pen-password-2026").status_code == 303
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("index.html", "<h1>财政局 未经审核</h1>")
        form = pen.get("/units/caizheng/upload")
        r = pen.post("/units/caizheng/upload", data={"csrftoken": _token(form.text)},
                     files={"site": ("site.zip", buf.getvalue(), "application/zip")})
        assert r.status_code == 200, r.text[-800:]
        r = pen.post("/units/caizheng/submit", data={"csrftoken": _token(r.text)})
        assert r.status_code == 200, r.text[-800:]
    finally:
        pen.close()
    with County(inv).state() as st:
        rid = next(r["release_id"] for r in st.content_releases("caizheng", "pending")
                   if r["actor"] == "pen")
    sock = _http_session()
    try:
        r = _login_form(sock, "sock", "sock-password-2026",
                        pyotp.TOTP(secrets_["sock"]).now())
        assert r.status_code == 303, r.text[-500:]
        page_ = sock.get(f"/units/caizheng/reviews/{rid}")
        assert "admin7 created or reset both" in page_.text
        r = sock.post(f"/units/caizheng/reviews/{rid}", data={
            "decision": "approve", "comment": "", "csrftoken": _token(page_.text)})
        assert r.status_code == 400 and "admin7 created or reset both" in r.text
    finally:
        sock.close()
    with County(inv).state() as st:
        assert [r["release_id"] for r in st.content_releases("caizheng", "pending")
                if r["actor"] == "pen"] == [rid]
        approved = [e for e in st.audit_log(5000) if e["action"] ==
                    "content.review.approved" and rid in e["target"]]
    assert approved == []
    for address in NODES.values():
        assert "未经审核" not in page("caizheng", address)[1]


def test_a_site_request_cannot_write_its_own_manifest_keys(console):
    """Item 2, through a node's nginx as a stranger would: a contact name carrying a line or
    paragraph separator and manifest keys after it (a proxy to the node's metrics, the WAF
    off) is refused by field and nothing is queued; the manifest an operator is shown holds
    no typed text in a comment, and approving needs that exact text."""
    import re

    from controlplane.core.county import County
    inv = console["inv"]
    with County(inv).state() as st:
        before = len(st.site_requests(None))
    s = _http_session(source="10.77.8.43")
    try:
        for sep in ("\u2028", "\u2029", "\x85"):
            page_ = s.get("/request")
            r = s.post("/request", data={
                "csrftoken": _token(page_.text), "title": "青水县审计局", "name": "shenji",
                "kind": "department", "review": "unit",
                "contact_name": f"钱明{sep}waf: off{sep}site: {{type: proxy, upstreams: "
                                "['http://127.0.0.1:9100']}",
                "contact_email": "office@shenji.qingshui.gov.cn",
                "contact_phone": "0571-6512-3399"})
            assert r.status_code == 400, r.status_code
            # refused next to the field it was typed into, naming the field and character
            assert re.search(r'id="contact_name"[^>]*><p class="error" role="alert">'
                             rf"contact_name: a line break \(U\+{ord(sep):04X}\)", r.text), \
                r.text[-2500:]
    finally:
        s.close()
    with County(inv).state() as st:
        after = st.site_requests(None)
    assert len(after) == before
    assert not (inv / "tenants" / "shenji.yaml").exists()
    for rec in after:                     # what earlier requests put before an operator
        assert rec["manifest"].split("\n", 1)[0] == (
            "# Requested through the console's site request form; approved by an operator.")


def test_the_operator_approves_a_site_request_as_the_whole_text_shown_and_only_that(console):
    """Item 2, the operator's side, through a node's nginx: a stranger's normal request is
    queued; the decision page shows the manifest exactly as it would land in
    inventory/tenants/ (the whole text, its only comment the fixed header, none of the typed
    text in a comment) and carries its digest; an approval that names other text (a page
    looked at before the request changed, or a forged form) is refused and writes nothing."""
    import hashlib
    import html
    import re

    from controlplane.core.county import County
    inv = console["inv"]
    s = _http_session(source="10.77.8.44")
    try:
        page_ = s.get("/request")
        r = s.post("/request", data={
            "csrftoken": _token(page_.text), "title": "青水县档案馆", "name": "dangan",
            "kind": "department", "review": "unit", "contact_name": "孙# 丽: 'x'",
            "contact_email": "office@dangan.qingshui.gov.cn",
            "contact_phone": "0571-6512-3398", "columns": "/dagl/ 档案 管理 updates"})
        assert r.status_code == 200, r.text[-1500:]
        rid = int(re.search(r'/requests/(\d+)/status\?k=', r.text).group(1))
    finally:
        s.close()
    with County(inv).state() as st:
        stored = st.site_request(rid)["manifest"]
    ops = json.loads(govhost(inv, "user", "add", "ops31", "--display", "值班员",
                             "--role", "operator", "--json", check=True).stdout)
    o = _http_session()
    try:
        r = _login_form(o, "ops31", ops["password"],
                        pyotp.TOTP(ops["totp_secret"]).now() if ops["totp_secret"] else "")
        assert r.status_code == 303 and r.headers["location"] == "/password", r.text[-800:]
        form_ = o.get("/password")
        r = o.post("/password", data={"old": ops["password"], "new": "ops31-新密码-2026-q",
                                      "again": "ops31-新密码-2026-q",
                                      "csrftoken": _token(form_.text)})
        assert r.status_code == 303, r.text[-800:]
        decide = o.get(f"/requests/{rid}")
        assert decide.status_code == 200, decide.text[-800:]
        shown = html.unescape(re.search(r'<pre id="manifest">(.*?)</pre>', decide.text,
                                        re.S).group(1))
        assert shown == stored                                    # the whole text, as is
        comments = [x for x in shown.splitlines() if x.lstrip().startswith("#")]
        assert comments == ["# Requested through the console's site request form; "
                            "approved by an operator."], shown
        assert "contact:\n  name: '孙# 丽: ''x'''" in shown       # typed text only as data
        digest = re.search(r'name="manifest_sha256" value="([0-9a-f]{64})"',
                           decide.text).group(1)
        assert digest == hashlib.sha256(shown.encode()).hexdigest()
        for other in (hashlib.sha256((shown + "waf: false\n").encode()).hexdigest(), ""):
            r = o.post(f"/requests/{rid}", data={"decision": "approve",
                                                 "manifest_sha256": other,
                                                 "csrftoken": _token(decide.text)})
            assert r.status_code == 400 and "changed since you looked at it" in r.text, \
                r.text[-1500:]
            assert not (inv / "tenants" / "dangan.yaml").exists()
        r = o.post(f"/requests/{rid}", data={"decision": "return", "comment": "测试结束",
                                             "csrftoken": _token(decide.text)})
        assert r.status_code == 200 and 'id="result"' in r.text, r.text[-1500:]
    finally:
        o.close()
    with County(inv).state() as st:
        assert st.site_request(rid)["status"] == "returned"


def test_a_citizen_writes_in_the_browser_and_an_editor_answers_in_the_console(console):
    """Issue 38 in a real browser: a citizen fills in jiaoyu's message form (Chromium finds
    the proof of work in the page's own script) and keeps the reading link; an editor logs
    in, sees it with its due date, reads the contact and answers it; the citizen's link and
    the unit's public list show the answer through the nodes. Screenshots for
    docs/messages.md."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from controlplane.core.county import County
    inv, url = console["inv"], console["url"]
    made = json.loads(govhost(inv, "user", "add", "liuyan", "--display", "留言编辑", "--role",
                              "editor", "--unit", "jiaoyu", "--json", check=True).stdout)
    shots = REPO / "test-artifacts" / "messages"
    shots.mkdir(parents=True, exist_ok=True)
    citizen = _citizen()
    try:
        citizen.get("http://jiaoyu.qingshui.gov.cn/hudong/")
        for field, value in (("gh-subject", "校车站点"), ("gh-text", "希望在青水路口增设校车站点。"),
                             ("gh-name", "李女士"), ("gh-contact", "13900139000")):
            citizen.find_element(By.ID, field).send_keys(value)
        citizen.save_screenshot(str(shots / "form.png"))
        citizen.find_element(By.CSS_SELECTOR, "#gh-form button[type=submit]").click()
        WebDriverWait(citizen, 120).until(
            lambda d: "编号" in d.find_element(By.ID, "gh-result").text)
        said = citizen.find_element(By.ID, "gh-result").text
        citizen.save_screenshot(str(shots / "taken.png"))
        number = re.search(r"JY-\d{8}-\d+-\d{6}", said).group(0)
        link = re.search(r"http://\S+reply\?t=[A-Za-z0-9_-]+", said).group(0)
    finally:
        citizen.quit()
    chrome = _chrome()
    try:
        _first_login(chrome, url, made, "留言编辑-密码-2026-d")
        chrome.get(f"{url}/units/jiaoyu/messages")
        # (the nodes may hold other modules' messages too: this one's row, by its number)
        row = chrome.find_element(By.XPATH, f'//table[@id="messages"]//tr[td/a[text()='
                                            f'"{number}"]]')
        assert row.get_attribute("class") == "message-open"
        assert "校车站点" in row.text and "13900139000" not in row.text, row.text
        chrome.save_screenshot(str(shots / "list.png"))
        _click(chrome, By.LINK_TEXT, number)
        assert chrome.find_element(By.ID, "contact").text == "13900139000"
        chrome.find_element(By.ID, "answer-text").send_keys("已与公交公司商定，下学期起增设。")
        chrome.save_screenshot(str(shots / "answer.png"))
        _click(chrome, By.ID, "send-answer")
        assert "已答复" in chrome.find_element(By.ID, "result").text, chrome.page_source[-1500:]
    finally:
        chrome.quit()
    with County(inv).state() as st:
        audit = [(e["action"], e["actor"]) for e in st.audit_log(30) if e["target"] == number]
    assert ("messages.read", "liuyan") in audit and ("messages.answer", "liuyan") in audit
    citizen = _citizen()
    try:
        citizen.get(link)
        assert "下学期起增设" in citizen.find_element(By.TAG_NAME, "body").text
        citizen.save_screenshot(str(shots / "reply.png"))
        citizen.get("http://jiaoyu.qingshui.gov.cn/hudong/list")
        body = citizen.find_element(By.TAG_NAME, "body").text
        assert number in body and "下学期起增设" in body and "13900139000" not in body
        assert "李女士" not in body
    finally:
        citizen.quit()


def _citizen():
    """A citizen's browser: jiaoyu's site through n2's nginx."""
    return browser.driver("10.77.0.12", ["jiaoyu.qingshui.gov.cn"], browser.Connection(0, 0),
                          300)
