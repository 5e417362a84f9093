"""Every lab bench at a tiny size (issue 37): a bench that nobody runs rots unseen. Three did
between stop 54 and stop 56: the exporter's asked the node agent over plain HTTP (the agents
speak TLS with basic auth since issue 19), the compliance bench added up the agent's per-node
figures as if they were a unit's, and the apply bench changed a unit the tiny county does
not have. Running them found a product fault too: a node bootstrapped without `db` in its
roles never got MariaDB when hosts.yaml later gave it `db`.

Each bench runs as an operator runs it (`.venv/bin/python bench/NAME.py ARGS --json`, a
process of its own on the suite's lab) and its last line must be the JSON object with the
figures; the checks below ask for what each bench is there to measure, not for any speed
(speed is never a test's verdict: the figures are what the bench prints).

`node_lifecycle` runs with the heavier ones (GOVHOST_BENCHES=all): it had rotted unseen
until stop 59 (its county had no backup node, so a replacement that must restore upload
areas from the backup could only end "partial"). Not here: `crs_regression` (it reads the
CRS project's own regression tests from a git repository of that project, which this
machine does not have) and the loopback benches, which tests/unit/bench runs. These run
last of the lab modules but for the machine tests: each bench applies a county of its own,
and the next module's example county would then be a new release on every node."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.benches


def _apply_scale(r: dict[str, Any]) -> None:
    for kind in ("full_apply", "incremental_apply"):
        assert r[kind]["result"] == "changed" and r[kind]["x_floor"] > 0, r[kind]
        assert {"stage", "activate_canary", "activate_others"} <= set(r[kind]["phases"]), r[kind]
    assert r["no_change_apply"]["result"] == "unchanged"
    assert r["reload_under_load"]["5xx"] == 0 and r["reload_under_load"]["requests"] > 0


def _exporter_scale(r: dict[str, Any]) -> None:
    assert r["up_in_last_round"] == r["probes_per_round"] == 3 * r["units"]
    assert r["agent_series"] > 0 and r["exporter_series"] > 0
    # the node's CPU was read from its /proc (every figure there; not a speed)
    cpu = r["node_n1_cpu"]
    assert cpu["day_cpu_seconds"] >= cpu["day_cpu_seconds_at_300s"] > 0, cpu
    assert cpu["probe_round_cpu_seconds"] >= 0 and cpu["agent_scrape_cpu_seconds"] >= 0, cpu


def _compliance_scale(r: dict[str, Any]) -> None:
    # the paced crawl met no rate limit, and the county's checks and probe rounds ran
    assert r["one_site_paced_429s"] == 0 and r["county_checks"], r
    assert r["probe_failed"] == 0, r


def _tls_scale(r: dict[str, Any]) -> None:
    for run in r["runs"]:
        assert run["failed"] == 0 and run["https_ok"] == run["https_total"] > 0, run


def _backup_scale(r: dict[str, Any]) -> None:
    # the example county's night: every snapshot made, a restore and a drill that passed
    assert r["ok"] and not r["failures"] and r["figures"]["example county"], r
    assert all(run["drill_ok"] for run in r["runs"]), r


def _publish_scale(r: dict[str, Any]) -> None:
    # a release that changed one file links the rest: K releases take less than K copies
    assert r["files"] == 30 and r["linked"] > 0 and 0 < r["x_full_copies"] < 1, r
    # the publish command timed both ways, each one that went live and indexed its page
    cmd = r["publish_command"]
    assert cmd["rounds"] == 1 and cmd["segmenter_early_seconds"] > 0, cmd
    assert cmd["segmenter_late_seconds"] > 0, cmd


def _console(r: dict[str, Any]) -> None:
    assert r["units"] == 4 and r["overview"]["median_ms"] > 0, r
    assert r["unit_page_node_questions"]["one_unit_ms"] > 0, r


def _content_safety(r: dict[str, Any]) -> None:
    assert r["search_index"]["pages"] == 300 and r["wording"] and r["message_screen"], r


def _messages_lab(r: dict[str, Any]) -> None:
    assert r["accepted"] > 0 and r["lost"] == 0 and r["on_fewer_than_two"] == 0, r


def _answers_sync(r: dict[str, Any]) -> None:
    # both ways every unit's answers reached n3, and the same files
    assert r["ok_one_a_unit"] == r["ok_stream"] == r["held_after_stream"] == 5, r
    assert r["same_files"] and r["one_a_unit_s"] > 0 and r["stream_s"] > 0, r


def _console_split(r: dict[str, Any]) -> None:
    assert set(r["pages"]) >= {"upload page", "review page", "login"}, r


def _console_flood(r: dict[str, Any]) -> None:
    # the attackers reached the console (answers, or uploads held), not a closed door
    assert r["flood_median_ms"] > 0 and r["attackers_got"], r
    assert all(k.isdigit() or k in ("held", "cut off") for k in r["attackers_got"]), r


def _browser_checks(r: dict[str, Any]) -> None:
    assert all(run["errors"] == 0 and run["planted_found_exactly"] for run in r["browser"])


def _waf(r: dict[str, Any]) -> None:
    # each page answered with and without the rules, and the rules' cost is a share
    assert r["pairs"] and all(0 <= p["throughput_cost"] < 1 for p in r["pairs"]), r


def _control_restore(r: dict[str, Any]) -> None:
    # the restored control machine's first apply finds the nodes as they were
    assert r["apply_after_result"] == "unchanged" and r["files"] > 0, r


def _frontdoor(r: dict[str, Any]) -> None:
    assert {"floating", "round-robin"} <= set(r["setups"]), r
    assert all(s["requests"] > 0 for s in r["setups"].values()), r


def _search_whole(r: dict[str, Any]) -> None:
    # an empty index on n3 filled both ways, the same units either way
    assert r["units"] == 3 and r["index_bytes"] > 0, r
    assert r["whole"]["seconds"] > 0 and r["whole"]["reference_seconds"] > 0, r


def _handover(r: dict[str, Any]) -> None:
    assert all(s["hand_overs"] > 0 and s["requests"] > 0 for s in r["setups"].values()), r


def _node_lifecycle(r: dict[str, Any]) -> None:
    # bare machines served the example county, and n3 came back whole with its phases timed
    assert r["bare_to_serving_seconds"] > 0 and r["held_by_n3"] > 0, r
    assert r["replace"]["x_floor"] > 0 and "apply" in r["phases"], r
    assert "restore, search and messages" in r["phases"], r
    assert set(r["side_by_side"]) == {"restore", "search", "messages"}, r


# bench, its tiny arguments, what its figures must show. In the order they run: `waf` and
# `node_lifecycle` last, as they take the lab over to machine nodes of their own (the
# machine tests come next).
TINY: list[tuple[str, list[str], Callable[[dict[str, Any]], None]]] = [
    ("exporter_scale", ["4", "--idle", "2"], _exporter_scale),
    ("console_split", ["20"], _console_split),
    ("console", ["4", "2", "2"], _console),
    ("console_flood", ["2", "2"], _console_flood),
    ("messages_lab", ["20", "--rate", "10"], _messages_lab),
    ("answers_sync", ["5", "2"], _answers_sync),
    ("publish_scale", ["30", "3", "--commands", "1"], _publish_scale),
    ("tls_scale", ["4"], _tls_scale),
    ("browser_checks", ["2"], _browser_checks),
    ("apply_scale", ["4"], _apply_scale),
    ("control_restore", ["--no-setup"], _control_restore),   # the suite ran setup.sh already
    ("backup_scale", ["0", "2"], _backup_scale),
    ("search_whole", ["3", "5", "1"], _search_whole),
    ("handover", ["--cycles", "1"], _handover),
    ("frontdoor", ["--seconds", "5"], _frontdoor),
    ("compliance_scale", ["4", "8"], _compliance_scale),
    ("content_safety", ["300", "4"], _content_safety),
    ("waf", ["1", "1"], _waf),
    ("node_lifecycle", ["3", "2"], _node_lifecycle),
]
# The suite's 45 minutes hold the first thirteen (about 5 minutes on the suite's lab, the
# backup bench half of it); the other six take about 12 minutes more between them and run
# with GOVHOST_BENCHES=all (`GOVHOST_BENCHES=all bash scripts/test.sh`), as before a release.
# handover and frontdoor are the scenarios test_frontdoor_lab.py runs in every suite.
EVERY_RUN = 13


def _selected() -> list:
    every = os.environ.get("GOVHOST_BENCHES") == "all"
    return [pytest.param(*t, id=t[0], marks=() if every or i < EVERY_RUN else
                         pytest.mark.skip(reason="a heavier bench: GOVHOST_BENCHES=all runs it"))
            for i, t in enumerate(TINY)]


@pytest.mark.parametrize("name,args,check", _selected())
def test_a_lab_bench_runs_at_a_tiny_size_and_prints_its_figures(lab_cluster, name, args,
                                                                  check):
    run = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *args, "--json"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    tail = (run.stdout[-3000:] + run.stderr[-3000:])
    assert run.returncode == 0, f"bench/{name}.py failed:\n{tail}"
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["bench"] == name, figures
    check(figures)
