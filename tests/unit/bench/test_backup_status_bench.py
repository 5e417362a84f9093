"""bench/backup_status.py at a tiny size: every figure is measured, with its floor."""
from __future__ import annotations

from tests.helpers import bench_json


def test_the_backup_status_bench_measures_two_sizes_against_their_floor():
    res = bench_json("backup_status", "8")
    assert res["bench"] == "backup_status" and [r["jobs"] for r in res["runs"]] == [2, 8]
    for r in res["runs"]:
        assert r["seconds"] > 0 and r["floor_s"] > 0 and r["status_bytes"] > 0, r
        assert r["merge_s"] > 0 and r["merges_per_minute_s"] >= 0, r
    assert res["growth_per_job"] > 0
