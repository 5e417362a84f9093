"""Monitoring on the real lab: the exporter probes real nginx, the agents count real requests,
a real Prometheus scrapes both and answers every dashboard query, and a stopped nginx turns
into the alerts promtool evaluates on the series actually scraped."""
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.core import inventory, paths
from controlplane.core.county import County
from controlplane.monitoring import dashboards
from controlplane.monitoring import prometheus as monitoring
from controlplane.tls import metrics as tls_metrics
from tests.helpers import example_inventory, free_port

from .conftest import govhost, with_county_keys
from .test_apply_lab import NODES, apply_json, node_metrics, on_node


def _get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def _wait(fn, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")


def _samples(text: str, name: str) -> dict[tuple, float]:
    for fam in text_string_to_metric_families(text):  # a counter's family drops "_total"
        if name in (fam.name, f"{fam.name}_total"):
            return {tuple(sorted(s.labels.items())): s.value for s in fam.samples
                    if s.name == name}
    return {}


@pytest.fixture(scope="module")
def applied(lab_cluster, tmp_path_factory, county_keys):
    """One applied copy of the example county for the module: its tests only read, and the
    one that stops n3's nginx runs last (the next apply starts it again)."""
    dest = tmp_path_factory.mktemp("monitoring") / "inventory"
    return with_county_keys(example_inventory(dest), county_keys)


@pytest.fixture
def exporter(applied):
    county = applied
    apply_json(county)          # after the first test: nothing to change, or n3's nginx back
    port = free_port()
    proc = subprocess.Popen(["govhost", "--inventory", str(county), "exporter", "--listen",
                             f"127.0.0.1:{port}", "--interval", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        _wait(lambda: "govhost_tenant_up" in _get(url), 60, "exporter start")
        yield county, port, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_requests_show_up_in_the_tenants_counters(exporter):
    county, _, _ = exporter
    inv = inventory.load(county)
    placement = json.loads(govhost(county, "plan", "--json", check=True).stdout)["placement"]
    outside = next(n for n in NODES if n not in placement["jiaoyu"])
    key = (("code", "2xx"), ("tenant", "jiaoyu"))
    before = _samples(node_metrics(county, NODES[outside]),
                      "govhost_tenant_requests_total").get(key, 0)
    replica_before = {n: _samples(node_metrics(county, NODES[n]),
                                  "govhost_tenant_requests_total").get(key, 0)
                      for n in placement["jiaoyu"]}
    for _ in range(7):  # through a node without a replica: it proxies to a replica
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--resolve",
                        f"{inv.site_host(inv.tenant('jiaoyu'))}:80:{NODES[outside]}",
                        "http://jiaoyu.qingshui.gov.cn/"], check=True, timeout=10)
    text = node_metrics(county, NODES[outside])
    assert _samples(text, "govhost_tenant_requests_total")[key] == before + 7
    # counted once, where the request entered: the replicas that served it do not count it
    for n in placement["jiaoyu"]:
        after = _samples(node_metrics(county, NODES[n]),
                         "govhost_tenant_requests_total").get(key, 0)
        assert after == replica_before[n]
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_the_lab_and_every_panel_has_data(exporter, tmp_path):
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed (scripts/setup.sh installs it)")
    county, port, url = exporter
    inv = inventory.load(county)
    mon = tmp_path / "mon"
    c = County(county)
    access = tls_metrics.ensure(c.state_dir, inv.secret, inv.hosts, inv.cluster.name)
    monitoring.write(mon, inv.hosts, f"127.0.0.1:{port}", 1, access)
    web = free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={mon / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{web}/api/v1"

    def query(expr: str) -> list:
        data = json.loads(_get(f"{api}/query?{urllib.parse.urlencode({'query': expr})}"))
        assert data["status"] == "success", data
        return data["data"]["result"]

    try:
        def targets_up():
            active = json.loads(_get(f"{api}/targets"))["data"]["activeTargets"]
            return {(t["labels"]["job"], t["labels"].get("node", "")): t["health"]
                    for t in active} if active and all(t["health"] == "up" for t in active
                                                       if t["labels"]["job"] != "node") else None
        health = _wait(targets_up, 60, "Prometheus scraping the exporter and agents")
        assert ("govhost", "") in health and all(("govhost-agent", n) in health for n in NODES)
        for address in NODES.values():  # some traffic, so that rates have something to show
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Host: jiaoyu.qingshui.gov.cn",
                            f"http://{address}/"], timeout=10)
        time.sleep(4)  # a few scrapes: rate() needs two samples
        empty = []
        for board, title, expr in dashboards.queries("jiaoyu"):
            if not _wait(lambda: query(expr), 20, f"data for {title!r}"):
                empty.append((board, title))
        assert empty == []
        assert len(query("govhost_tenant_up")) == len(inv.tenants) * len(NODES)
    finally:
        prom.terminate()
        prom.wait(timeout=30)


