"""bench/tamper_sweep.py at a tiny size: a sweep and a full check of a temporary tree, one
JSON object on the last line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_tamper_sweep_bench_runs_and_reports_both_passes():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "tamper_sweep.py"), "2", "5",
                          "--json"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "tamper_sweep" and res["files"] == 10
    assert res["full_cpu_s"] > 0 and res["sweep_cpu_s"] >= 0
    assert len(out.strip().splitlines()) == 1          # --json: only the figures
