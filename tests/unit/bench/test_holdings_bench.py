"""bench/holdings_scale.py at a tiny size: every figure is measured, with its floor."""
from __future__ import annotations

from tests.helpers import bench_json


def test_the_holdings_bench_measures_two_sizes_against_their_floor():
    res = bench_json("holdings_scale", "8", "3")
    assert res["bench"] == "holdings_scale" and res["files_per_unit"] == 3
    assert [r["units"] for r in res["runs"]] == [2, 8]
    for r in res["runs"]:
        assert r["full_s"] > 0 and r["floor_s"] > 0 and r["x_floor"] > 0, r
        assert r["one_unit_s"] > 0, r
    assert res["growth_per_unit"] > 0 and res["cache_bytes"] > 0
