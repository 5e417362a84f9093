"""bench/python_build.py at a tiny size, this venv's interpreter alone: every figure is
measured, and the plan is the example county's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_python_bench_times_startup_import_and_plan_of_this_venv():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "python_build.py"), "1",
                          "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "python_build" and res["rounds"] == 1 and res["tests"] is None
    [run] = res["runs"]
    assert run["python"] == sys.executable and run["version"].startswith("3.")
    # importing the control plane is more than starting Python (not a speed: an order)
    assert 0 < run["startup_s"] < run["import_s"] and run["plan_s"] > 0, run
    assert "x_this_venv" not in run
