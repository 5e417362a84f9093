"""Apply on the real lab cluster: every tenant on every node, idempotence, refusal of a bad
tenant, node and control-plane failures, drain and the apply lock."""
import json
import signal
import subprocess
import time
from pathlib import Path

from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.lab import machines as lab
from controlplane.lab import network
from controlplane.sites import probes
from controlplane.tls import metrics as tls_metrics
from tests.helpers import tamper_watcher_stopped

from .conftest import govhost

NODES = {"n1": "10.77.0.11", "n2": "10.77.0.12", "n3": "10.77.0.13"}


def apply_json(inv: Path, expect_rc: int | None = 0) -> dict:
    proc = govhost(inv, "apply", "--yes", "--json")
    data = json.loads(proc.stdout)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, (proc.stdout, proc.stderr)
    return data


def live_release(address: str) -> str | None:
    r = probes.probe("govhost-probe", "-", address, "/release")
    return None if r.status != 200 else _body("govhost-probe", address, "/release").strip()


def _body(host: str, address: str, path: str = "/") -> str:
    out = subprocess.run(["curl", "-s", "--max-time", "5", "--resolve", f"{host}:80:{address}",
                          f"http://{host}{path}"], capture_output=True, text=True)
    return out.stdout


def assert_every_tenant_everywhere(inv_dir: Path) -> None:
    inv = inventory.load(inv_dir)
    failures = []
    for t in inv.tenants:
        host = inv.site_host(t)
        for node, address in NODES.items():
            body = _body(host, address)
            if t.title not in body:
                failures.append(f"{host} on {node}: {body[:80]!r}")
    assert not failures, failures


def on_node(address: str, command: str, timeout: float = 30) -> str:
    out = subprocess.run([*lab.ssh_argv(address, shared=True), command],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (command, out.stderr)
    return out.stdout.strip()


def node_metrics(inv_dir: Path, address: str, port: int = 9273) -> str:
    """A node agent's (9273) or node_exporter's (9100) metrics as Prometheus reads them:
    over TLS checked against the county's metrics CA, with the county's credentials."""
    c = County(inv_dir)
    inv = c.inv
    access = tls_metrics.ensure(c.state_dir, inv.secret, inv.hosts, inv.cluster.name)
    return tls_metrics.read(access, address, port, timeout=10)


def worker_pids(address: str) -> str:
    return on_node(address, "pgrep -x nginx | sort | tr '\\n' ' '")


def test_apply_example_county_then_nothing_changes(county):
    first = apply_json(county)
    assert first["result"] in ("changed", "unchanged")
    assert_every_tenant_everywhere(county)
    # sections, portal, unknown host, hidden files
    assert "河西村" in _body("chahe.qingshui.gov.cn", "10.77.0.12", "/hexi/")
    assert "青水县教育局" in _body("www.qingshui.gov.cn", "10.77.0.13")
    unknown = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                              "Host: nobody.example.org", "http://10.77.0.11/"],
                             capture_output=True, text=True)
    assert unknown.stdout == "000"  # 444: connection closed without a response
    assert probes.probe("jiaoyu.qingshui.gov.cn", "n1", "10.77.0.11", "/.env").status == 404

    workers = {a: worker_pids(a) for a in NODES.values()}
    second = apply_json(county)
    assert second["result"] == "unchanged"
    assert all(n["result"] == "unchanged" for n in second["nodes"])
    assert {a: worker_pids(a) for a in NODES.values()} == workers  # no reload happened
    plan = json.loads(govhost(county, "plan", "--json", check=True).stdout)
    assert plan["changes"] is False


def test_one_changed_tenant_ships_only_its_files(county):
    """Unchanged files of the new release are hard links to the previous one: the delta."""
    apply_json(county)
    _change_title(county, "weijian", "（改）")
    result = apply_json(county)
    assert result["result"] == "changed"
    # where the run's time went: each part that ran, the canary's turn among them
    assert {"plan", "status", "stage", "activate_canary",
            "activate_others"} <= set(result["phases"])
    assert sum(result["phases"].values()) <= result["seconds"] + 0.01, result["phases"]
    stat = ("cd /etc/govhost && p=$(cat previous) && c=$(basename $(readlink current)) && "
            "stat -c %i releases/$p/{f} releases/$c/{f}")
    for address in NODES.values():
        same = on_node(address, stat.format(f="vhosts/jiaoyu.conf")).split()
        assert same[0] == same[1]            # unchanged file: one inode in both releases
    holders = json.loads(govhost(county, "plan", "--json", check=True).stdout)["placement"]
    replica = NODES[holders["weijian"][0]]
    changed = on_node(replica, stat.format(f="pages/weijian/index.html")).split()
    assert changed[0] != changed[1]          # the changed page is a new file
    assert "（改）" in _body("weijian.qingshui.gov.cn", replica)


