"""bench/page_reading.py at a tiny size: both pages read, their findings counted, one JSON
object on the last line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_page_reading_bench_runs_and_reports_both_pages():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "page_reading.py"), "50",
                          "--json"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "page_reading" and res["n"] == 50
    assert res["hits"]["findings"] == 50 and res["script"]["seconds"] > 0
    assert res["hits"]["ratio"] > 0 and len(out.strip().splitlines()) == 1
