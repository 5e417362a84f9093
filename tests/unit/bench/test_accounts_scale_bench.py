"""bench/accounts_scale.py at a tiny size: both ways make every unit's accounts in their
scratch copies, and a second run has nothing to do."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("useradd") is None, reason="no shadow tools")
def test_the_accounts_bench_runs_and_reports_both_ways():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "accounts_scale.py"), "12",
                          "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "accounts_scale" and res["units"] == 12 and res["users_made"] == 12
    assert res["now_s"] > 0 and res["before_s"] > 0 and res["before_ratio_to_now"] > 0
    assert res["commands_now"] == 0 and res["commands_before"] == 4 * 12 + 1
    assert res["nothing_to_do_commands"] == 0
