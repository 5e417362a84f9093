"""bench/state_history.py at a tiny size: every figure is measured, with its floor."""
from __future__ import annotations

from tests.helpers import bench_json


def test_the_state_history_bench_measures_the_everyday_work_against_one_day():
    res = bench_json("state_history", "20", "15")
    assert res["bench"] == "state_history" and (res["units"], res["days"]) == (20, 15)
    for key in ("scrape_s", "round_s", "overview_s", "compliance_unit_s"):
        f = res[key]
        assert f["year"] > 0 and f["floor"] > 0 and f["x_floor"] > 0, (key, f)
    assert res["state_mb"]["year"] > res["state_mb"]["floor"] > 0