def test_stopped_nginx_turns_that_nodes_series_to_zero_and_alerts_fire(exporter, tmp_path):
    county, _, url = exporter
    inv = inventory.load(county)
    on_node(NODES["n3"], "kill -QUIT $(cat /run/govhost-nginx.pid)")
    try:
        stopped = time.time()

        def n3_all_down():
            text = _get(url)
            up = _samples(text, "govhost_tenant_up")
            n3 = [v for k, v in up.items() if ("node", "n3") in k]
            return text if len(n3) == len(inv.tenants) and not any(n3) else None
        text = _wait(n3_all_down, 30, "every tenant's n3 probe series at 0")
        # one probe interval (2 s) plus the round itself
        assert time.time() - stopped < 15
        up = _samples(text, "govhost_tenant_up")
        assert all(v == 1 for k, v in up.items() if ("node", "n3") not in k)
        # The same homepages over each node's IPv6 address (fd00:77::1N): n3's are down too.
        up6 = _samples(text, "govhost_tenant_ipv6_up")
        assert len(up6) == len(inv.tenants) * len(NODES)
        assert all((v == 0) == (("node", "n3") in k) for k, v in up6.items()), up6
        assert _samples(text, "govhost_node_up") == {
            (("node", "n1"),): 1, (("node", "n2"),): 1, (("node", "n3"),): 0}

        # The rules, evaluated by promtool on the series just scraped, held for 10 minutes.
        series = [{"series": "govhost_tenant_up{" + ",".join(f'{k}="{v}"' for k, v in key) + "}",
                   "values": f"{int(v)}x10"} for key, v in up.items()]
        series += [{"series": f'govhost_node_up{{node="{n}"}}',
                    "values": f"{int(v)}x10"}
                   for ((_, n),), v in _samples(text, "govhost_node_up").items()]
        kinds = {t.name: t.kind for t in inv.tenants}
        down_here = [{"exp_labels": {"severity": "warning", "tenant": t, "node": "n3",
                                     "kind": kinds[t]},
                      "exp_annotations": {
                          "summary": f"{t} fails through node n3",
                          "description": f"Visitors whose requests reach n3 do not get the "
                                         f"site of {t}."}} for t in sorted(kinds)]
        case = {"rule_files": [str(paths.REPO / "monitoring" / "rules" / "govhost.yml")],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "GovhostSiteDownOnNode",
                     "exp_alerts": down_here},
                    {"eval_time": "5m", "alertname": "GovhostNodeDown",
                     "exp_alerts": [{"exp_labels": {"severity": "critical", "node": "n3"},
                                     "exp_annotations": {
                                         "summary": "node n3 is down",
                                         "description": "Its nginx does not answer the health "
                                         "probe, or its agent cannot be scraped."}}]},
                    {"eval_time": "9m", "alertname": "GovhostSiteDownEverywhere",
                     "exp_alerts": []}]}]}
        # `govhost status` tells the same story, highlighted as problems
        st = json.loads(govhost(county, "status", "--json", check=True).stdout)
        crit = [(p["where"], p["what"]) for p in st["problems"] if p["severity"] == "critical"]
        assert ("n3", "nginx is not running; `govhost apply` starts it") in crit
        warned = {p["where"] for p in st["problems"] if "fails through n3" in p["what"]}
        assert warned == set(kinds)
        one = json.loads(govhost(county, "status", "jiaoyu", "--json", check=True).stdout)
        assert [t["tenant"] for t in one["tenants"]] == ["jiaoyu"]
        assert one["tenants"][0]["answers"]["n3"] is None
        assert one["tenants"][0]["answers"]["n1"] == 200

        test_file = tmp_path / "scraped_test.yml"
        test_file.write_text(json.dumps(case))  # JSON is YAML
        res = subprocess.run(["promtool", "test", "rules", str(test_file)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        healed = apply_json(county)  # nginx stopped on n3: apply starts it again
        assert next(n for n in healed["nodes"] if n["node"] == "n3")["result"] == "applied"
