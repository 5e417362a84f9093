"""bench/nginx_parse.py at a tiny size: the real nginx reads a generated node's release four
ways and the figures are all there, the contexts counted and the CRS's share split."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import can_run_nginx

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(not can_run_nginx(), reason="needs root and nginx (the node packages)")
def test_the_nginx_parse_bench_reads_the_release_four_ways():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "nginx_parse.py"), "12", "3", "1",
                          "--json"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["bench"] == "nginx_parse" and res["units"] == 12
    # every unit has a server file on every node (a node proxies the units it does not hold),
    # and the node its default and portal servers
    assert res["vhosts"] == 14
    assert res["contexts"]["server"] >= 14 and res["contexts"]["location"] > res["vhosts"]
    assert res["waf_rules"] > 100                   # the CRS was really loaded
    for name in ("as_rendered", "without_crs", "without_servers", "bare"):
        assert res[name]["seconds"] > 0 and res[name]["peak_rss_mb"] > 0, name
    # the rules take memory wherever they are read (by peak memory, which does not wobble
    # as time does)
    assert res["as_rendered"]["peak_rss_mb"] > res["without_crs"]["peak_rss_mb"]
    assert res["crs_read_mb"] > 0
