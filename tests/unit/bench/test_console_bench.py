"""bench/console.py --no-lab at a tiny size: the overview of generated units, one page
against one table of every unit, reported as one JSON object."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_overview_bench_runs_in_process_and_reports_both():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "console.py"), "12", "2",
                          "--no-lab", "--json"], capture_output=True, text=True, timeout=300,
                         check=True, cwd=REPO).stdout
    res = json.loads(out.strip().splitlines()[-1])
    got = res["overview_in_process"]
    assert res["bench"] == "console" and res["units"] == 12
    assert got["one_page"]["median_ms"] > 0 and got["every_unit"]["median_ms"] > 0
    assert got["one_page"]["html_kb"] >= 1 and got["every_unit_x_one_page"] > 0
