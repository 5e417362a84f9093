"""Monitoring without the lab: alert rules under promtool, the rendered Prometheus config,
the dashboards in the repo, the exporter's output format, and the agent's log counting."""
import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.core import inventory, paths
from controlplane.core.county import County
from controlplane.monitoring import dashboards
from controlplane.monitoring import prometheus as monitoring
from controlplane.monitoring.exporter import GovhostCollector, Prober, Round, scrape
from controlplane.sites import probes

MON = paths.REPO / "monitoring"


def promtool(*args: str, cwd: Path | None = None, stdin: str | None = None):
    if not shutil.which("promtool"):
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (scripts/setup.sh installs prometheus)")
        pytest.skip("promtool is not installed (run scripts/setup.sh)")
    return subprocess.run(["promtool", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    check = promtool("check", "rules", str(MON / "rules" / "govhost.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    # the alerts that take hours or days to fire are evaluated every 10 minutes, apart
    test = promtool("test", "rules", "govhost_test.yml", "govhost_long_test.yml",
                    cwd=MON / "tests")
    assert test.returncode == 0, test.stdout + test.stderr
    assert test.stdout.count("SUCCESS") == 2


def test_every_alert_rule_has_a_unit_test():
    rules = (MON / "rules" / "govhost.yml").read_text()
    tests = "".join(f.read_text() for f in (MON / "tests").glob("govhost*_test.yml"))
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines()
             if line.strip().startswith("- alert:")]
    assert len(names) >= 10
    assert [n for n in names if f"alertname: {n}" not in tests] == []


def test_rendered_prometheus_config_is_valid(inv_dir, tmp_path):
    inv = inventory.load(inv_dir)
    written = monitoring.write(tmp_path / "mon", inv.hosts, "127.0.0.1:9270", 15)
    assert (tmp_path / "mon" / "rules" / "govhost.yml") in written
    check = promtool("check", "config", str(tmp_path / "mon" / "prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    text = (tmp_path / "mon" / "prometheus.yml").read_text()
    for n in inv.hosts.nodes:
        assert f"{n.address}:9273" in text and f"{n.address}:9100" in text


def test_dashboards_in_the_repo_are_the_generated_ones():
    for name, text in dashboards.render_all().items():
        assert (MON / "dashboards" / name).read_text() == text, \
            f"monitoring/dashboards/{name} is stale: run `govhost monitoring render`"
        board = json.loads(text)
        assert board["panels"] and all(p["targets"][0]["expr"] for p in board["panels"])
    tenant = json.loads(dashboards.render_all()["govhost-tenant.json"])
    assert any(v["name"] == "tenant" for v in tenant["templating"]["list"])


def _round(inv) -> Round:
    rnd = Round(finished=time.time(), seconds=0.5, cpu_seconds=0.1)
    for t in inv.tenants:
        rnd.kinds[t.name], rnd.site_types[t.name] = t.kind, t.site.type
        rnd.replicas[t.name] = 2
        for n in inv.hosts.nodes:
            ok = not (t.name == "jiaoyu" and n.name == "n3")
            rnd.tenants.setdefault(t.name, {})[n.name] = probes.ProbeResult(
                inv.site_host(t), n.name, n.address, 200 if ok else None, 0.01)
    rnd.quotas = {t.name: inv.quota_bytes(t) for t in inv.tenants}
    rnd.nodes_up = {n.name: True for n in inv.hosts.nodes}
    rnd.desired_release = {n.name: "a" * 16 for n in inv.hosts.nodes}
    rnd.live_release = {"n1": "a" * 16, "n2": "a" * 16, "n3": "b" * 16}
    return rnd


def test_exporter_output_parses_and_passes_promtool(inv_dir):
    inv = inventory.load(inv_dir)
    st = County(inv_dir).open_state()
    summary = {"published_at": 1_700_000_000.0, "files": 1, "bytes": 5}
    st.add_content_release("jiaoyu", "20261122T100000-aaaaaa", "live", summary, ["n1"])
    st.add_content_release("jiaoyu", "20261122T110000-bbbbbb", "pending",
                           {**summary, "published_at": 1_800_000_000.0}, ["n1"])
    st.close()
    prober = Prober(County(inv_dir), 30)
    prober.latest = _round(inv)
    collector = GovhostCollector(County(inv_dir), prober)
    text = scrape(collector).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {(s.labels["tenant"], s.labels["node"]): s.value
          for s in families["govhost_tenant_up"].samples}
    assert len(up) == len(inv.tenants) * len(inv.hosts.nodes)
    assert up[("jiaoyu", "n3")] == 0 and up[("jiaoyu", "n1")] == 1
    drift = {s.labels["node"]: s.value for s in families["govhost_node_drift"].samples}
    assert drift == {"n1": 0, "n2": 0, "n3": 1}
    assert families["govhost_apply_lock_held"].samples[0].value == 0
    quota = {s.labels["tenant"]: s.value for s in families["govhost_tenant_quota_bytes"].samples}
    assert quota["jiaoyu"] == inv.quota_bytes(inv.tenant("jiaoyu")) and len(quota) == len(up) / 3
    # a pending release is not live content: freshness is the live one's publish time
    last = families["govhost_tenant_last_publish_timestamp_seconds"].samples
    assert [(s.labels["tenant"], s.value) for s in last] == [("jiaoyu", 1_700_000_000.0)]
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr


def _agent():
    from govhost_node import agent
    return agent


def _line(status: int, size: int, hop: str = "-", agent: str = "curl/7.88") -> str:
    return (f'127.0.0.1 - - [22/Nov/2026:10:00:00 +0800] "GET / HTTP/1.1" {status} {size} '
            f'"-" "{agent}" 0.001 jiaoyu.qingshui.gov.cn {hop}\n')


def test_agent_counts_entry_requests_and_survives_rotation(tmp_path):
    agent = _agent()
    agent.LOGS = str(tmp_path)
    log = tmp_path / "jiaoyu" / "access.log"
    log.parent.mkdir()
    log.write_text(_line(200, 100) + _line(404, 10) + _line(502, 0)
                   + _line(200, 999, hop="1")                      # forwarded: counted elsewhere
                   + _line(200, 999, agent="govhost-probe")        # our own probe
                   + '127.0.0.1 - - [22/Nov/2026:10:00:00 +0800] "GET /half')  # still being written
    c = agent.LogCounters()
    c.refresh()
    assert c.requests == {("jiaoyu", "2xx"): 1, ("jiaoyu", "4xx"): 1, ("jiaoyu", "5xx"): 1}
    assert c.bytes["jiaoyu"] == 110
    with log.open("a") as f:
        f.write(' HTTP/1.1" 200 5 "-" "x" 0.001 jiaoyu.qingshui.gov.cn -\n')
    c.refresh()
    assert c.requests[("jiaoyu", "2xx")] == 2 and c.bytes["jiaoyu"] == 115
    log.rename(log.with_suffix(".log.1"))                          # logrotate
    log.write_text(_line(200, 1))
    c.refresh()
    assert c.requests[("jiaoyu", "2xx")] == 3 and c.bytes["jiaoyu"] == 116


def test_agent_reads_the_accounts_once_until_the_account_file_changes(tmp_path, monkeypatch):
    """The owners of the node's processes: one read of every account, not one getpwuid a
    uid at every scrape; read again when an apply changed the accounts."""
    agent = _agent()
    agent.SITES = str(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.write_text("one\n")
    accounts = [pwd.struct_passwd(("gh-jiaoyu", "x", os.getuid(), 0, "", "/", "/bin/false")),
                pwd.struct_passwd(("gh-chahe.php", "x", 64124, 0, "", "/", "/bin/false")),
                pwd.struct_passwd(("gh-dup", "x", os.getuid(), 0, "", "/", "/bin/false"))]
    reads = []
    monkeypatch.setattr(agent.pwd, "getpwall", lambda: reads.append(1) or list(accounts))
    monkeypatch.setattr(agent.pwd, "getpwuid", lambda uid: pytest.fail("one uid at a time"))
    procs = agent.TenantProcesses()
    monkeypatch.setattr(procs, "PASSWD", str(passwd))
    for _ in range(3):
        procs.refresh()
    assert len(reads) == 1 and procs.procs.get("jiaoyu", 0) >= 1     # this test's process
    assert procs.tenant_of(64124) == "chahe" and procs.tenant_of(1) is None
    passwd.write_text("one\ntwo\n")                   # an apply added an account
    procs.refresh()
    procs.refresh()
    assert len(reads) == 2


def test_agent_disk_usage_counts_each_inode_once_without_a_stat_a_file(tmp_path, monkeypatch):
    """Stop 66: the unit's tree is listed, and only a file not seen yet is stat'ed (a
    unit's kept releases are hard links of the live one: before, every path was lstat'ed,
    0.93 s of CPU a minute at 300 units of 200 files in 5 releases, now 0.33 s). The bytes
    are what the walk of every path counted: links to directories neither walked nor
    counted, a link to a file counted as the link."""
    agent = _agent()
    agent.SITES = str(tmp_path)
    unit = tmp_path / "jiaoyu"
    for rid in ("r1", "r2", "r3"):
        (unit / "releases" / rid / "news").mkdir(parents=True)
    (unit / "releases/r1/index.html").write_bytes(b"x" * 10_000)
    (unit / "releases/r1/news/a.html").write_bytes(b"y" * 70_000)
    for rid in ("r2", "r3"):
        os.link(unit / "releases/r1/index.html", unit / "releases" / rid / "index.html")
    os.link(unit / "releases/r1/news/a.html", unit / "releases/r2/news/a.html")
    (unit / "releases/r3/news/a.html").write_bytes(b"z" * 5_000)       # changed in r3
    (unit / "upload").mkdir()
    (unit / "upload/big.pdf").write_bytes(b"p" * 200_000)
    os.symlink("releases/r3", unit / "current")
    os.symlink("/" + "x" * 300, unit / "releases/r3/long-link")          # a link's own block
    os.symlink(str(tmp_path), unit / "upload/escape")                   # not walked
    (tmp_path / "chahe").mkdir()

    def walked(top):
        """The definition before stop 66: os.walk, an lstat a path, each inode once."""
        total, seen = 0, set()
        for root, _, files in os.walk(top):
            for name in files:
                st = os.lstat(os.path.join(root, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
        return total
    want = {"jiaoyu": walked(str(unit)), "chahe": 0}
    stats, real = [], os.lstat
    monkeypatch.setattr(agent.os, "lstat", lambda p, **k: stats.append(p) or real(p, **k))
    got = agent.DiskUsage.measure()
    monkeypatch.setattr(agent.os, "lstat", real)
    assert got == want and stats == []
    assert want["jiaoyu"] >= 10_000 + 70_000 + 5_000 + 200_000


def test_agent_counts_cpu_and_memory_of_a_tenants_processes_past_their_end(tmp_path):
    agent = _agent()
    agent.SITES = str(tmp_path)
    (tmp_path / "idle").mkdir()                       # a tenant held here with no processes
    procs = agent.TenantProcesses()
    uid = 64123                                       # an unused uid stands in for gh-jiaoyu
    procs.tenant_of = lambda u: "jiaoyu" if u == uid else None
    burn = subprocess.Popen(["python3", "-c", "import time\nt=time.process_time()\n"
                             "while time.process_time() - t < 0.5: pass\ntime.sleep(30)"],
                            user=uid, group=uid)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            procs.refresh()
            with open(f"/proc/{burn.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[11]) + int(fields[12]) >= 0.5 * procs.tick - 1:
                break
            time.sleep(0.1)
        procs.refresh()
        during = procs.cpu["jiaoyu"] / procs.tick
        assert 0.45 <= during < 5 and procs.rss["jiaoyu"] > 1_000_000
        assert procs.procs["jiaoyu"] == 1
    finally:
        burn.kill()
        burn.wait()
    procs.refresh()
    text = "\n".join(procs.lines())
    assert procs.cpu["jiaoyu"] / procs.tick >= during     # a counter never goes back
    assert procs.procs.get("jiaoyu", 0) == 0 and procs.rss.get("jiaoyu", 0) == 0
    assert 'govhost_tenant_cpu_seconds_total{tenant="idle"} 0.00' in text
    assert 'govhost_tenant_memory_bytes{tenant="idle"} 0' in text


def test_status_of_an_unknown_tenant_is_refused_clearly(inv_dir):
    proc = subprocess.run(["govhost", "--inventory", str(inv_dir), "status", "nosuch"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no unit named 'nosuch'" in proc.stderr


def test_exporter_service_unit_is_written_by_the_playbook(inv_dir, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    cmd = ["govhost", "--inventory", str(inv_dir), "monitoring", "install", "--interval", "15",
           "--unit-dir", str(units)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    unit = (units / "govhost-exporter.service").read_text()
    assert f"--inventory {inv_dir.resolve()} exporter --listen 127.0.0.1:9270 --interval 15" \
        in unit
    assert "Restart=always" in unit
    backup = (units / "govhost-backup-control.service").read_text()
    assert f"--inventory {inv_dir.resolve()} control backup" in backup
    # with the node backups: the example's cluster.yaml says 02:30
    assert "OnCalendar=*-*-* 02:30:00" in (units / "govhost-backup-control.timer").read_text()
    remind = (units / "govhost-messages-remind.service").read_text()
    assert f"--inventory {inv_dir.resolve()} messages remind" in remind
    assert "OnCalendar=hourly" in (units / "govhost-messages-remind.timer").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "unchanged" in again.stdout


def test_the_exporter_answers_get_and_head_on_metrics_only(inv_dir):
    """The exporter's own WSGI app: GET /metrics is the scrape, HEAD its headers alone, any
    other method 405 and any other path 404 (nothing but /metrics is served)."""
    from wsgiref.util import setup_testing_defaults

    from controlplane.monitoring.exporter import wsgi_app
    inv = inventory.load(inv_dir)
    prober = Prober(County(inv_dir), 30)
    prober.latest = _round(inv)
    app = wsgi_app(GovhostCollector(County(inv_dir), prober))

    def ask(method: str, path: str) -> tuple[str, dict, bytes]:
        env: dict = {"REQUEST_METHOD": method, "PATH_INFO": path}
        setup_testing_defaults(env)
        got: dict = {}
        body = b"".join(app(env, lambda status, headers: got.update(
            status=status, headers=dict(headers))))
        return got["status"], got["headers"], body

    status, headers, body = ask("GET", "/metrics")
    assert status == "200 OK" and b"govhost_tenant_up{" in body
    assert int(headers["Content-Length"]) == len(body)
    assert "version=" in headers["Content-Type"]
    status, headers, body = ask("HEAD", "/metrics")
    assert status == "200 OK" and body == b"" and int(headers["Content-Length"]) > 0
    assert ask("POST", "/metrics")[0].startswith("405")
    assert ask("GET", "/favicon.ico")[0].startswith("404")


def test_the_exporter_sees_every_manifest_and_bundle_change(inv_dir):
    """Found in stop 67: the exporter reloaded the inventory on a change of the top files
    and tenants/*.yaml only (a unit's `.yml` or an edited wording list went unseen until
    another file changed), and took a certificate bundle for unchanged by its size and
    mtime (a renewal of the same size with its mtime put back went unseen). Both now
    stamp every file the loader reads, with inode and ctime."""
    from controlplane.core.certstore import write_private
    county = County(inv_dir)
    prober = Prober(county, 30)
    loads = []
    real = County.reloaded
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(County, "reloaded", lambda self: loads.append(1) or real(self))
        prober._inventory()
        prober._inventory()
        assert len(loads) == 1
        words = inv_dir / "wording" / "names.yaml"
        before = words.stat()
        words.write_bytes(words.read_bytes() + b"\n")
        os.utime(words, ns=(before.st_atime_ns, before.st_mtime_ns))
        prober._inventory()
        assert len(loads) == 2
    certs = county.certs
    write_private(certs.bundle_path("jiaoyu"), b"KEY\n-----BEGIN CERTIFICATE-----\nA\n")
    first = certs.stamp()
    st = certs.bundle_path("jiaoyu").stat()
    write_private(certs.bundle_path("jiaoyu"), b"KEY\n-----BEGIN CERTIFICATE-----\nB\n")
    os.utime(certs.bundle_path("jiaoyu"), ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [n for n, *_ in first] == ["jiaoyu.pem"] and certs.stamp() != first


def test_the_nodes_content_is_asked_again_on_a_change_or_after_its_interval(inv_dir,
                                                                              monkeypatch):
    """Each content check stats every live file on every node (about 3.7 s of a node's CPU at
    3,333 units of 200 files), every 30 s round before stop 67 for an alert that waits 10
    minutes. Now a round asks again when a placement, a unit's live release, a node's
    release or which nodes answer changed, or CONTENT_EVERY after the last check; a check
    a node did not answer is not kept. The nodes stand in (SSH); the clock is the test's."""
    from controlplane.core import remote
    from controlplane.monitoring import exporter
    county = County(inv_dir)
    inv = county.inv
    names = [n.name for n in inv.hosts.nodes]
    asked, answering = [], set(names)

    def status(hosts, nodes, known_hosts, content=False, only=()):
        asked.append(content)
        return {n.name: remote.NodeStatus(n.name, n.name in answering, content={})
                for n in nodes}
    clock = [1000.0]
    monkeypatch.setattr(remote, "node_status", status)
    monkeypatch.setattr(exporter.time, "monotonic", lambda: clock[0])
    prober = Prober(county, 30)
    live = {n: "a" * 16 for n in names}
    up = {n: True for n in names}
    prober._content_drift(inv, live, up)
    prober._content_drift(inv, live, up)
    clock[0] += Prober.CONTENT_EVERY - 1
    prober._content_drift(inv, live, up)
    assert len(asked) == 1
    clock[0] += 1
    prober._content_drift(inv, live, up)
    assert len(asked) == 2
    prober._content_drift(inv, {**live, names[0]: "b" * 16}, up)       # an apply
    assert len(asked) == 3
    with county.state() as st:                                          # a publish
        st.add_content_release("jiaoyu", "20261122T100000-aaaaaa", "live",
                               {"published_at": 1.0, "files": 1, "bytes": 5}, names[:2])
    prober._content_drift(inv, {**live, names[0]: "b" * 16}, up)
    assert len(asked) == 4
    answering.discard(names[2])                                         # a node silent
    prober._content_drift(inv, live, up)
    prober._content_drift(inv, live, up)
    assert len(asked) == 6
