"""bench/backup_status.py at a tiny size: every figure is measured, with its floor."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_backup_status_bench_measures_two_sizes_against_their_floor():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "backup_status.py"), "8",
                          "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "backup_status" and [r["jobs"] for r in res["runs"]] == [2, 8]
    for r in res["runs"]:
        assert r["seconds"] > 0 and r["floor_s"] > 0 and r["status_bytes"] > 0, r
    assert res["growth_per_job"] > 0
