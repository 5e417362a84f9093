"""bench/plan_scale.py at a tiny size: it plans a generated county with and without the
memo and reports one JSON object, the memo's file made and the runs' figures all there."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_plan_bench_runs_and_reports_every_way_of_planning():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "plan_scale.py"), "40", "3", "1",
                          "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "plan_scale" and res["units"] == 40 and res["nodes"] == 3
    for name in ("no_memo", "first", "warm", "one_edit", "warm_python_default_gc"):
        assert res[name]["seconds"] > 0 and res[name]["load"] > 0, name
    assert res["memo_mb"] > 0 and res["ratio_warm_to_no_memo"] > 0
