"""bench/messages_scale.py at a tiny size: it accepts messages through two loopback servers,
lists a unit's answers and the county's overdue list, and reports one JSON object."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_messages_bench_runs_and_reports_every_figure():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "messages_scale.py"), "6", "50",
                          "--clients", "3", "--json"], capture_output=True, text=True,
                         timeout=300, check=True, cwd=REPO).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "messages_scale"
    assert res["accept"]["accepted"] == 6 and res["accept"]["lost"] == 0
    assert res["list"]["answers"] == 50 and res["list"]["first_page"]["n"] == 30
    assert res["overdue"]["indexed"] == 50 and res["overdue"]["overdue"] > 0
    assert set(res["targets"]) == {"accept_100_per_s", "accept_p99_ms", "list_10000_p99_ms",
                                   "overdue_page_p99_ms"}