def test_modified_base_release_gets_the_whole_release(county):
    """Someone edited a file of the live release on n2: status reports it, the delta cannot
    be trusted there, so the node gets the whole release; the edit does not survive."""
    apply_json(county)
    with tamper_watcher_stopped("10.77.0.12"):    # (it would put the file back at once)
        on_node("10.77.0.12",
                "echo '# edited by hand' >> /etc/govhost/current/vhosts/jiaoyu.conf")
        st = json.loads(govhost(county, "status", "--no-probe", "--json", check=True).stdout)
        assert [p["where"] for p in st["problems"]
                if "changed on the node" in p["what"]] == ["n2"]
        _change_title(county, "shuili", "（新）")
        result = apply_json(county)
    assert result["result"] == "changed", result
    assert all(n["result"] == "applied" for n in result["nodes"])
    assert "edited by hand" not in on_node("10.77.0.12",
                                           "cat /etc/govhost/current/vhosts/jiaoyu.conf")
    assert "（新）" in _body("shuili.qingshui.gov.cn", "10.77.0.12")


def refused_apply(county: Path, name: str, manifest: str) -> subprocess.CompletedProcess:
    """Apply with one extra tenant manifest; the apply must fail and no node may change."""
    apply_json(county)
    before = {a: live_release(a) for a in NODES.values()}
    (county / "tenants" / f"{name}.yaml").write_text(manifest)
    proc = govhost(county, "apply", "--yes")
    assert proc.returncode == 1
    assert {a: live_release(a) for a in NODES.values()} == before
    return proc


def test_bad_tenant_refused_by_nginx_keeps_old_release(county):
    proc = refused_apply(county, "shenpi",
                         "name: shenpi\ntitle: 青水县行政审批局\nkind: department\n"
                         "contact: {name: 李四, email: a@b.gov.cn, phone: '0571-1'}\n"
                         "site: {type: proxy, upstreams: ['http://no-such-host.invalid:8080']}\n")
    assert "shenpi" in proc.stderr and "tenants/shenpi.yaml" in proc.stdout
    (county / "tenants" / "shenpi.yaml").unlink()
    assert_every_tenant_everywhere(county)


def test_invalid_manifest_refused_before_touching_nodes(county):
    proc = refused_apply(county, "evil",
                         "name: evil\ntitle: x\nkind: department\n"
                         "contact: {name: a, email: a@b.gov.cn, phone: '1234'}\n"
                         "aliases: ['a.gov.cn; } server { listen 80']\n")
    assert "tenants/evil.yaml: aliases[0]" in proc.stderr


def _start_apply(inv: Path) -> subprocess.Popen:
    return subprocess.Popen(["govhost", "--inventory", str(inv), "apply", "--yes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, word: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    seen = ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if word in line:
            return seen
    raise AssertionError(f"apply never printed {word!r}:\n{seen}")


def _change_title(inv: Path, name: str, suffix: str) -> None:
    p = inv / "tenants" / f"{name}.yaml"
    lines = p.read_text().splitlines()
    lines = [f"{l}{suffix}" if l.startswith("title:") else l for l in lines]
    p.write_text("\n".join(lines) + "\n")


def test_node_down_mid_run_is_partial_and_next_apply_heals(county):
    apply_json(county)
    _change_title(county, "caizheng", "（新）")
    # The tests' shared connection to n3 (on_node) must end with n3's power: a dead node
    # sends no reset, and the next command would wait on the old connection.
    first = on_node(NODES["n3"], "cat /proc/sys/kernel/random/boot_id")
    shared = network.SHARED_SSH / NODES["n3"]
    check = subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={shared}", "-O",
                            "check", NODES["n3"]], capture_output=True, text=True, timeout=10)
    master = int(check.stderr.split("pid=")[1].split(")")[0])
    proc = _start_apply(county)
    _wait_for(proc, "stage")
    lab.stop("n3")
    # the master itself ended (not only its socket gone) by the time stop returned
    assert not network.pid_running(master) and not shared.exists()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "n3" in out and ("unreachable" in out or "failed" in out)
    inv = inventory.load(county)
    host = inv.site_host(inv.tenant("caizheng"))
    for address in ("10.77.0.11", "10.77.0.12"):
        assert "青水县财政局（新）" in _body(host, address)
    lab.up(3)
    if next(n for n in lab.nodes() if n.name == "n3").kind == "machine":
        # A new connection to the node as it booted again, not the dead one's.
        assert on_node(NODES["n3"], "cat /proc/sys/kernel/random/boot_id") != first
    healed = apply_json(county)
    assert healed["result"] == "changed"
    assert_every_tenant_everywhere(county)


