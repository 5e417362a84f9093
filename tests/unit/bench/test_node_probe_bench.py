"""bench/node_probe.py at a tiny size: it runs keepalived's probe, curl and an empty python3
against a listener of its own and reports one JSON object."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("curl"),
                    reason="port 80 needs root; the comparison needs curl")
def test_the_node_probe_bench_runs_and_reports_every_way():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "node_probe.py"), "2", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "node_probe" and res["rounds"] == 2 and res["failed"] == 0
    assert res["probe_cpu_ms"] > 0 and res["curl_wall_ms"] > 0
    assert res["probe_cpu_ratio_to_curl"] > 0
