"""bench/remote.py at a tiny size, so that it cannot rot unseen: it starts its own sshd on
loopback, runs every way it compares, and prints one JSON object with a ratio per way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(os.geteuid() != 0, reason="the bench starts its own sshd (root)")
def test_the_remote_bench_runs_and_reports_every_way():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "remote.py"), "2", "--json"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "remote" and res["commands"] == 2
    for part in ("short", "stream_4mib"):
        assert set(res[part]) == {"openssh_shared", "fabric", "openssh_unshared"}
        assert res[part]["openssh_shared"]["ratio_to_openssh_shared"] == 1.0
        assert all(v["median_ms"] > 0 for v in res[part].values())
