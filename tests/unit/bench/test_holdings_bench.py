"""bench/holdings_scale.py at a tiny size: every figure is measured, with its floor."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_holdings_bench_measures_two_sizes_against_their_floor():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "holdings_scale.py"), "8", "3",
                          "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "holdings_scale" and res["files_per_unit"] == 3
    assert [r["units"] for r in res["runs"]] == [2, 8]
    for r in res["runs"]:
        assert r["full_s"] > 0 and r["floor_s"] > 0 and r["x_floor"] > 0, r
        assert r["one_unit_s"] > 0, r
    assert res["growth_per_unit"] > 0 and res["cache_bytes"] > 0
