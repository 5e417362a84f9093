"""The console on the lab, in a real browser: `govhost console` serving the example county,
people added with `govhost user add`, headless Chromium (Selenium, Debian's chromium-driver)
logging in. An editor changes the first password and sees the unit's page with its live
status through the three nodes; a reviewer logs in with a TOTP code; another unit's page
is refused; the operator sees the county ranked by days since the last update. Screenshots
of the pages are kept in test-artifacts/."""
import json
import subprocess
import time
import urllib.request

import pyotp
import pytest

from controlplane.compliance import browser
from tests.helpers import free_port

from .conftest import REPO, govhost
from .test_apply_lab import NODES, apply_json
from .test_tenants_lab import page, reset_content

HOST = "console.qingshui.gov.cn"
SHOTS = REPO / "test-artifacts" / "console"


@pytest.fixture(scope="module")
def console(lab_cluster, tmp_path_factory):
    if browser.missing():
        pytest.fail(browser.missing())
    import shutil
    inv = tmp_path_factory.mktemp("console") / "inventory"
    shutil.copytree(REPO / "inventory", inv, ignore=shutil.ignore_patterns(".govhost"))
    with (inv / "tenants" / "caizheng.yaml").open("a") as f:
        f.write("review: {levels: [unit, county]}\n")       # the county checks it too
    apply_json(inv)
    people = {}
    for name, unit, role in (("wangfang", "jiaoyu", "editor"), ("lisi", "jiaoyu", "reviewer"),
                             ("zhaoliu", None, "operator"), ("qianli", "caizheng", "editor"),
                             ("chenjing", "caizheng", "reviewer"), ("sunqi", None, "operator")):
        args = ["user", "add", name, "--display", name, "--role", role, "--json"]
        proc = govhost(inv, *args, *(["--unit", unit] if unit else []), check=True)
        people[name] = json.loads(proc.stdout)
    port = free_port()
    proc = subprocess.Popen(["govhost", "--inventory", str(inv), "console", "--http",
                             "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.3)
    SHOTS.mkdir(parents=True, exist_ok=True)
    reset_content("jiaoyu")
    reset_content("caizheng")
    yield {"inv": inv, "url": f"http://{HOST}:{port}", "people": people}
    proc.terminate()
    proc.wait(10)
    reset_content("jiaoyu")
    reset_content("caizheng")


def _chrome():
    return browser.driver("127.0.0.1", [HOST], browser.Connection(0, 0), 60)


def _click(chrome, by, selector):
    """Click and wait for the next page: a click returns before the browser has left the
    page it was on."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    old = chrome.find_element(By.TAG_NAME, "html")
    chrome.find_element(by, selector).click()
    WebDriverWait(chrome, 120).until(ec.staleness_of(old))
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
    chrome.get(f"{url}/login")
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
        chrome.get(f"{url}/units/jiaoyu")
        assert "wangfang" in chrome.find_element(By.TAG_NAME, "main").text  # published by
        chrome.get(f"{url}/units/jiaoyu?lang=en")
        assert "The site on each server" in chrome.page_source
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
        _first_login(chrome, url, people["qianli"], "财政-编辑-密码-1")
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
        _first_login(chrome, url, people["chenjing"], "财政-审核-密码-1")
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
        _login(chrome, url, "qianli", "财政-编辑-密码-1")
        chrome.get(f"{url}/units/caizheng")
        _click(chrome, By.CSS_SELECTOR, "button.propose-rollback")
        assert chrome.find_element(By.ID, "target").text == v1["release"]
        proposal = chrome.current_url
        for who, password in (("chenjing", "财政-审核-密码-1"),
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
        log = st.audit_log(200)
    decided = [(e["actor"], e["detail"].get("level")) for e in log
               if e["action"] == "content.review.approved" and rid in e["target"]]
    assert sorted(decided) == [("chenjing", 1), ("sunqi", 2)]
    rolled = [(e["actor"], e["detail"].get("level")) for e in log
              if e["action"] == "content.review.approved" and "rollback:" in e["target"]]
    assert sorted(rolled) == [("chenjing", 1), ("sunqi", 2)]
    assert any(e["action"] == "content.rollback-target" and e["actor"] == "sunqi"
               for e in log)