_TOOL = "/usr/local/sbin/govhost-node"
# The canary's activation switches and reloads, then fails as a failed probe would.
_FAILING_ACTIVATION = f"""#!/bin/sh
if [ "$1" = activate ]; then {_TOOL}.real "$@"; echo "planted: the probe failed" >&2; exit 1; fi
exec {_TOOL}.real "$@"
"""


def test_a_canary_whose_activation_fails_is_rolled_back_and_stops_the_rest(county):
    apply_json(county)
    before = {n: live_release(a) for n, a in NODES.items()}
    _change_title(county, "nongye", "（金丝雀）")
    n1 = NODES["n1"]
    on_node(n1, f"mv {_TOOL} {_TOOL}.real && cat > {_TOOL} <<'EOF'\n{_FAILING_ACTIVATION}EOF\n"
                f"chmod 755 {_TOOL}")
    try:
        failed = apply_json(county, expect_rc=1)
    finally:
        on_node(n1, f"mv {_TOOL}.real {_TOOL}")
    by_node = {n["node"]: n for n in failed["nodes"]}
    assert by_node["n1"]["result"] == "failed", by_node
    assert "rolled back" in by_node["n1"]["message"], by_node
    assert "planted: the probe failed" in by_node["n1"]["message"], by_node
    for n in ("n2", "n3"):
        assert by_node[n]["result"] == "skipped", by_node
        assert "canary n1 failed" in by_node[n]["message"], by_node
    # every node still serves the release it had, the canary by its rollback (once the
    # workers of the failed release, which a graceful reload lets finish, are gone)
    deadline = time.monotonic() + 15
    while (now := {n: live_release(a) for n, a in NODES.items()}) != before \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert now == before
    host = inventory.load(county).site_host(inventory.load(county).tenant("nongye"))
    assert all("金丝雀" not in _body(host, a) for a in NODES.values())
    # with the node healthy again, the next apply takes the change everywhere
    assert apply_json(county)["result"] == "changed"
    assert all("金丝雀" in _body(host, a) for a in NODES.values())


def test_control_plane_killed_mid_apply_then_next_apply_converges(county):
    apply_json(county)
    _change_title(county, "nongye", "（更新）")
    proc = _start_apply(county)
    _wait_for(proc, "activate")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    result = apply_json(county)
    assert result["result"] in ("changed", "unchanged")
    assert_every_tenant_everywhere(county)
    assert apply_json(county)["result"] == "unchanged"


def test_drain_keeps_every_tenant_answering(county):
    gongan = county / "tenants" / "gongan.yaml"
    gongan.write_text(gongan.read_text().replace("replicas: 3", "replicas: 2"))
    apply_json(county)
    govhost(county, "node", "drain", "n1", check=True)
    apply_json(county)
    placement = json.loads(govhost(county, "plan", "--json", check=True).stdout)["placement"]
    assert all("n1" not in nodes for nodes in placement.values())
    assert_every_tenant_everywhere(county)
    govhost(county, "node", "undrain", "n1", check=True)


def test_two_applies_at_once_second_is_refused(county):
    apply_json(county)
    _change_title(county, "tongji", "（两次）")
    first = _start_apply(county)
    _wait_for(first, "stage")
    second = govhost(county, "apply", "--yes")
    assert second.returncode == 1
    assert "lock" in second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0


def test_a_node_left_as_a_machine_comes_back_as_an_overlay_of_its_own(county):
    """A run cut off before `lab down` leaves a machine node's disk behind; the overlay lab
    started next must not see the bare image's files over the host's (the db node then had
    no `mysql` user and every apply failed there)."""
    d = Path(next(n.dir for n in lab.nodes() if n.name == "n2"))
    lab.stop("n2")
    passwd = [line for line in Path("/etc/passwd").read_text().splitlines()
              if not line.startswith("mysql:")]
    (d / "upper" / "etc").mkdir(parents=True, exist_ok=True)
    (d / "upper" / "etc" / "passwd").write_text("\n".join(passwd) + "\n")
    (d / "kind").write_text("machine\n")
    (d / "image").write_text("bare\n")
    nodes = {n.name: n for n in lab.up(3, "overlay")}
    assert nodes["n2"].kind == "overlay" and nodes["n2"].image == ""
    assert on_node(NODES["n2"], "id -un mysql") == "mysql"
    assert apply_json(county)["result"] == "changed"
    assert_every_tenant_everywhere(county)
