"""Real servers: bare Debian machines booted by systemd (systemd-nspawn), bootstrapped from
nothing, rebooted, wiped and replaced, with content that follows its replicas.

Every event runs under a content-continuity loop: paced requests for every published page
through every node, counting each answer that is not the published page (a placeholder, a
404, another release). Expected: 0. A node that is down does not answer at all; those are
counted apart, as `unanswered`.
"""
from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from controlplane.core.county import County
from controlplane.lab import machines as lab
from tests.helpers import tamper_watcher_stopped

from .conftest import REPO, govhost
from .test_apply_lab import NODES, node_metrics, on_node

pytestmark = pytest.mark.machines

PAGES = {"index.html": "<html><body>教育局 首页 v1</body></html>",
         **{f"news/{i:02d}.html": f"<p>新闻 {i} 正文</p>" for i in range(1, 17)},
         "notice/a.html": "通知 A", "notice/b.html": "通知 B", "css/site.css": "body{}",
         "about.html": "关于我们"}          # 21 files, as in the issue


@pytest.fixture
def county(machine_county):
    """The one county of the machines (conftest), kept from test to test."""
    return machine_county


def apply(inv: Path, expect_rc: int | None = 0) -> dict:
    proc = govhost(inv, "--debug", "apply", "--yes", "--json", timeout=1800)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, (proc.stdout[-3000:], proc.stderr[-3000:])
    return data


def placement(inv: Path, tenant: str) -> list[str]:
    data = json.loads(govhost(inv, "unit", "show", tenant, "--json", check=True).stdout)
    return list(data.get("replicas") or data.get("placement") or [])


def applied_placement(inv: Path, tenant: str) -> list[str]:
    """The replicas in force (saved by the last apply), not the ones the manifest asks for."""
    st = County(inv).open_state()
    try:
        return list(st.placements().get(tenant, ()))
    finally:
        st.close()


def holdings(address: str, tenant: str) -> dict:
    out = json.loads(on_node(address, f"/usr/local/sbin/govhost-tenants holdings {tenant}"))
    return out.get(tenant, {"current": None, "releases": []})


def publish(inv: Path, tenant: str, files: dict[str, str]) -> str:
    first = NODES[placement(inv, tenant)[0]]
    from tests.helpers import upload
    upload(first, tenant, {k: v.encode() for k, v in files.items()}, replace=True)
    out = json.loads(govhost(inv, "publish", tenant, "--json", check=True).stdout)
    return out["release"]


class Continuity(threading.Thread):
    """Paced GETs of every page through every node until stopped (bounded in count); about
    10 a second per node, under the example county's rate limit of 20."""

    def __init__(self, host: str, pages: dict[str, str], pace: float = 0.1,
                 limit: int = 30000, nodes: dict[str, str] | None = None):
        super().__init__(daemon=True)
        self.host, self.pages, self.pace, self.limit = host, pages, pace, limit
        self.nodes = nodes or NODES
        self.stop_at = threading.Event()
        self.counts: Counter = Counter()
        self.wrong: list[tuple[str, str, int, str]] = []
        self.unanswered: Counter = Counter()

    def run(self) -> None:
        paths = ["/" if p == "index.html" else f"/{p}" for p in self.pages]
        bodies = list(self.pages.values())
        n = 0
        while not self.stop_at.is_set() and n < self.limit:
            for node, address in self.nodes.items():
                i = n % len(paths)
                n += 1
                conn = http.client.HTTPConnection(address, 80, timeout=5)
                try:
                    conn.request("GET", paths[i], headers={"Host": self.host})
                    r = conn.getresponse()
                    body = r.read().decode(errors="replace")
                    self.counts[node] += 1
                    if r.status != 200 or body != bodies[i]:
                        self.wrong.append((node, paths[i], r.status, body[:80]))
                except OSError:
                    self.unanswered[node] += 1
                finally:
                    conn.close()
            time.sleep(self.pace)

    def __enter__(self) -> "Continuity":
        self.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)
        self.stop_at.set()
        self.join(30)


def set_replicas(inv: Path, tenant: str, n: int) -> None:
    path = inv / "tenants" / f"{tenant}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["replicas"] = n
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))


