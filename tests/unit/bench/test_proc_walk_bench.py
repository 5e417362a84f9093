"""bench/proc_walk.py at a tiny size: it walks this machine's processes both ways and
reports one JSON object."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_proc_walk_bench_runs_and_reports_both_ways():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "proc_walk.py"), "2", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "proc_walk" and res["rounds"] == 2 and res["processes"] > 0
    assert res["agent_ms"] > 0 and res["psutil_ms"] > 0 and res["psutil_ratio_to_agent"] > 0