# ------------------------------------------------------------------ bootstrap from bare

def test_bare_nodes_are_bootstrapped_and_serve_the_county(county):
    for address in NODES.values():   # really bare: no nginx, no govhost
        assert on_node(address, "command -v nginx || echo none") == "none"
    govhost(county, "control", "init", check=True)   # as scripts/lab.sh: the recovery key
    first = apply(county)
    assert {n["result"] for n in first["nodes"]} == {"applied"}
    # the first firewall of each node, confirmed by the control machine reaching it after
    assert set(first["firewall"].values()) == {"firewall: confirmed"}, first["firewall"]
    for name, address in NODES.items():
        units = on_node(address, "systemctl is-enabled govhost-nginx govhost-agent "
                        "govhost-node-exporter logrotate.timer").split()
        assert units == ["enabled"] * 4, (name, units)
        assert on_node(address, "systemctl is-active nginx prometheus-node-exporter || true"
                       ).split() == ["inactive", "inactive"]
        # nothing on the node listens on a wildcard address (the network is shared with the
        # host and the other nodes; -p names only the node's own processes)
        listening = on_node(address, "ss -Hltnp | grep users: | awk '{print $4}'").split()
        assert f"{address}:80" in listening and f"{address}:22" in listening
        assert not [a for a in listening if a.startswith(("0.0.0.0:", "*:", "[::]:"))
                    and not a.endswith(":53")], (name, listening)
        assert on_node(address, "systemctl is-system-running || true") in ("running",
                                                                          "degraded")
        assert not on_node(address, "systemctl --failed --no-legend --plain"), name
    # the db node runs MariaDB from govhost, the others do not
    assert on_node(NODES["n2"], "systemctl is-active mariadb") == "active"
    assert on_node(NODES["n1"], "systemctl is-active mariadb || true") != "active"
    # An upgrade of the node package and back on n1, while keepalived's probe and a release
    # step run there in a loop: each run sees one whole version, never a mix of files. (One
    # node: the other two run the same tasks, and their loops only slowed the upgrade down.)
    from controlplane.core import inventory
    from controlplane.sites import bootstrap
    inv = inventory.load(county)
    changed = county.parent / "govhost_node"
    shutil.copytree(REPO / "govhost_node", changed, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("node.py", "vrrp_check.py", "layout.py", "releases.py"):
        with open(changed / name, "a") as f:
            f.write("\n# an upgrade\n")
    n1 = NODES["n1"]
    before = on_node(n1, "readlink /usr/local/lib/govhost/current")
    versions = {}
    for run, package in (("up", changed), ("back", REPO / "govhost_node")):
        with ProbeLoops(n1) as loops:
            res = bootstrap.run(inv.hosts, [n for n in inv.hosts.nodes if n.name == "n1"],
                                county / ".govhost" / f"runner-{run}",
                                county / ".govhost" / "known_hosts", package=package)
        assert all(r.ok for r in res.values()), {n: r.errors for n, r in res.items()}
        assert [n for n, r in res.items() if r.changed] == ["n1"]
        assert loops.failures == [] and loops.runs > 10, (loops.failures, loops.runs)
        versions[run] = on_node(n1, "readlink /usr/local/lib/govhost/current")
        assert versions[run] in on_node(n1, "cat /usr/local/sbin/govhost-node")
    assert versions["up"] != versions["back"] == before
    # the version before is kept (a command started before the switch may still import it)
    assert on_node(n1, "ls /usr/local/lib/govhost/versions").split() == sorted(
        v.removeprefix("versions/") for v in versions.values())
    # every node runs the same version
    assert {on_node(a, "readlink /usr/local/lib/govhost/current")
            for a in NODES.values()} == {before}
    # A second bootstrap changes nothing (Ansible's changed count is 0).
    res = bootstrap.run(inv.hosts, list(inv.hosts.nodes), county / ".govhost" / "runner2",
                        county / ".govhost" / "known_hosts")
    assert all(r.ok for r in res.values()), {n: r.errors for n, r in res.items()}
    assert [n for n, r in res.items() if r.changed] == []
    second = apply(county)
    assert {n["result"] for n in second["nodes"]} == {"unchanged"}


class ProbeLoops:
    """On one node, keepalived's probe (`vrrp check alive`, its streaks kept apart from
    keepalived's) and `govhost-node status` run back to back until the block ends; a run
    that fails is recorded with what it printed."""
    SCRIPT = ("export GOVHOST_VRRP_STREAKS=/run/govhost-test-streaks; n=0; "
              "for i in $(seq 1 3000); do [ -e /run/govhost-test-stop ] && break; n=$i; "
              "/usr/local/sbin/govhost-node vrrp check alive {a} 0 >/tmp/p.out 2>&1 "
              "|| {{ echo \"FAIL probe $i\"; head -c 300 /tmp/p.out; }}; "
              "/usr/local/sbin/govhost-node status >/tmp/p.out 2>&1 "
              "|| {{ echo \"FAIL status $i\"; head -c 300 /tmp/p.out; }}; "
              "done; echo \"RUNS $n\"")

    def __init__(self, address: str):
        self.address = address
        self.failures: list[str] = []
        self.runs = 0

    def __enter__(self) -> "ProbeLoops":
        import subprocess
        on_node(self.address, "rm -f /run/govhost-test-stop")
        self.proc = subprocess.Popen([*lab.ssh_argv(self.address),
                                      self.SCRIPT.format(a=self.address)],
                                     stdout=subprocess.PIPE, text=True)
        time.sleep(2)       # runs before the switch, and (below) after it
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(2)
        on_node(self.address, "touch /run/govhost-test-stop")
        out, _ = self.proc.communicate(timeout=120)
        self.failures = [line for line in out.splitlines() if not line.startswith("RUNS ")]
        self.runs = int(next((line.split()[1] for line in out.splitlines()
                              if line.startswith("RUNS ")), "0"))


# ------------------------------------------------------------------ content follows replicas

def test_raising_replicas_never_serves_a_placeholder(county):
    rid = publish(county, "jiaoyu", PAGES)
    before = placement(county, "jiaoyu")
    assert len(before) == 2
    new = next(n for n in NODES if n not in before)
    set_replicas(county, "jiaoyu", 3)
    with Continuity("jiaoyu.qingshui.gov.cn", PAGES) as loop:
        res = apply(county)
    assert loop.wrong == [], loop.wrong[:5]
    assert sum(loop.counts.values()) > 100 and not loop.unanswered
    moved = [m for m in res["content"] if m["to"] == new and m["tenant"] == "jiaoyu"]
    assert moved and moved[0]["ok"] and rid in moved[0]["releases"]
    h = holdings(NODES[new], "jiaoyu")
    assert h["current"] == rid and h["intact"] and h["files"] == len(PAGES)
    assert sorted(placement(county, "jiaoyu")) == ["n1", "n2", "n3"]


def test_drift_is_reported_and_healed(county):
    rid = holdings(NODES["n1"], "jiaoyu")["current"]
    # A change the tamper watcher missed (it was down): status and apply are the second line.
    with tamper_watcher_stopped(NODES["n3"]):
        on_node(NODES["n3"], "f=/srv/govhost/sites/jiaoyu/current/about.html; "
                "cp $f $f.x && echo defaced > $f.x && mv $f.x $f")
        data = json.loads(govhost(county, "status", "--json", check=False).stdout)
        drift = [p for p in data["problems"] if "jiaoyu" in p["where"] and "n3" in p["where"]]
        assert drift and "changed" in drift[0]["what"], data["problems"]
        with Continuity("jiaoyu.qingshui.gov.cn", {"about.html": "关于我们"}) as loop:
            res = apply(county)
    assert [m for m in res["content"] if m["to"] == "n3" and m["ok"]]
    h = holdings(NODES["n3"], "jiaoyu")
    assert h["current"] == rid and h["intact"]
    # the defaced page was live on n3 until apply put it back: only n3 answered it
    assert {w[0] for w in loop.wrong} <= {"n3"}


def test_draining_a_replica_moves_content_first(county):
    set_replicas(county, "jiaoyu", 2)
    set_replicas(county, "gongan", 2)       # 3 replicas cannot fit on 2 nodes
    apply(county)
    reps = placement(county, "jiaoyu")
    # Not n1: it stays the first replica (the upload area) of its units, whose upload areas
    # the wipe test below brings back from the backup.
    victim = next((n for n in reps if n != "n1"), reps[0])
    govhost(county, "node", "drain", victim, check=True)
    with Continuity("jiaoyu.qingshui.gov.cn", PAGES) as loop:
        apply(county)
    govhost(county, "node", "undrain", victim, check=True)
    assert loop.wrong == [], loop.wrong[:5]
    after = placement(county, "jiaoyu")
    assert victim not in after and len(after) == 2
    for n in after:
        assert holdings(NODES[n], "jiaoyu")["intact"]


# ------------------------------------------------------------------ machine events

def test_reboot_brings_every_service_back_without_apply(county):
    st = json.loads(govhost(county, "status", "--json", check=True).stdout)
    boot_before = {n["node"]: n.get("boot_time") for n in st["nodes"]}
    timers = on_node(NODES["n2"], "systemctl list-timers --all --no-legend --plain")
    assert "govhost-backup" in timers
    with Continuity("jiaoyu.qingshui.gov.cn", PAGES) as loop:
        lab.reboot("n2")          # the db node: MariaDB, PHP pools, agent, timers
        deadline = time.time() + 60
        while time.time() < deadline and on_node(
                NODES["n2"], "systemctl is-active govhost-nginx || true") != "active":
            time.sleep(0.5)
        time.sleep(1)
    assert loop.wrong == [], loop.wrong[:5]
    for unit in ("govhost-nginx", "govhost-php-fpm", "govhost-agent", "govhost-node-exporter",
                 "mariadb"):
        assert on_node(NODES["n2"], f"systemctl is-active {unit} || true") == "active", unit
    assert on_node(NODES["n2"], "systemctl list-timers --all --no-legend --plain") \
        .count("govhost-backup") == timers.count("govhost-backup")
    st = json.loads(govhost(county, "status", "--json", check=True).stdout)
    n2 = next(n for n in st["nodes"] if n["node"] == "n2")
    assert n2["boot_time"] and n2["boot_time"] > (boot_before["n2"] or 0)
    assert not [p for p in st["problems"] if p["severity"] == "error"], st["problems"]
    # PHP with its database answers on the db node after the reboot
    conn = http.client.HTTPConnection(NODES["n2"], 80, timeout=10)
    conn.request("GET", "/", headers={"Host": "renshe.qingshui.gov.cn"})
    assert conn.getresponse().status == 200


def test_wiped_node_is_replaced_with_everything_it_held(county):
    """n1 holds content, units' upload areas and the county's backup repository. Its disk
    dies; `node replace` brings back its content from peers, the upload areas (work not yet
    published) from the backup, and the repository itself from the off-site copy on n3 with
    every unit's history, so that the next backup run works."""
    victim = "n1"
    before = {t: holdings(NODES[victim], t) for t in ("jiaoyu",)
              if victim in placement(county, "jiaoyu")}
    if not before:
        # make sure the victim holds jiaoyu with a release kept for rollback
        set_replicas(county, "jiaoyu", 3)
        apply(county)
    publish(county, "jiaoyu", {**PAGES, "about.html": "关于我们 v2"})
    pages = {**PAGES, "about.html": "关于我们 v2"}
    held = holdings(NODES[victim], "jiaoyu")
    assert len(held["releases"]) >= 2
    # Unpublished work in the upload area of a unit whose first replica is the victim.
    placed = json.loads(govhost(county, "plan", "--json", check=True).stdout)["placement"]
    drafter = next(t for t, ns in sorted(placed.items()) if ns[0] == victim and not (
        county / "tenants" / f"{t}.yaml").read_text().count("type: proxy"))
    draft = f"/srv/govhost/sites/{drafter}/upload/draft-通知.html"
    on_node(NODES[victim], f"printf '未发布的草稿' > '{draft}' && chown gh-{drafter}: '{draft}'")
    govhost(county, "backup", "run", check=True, timeout=1200)   # what a county has nightly
    govhost(county, "backup", "copy", check=True, timeout=1200)  # and off-site
    history = Counter(s["tenant"] for s in json.loads(govhost(
        county, "backup", "list", "--json", check=True).stdout))
    php_only_here = [t for t in ("renshe", "zhujian") if placement(county, t) == [victim]]
    # A citizen's message taken by the victim (its second copy on a peer), and one answered.
    from tests.integration.test_messages_lab import SOURCES
    from tests.integration.test_messages_lab import request as request_page
    from tests.integration.test_messages_lab import write as write_message
    status, taken = write_message(NODES[victim], SOURCES[0])
    assert status == 200, taken
    govhost(county, "messages", "answer", taken["number"], "--text", "已收到，正在办理。",
            check=True)
    with Continuity("jiaoyu.qingshui.gov.cn", pages) as loop:
        lab.wipe(victim)
        assert on_node(NODES[victim], "command -v nginx || echo none") == "none"
        proc = govhost(county, "node", "replace", victim, "--json", timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = json.loads(proc.stdout)
    assert out["result"] == "replaced", out
    assert out["repository"]["rebuilt"] and out["repository"]["copied"] >= sum(
        history.values()), out["repository"]
    assert out["repository"]["control_backup"]       # a control snapshot beside it again
    restored = {r["tenant"]: r for r in out["restored"]}
    for t in php_only_here:      # PHP files/ of a unit with no other replica: from the backup
        assert restored[t]["php_files"]["restored"], restored
    assert restored[drafter]["upload"]["restored"], restored
    assert on_node(NODES[victim], f"cat '{draft}'") == "未发布的草稿"
    assert loop.wrong == [], loop.wrong[:5]
    after = holdings(NODES[victim], "jiaoyu")
    assert after["current"] == held["current"] and after["intact"]
    assert set(held["releases"]) <= set(after["releases"])
    assert on_node(NODES[victim], "systemctl is-active govhost-nginx govhost-agent").split() \
        == ["active", "active"]
    # No unit lost its history, and the next run adds to it.
    now = Counter(s["tenant"] for s in json.loads(govhost(
        county, "backup", "list", "--json", check=True).stdout))
    assert all(now[t] >= n for t, n in history.items()), (history, now)
    run = json.loads(govhost(county, "backup", "run", "jiaoyu", "--json", timeout=900).stdout)
    assert run["failed"] == 0, run
    # The message is on two machines again, the victim one of them; its answer is shown there.
    assert out["messages"]["copies"] >= 1 and out["messages"]["answers_of"] >= 1, out
    held = {m["number"]: m for m in json.loads(govhost(
        county, "messages", "list", "--json", check=True).stdout)["messages"]}
    assert victim in held[taken["number"]]["stored_on"] and held[taken["number"]]["copies"] == 2
    status, body = request_page(NODES[victim], "GET", f"/hudong/reply?t={taken['token']}",
                                source=SOURCES[0])
    assert status == 200 and "已收到，正在办理" in body.decode()


def test_timers_run_and_their_failure_is_visible(county):
    """Every backup timer govhost installs is listed where it belongs; starting its service
    by hand makes a backup; a failing run shows in the journal and in the agent's metrics."""
    found = {}
    for name, address in NODES.items():
        listed = on_node(address, "systemctl list-timers --all --no-legend --plain "
                         "'govhost-backup-*'")
        found[name] = sorted({w[:-len(".timer")] for w in listed.split() if w.endswith(".timer")})
    assert any(found.values()), found
    # a node that backs up units' files runs a `run` timer; start its service by hand
    node, run = next((n, t) for n, ts in found.items() for t in ts if "-run-" in t)
    address = NODES[node]
    before = len(json.loads(govhost(county, "backup", "list", "--json", check=True).stdout))
    # oneshot: waits for the backup, however long it takes on a busy machine
    on_node(address, f"systemctl start {run}.service", timeout=600)
    after = len(json.loads(govhost(county, "backup", "list", "--json", check=True).stdout))
    assert after > before
    assert on_node(address, f"systemctl show -p Result --value {run}.service") == "success"
    # A broken restic: the run fails, systemd says so, the journal says why, metrics show it.
    on_node(address, "chmod -x /usr/bin/restic")
    try:
        on_node(address, f"systemctl start {run}.service || true", timeout=600)
        assert on_node(address, f"systemctl is-failed {run}.service || true") == "failed"
        journal = on_node(address, f"journalctl -u {run}.service -n 50 --no-pager")
        assert "govhost-backup" in journal and ("restic" in journal or "failed" in journal)
        metrics = node_metrics(county, address)
        failing = [line for line in metrics.splitlines()
                   if line.startswith("govhost_tenant_backup_failing{") and line.endswith(" 1")]
        assert failing, metrics[-2000:]
    finally:
        on_node(address, "chmod +x /usr/bin/restic")
        on_node(address, f"systemctl reset-failed {run}.service || true")


def test_a_fourth_node_joins_takes_its_share_and_leaves_again(county):
    hosts = yaml.safe_load((county / "hosts.yaml").read_text())
    hosts["nodes"].append({"name": "n4", "address": "10.77.0.14", "roles": ["web"],
                           "capacity": 2000, "address6": "fd00:77::14",
                           "floating": "10.77.0.104", "floating6": "fd00:77::104", "vrid": 53})
    (county / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    lab.up(4)
    four = {**NODES, "n4": "10.77.0.14"}
    live = holdings(NODES[placement(county, "jiaoyu")[0]], "jiaoyu")["current"]
    pages = {**PAGES, "about.html": "关于我们 v2"}
    with Continuity("jiaoyu.qingshui.gov.cn", pages, nodes=four) as loop:
        proc = govhost(county, "node", "add", "n4", "--json", timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = json.loads(proc.stdout)
    assert out["result"] == "added" and out["replicas"], out
    assert loop.wrong == [], loop.wrong[:5]
    # every unit it now holds that was published has its live content there, intact
    st = json.loads(govhost(county, "status", "--json", check=True).stdout)
    assert not [p for p in st["problems"] if "drift" in p["what"]], st["problems"]
    if "jiaoyu" in out["replicas"]:
        assert holdings("10.77.0.14", "jiaoyu")["current"] == live

    with Continuity("jiaoyu.qingshui.gov.cn", pages, nodes=four) as loop:
        proc = govhost(county, "node", "remove", "n4", "--json", timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert json.loads(proc.stdout)["result"] == "drained"
    assert loop.wrong == [], loop.wrong[:5]
    hosts["nodes"] = [n for n in hosts["nodes"] if n["name"] != "n4"]
    (county / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    proc = govhost(county, "node", "remove", "n4", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["result"] == "forgotten"
    lab.stop("n4")
    assert {n["result"] for n in apply(county)["nodes"]} <= {"unchanged", "applied"}


def test_a_replica_that_cannot_receive_its_content_keeps_the_old_placement(county):
    pages = {"index.html": "统计局 首页", "a.html": "统计公报"}
    rid = publish(county, "tongji", pages)
    before = placement(county, "tongji")
    new = next(n for n in NODES if n not in before)
    # A file where the unit's directory must go: the copy to `new` fails.
    on_node(NODES[new], "rm -rf /srv/govhost/sites/tongji && touch /srv/govhost/sites/tongji")
    set_replicas(county, "tongji", 3)
    try:
        with Continuity("tongji.qingshui.gov.cn", pages) as loop:
            res = apply(county, expect_rc=1)
        assert res["result"] == "partial" and res["kept_placement"] == ["tongji"], res
        failed = [m for m in res["content"] if m["tenant"] == "tongji"]
        assert failed and not failed[0]["ok"] and failed[0]["to"] == new
        assert applied_placement(county, "tongji") == before     # what the nodes serve
        assert loop.wrong == [], loop.wrong[:5]
    finally:
        on_node(NODES[new], "rm -f /srv/govhost/sites/tongji")
    res = apply(county)                  # the next run moves it
    assert sorted(applied_placement(county, "tongji")) == sorted(NODES)
    assert holdings(NODES[new], "tongji")["current"] == rid
