"""The agent's floating-address metrics: read from the kernel's addresses on the interface."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from govhost_node.agent import floating_metrics, keepalived_running


@pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")
def test_held_away_and_released_from_the_interface(tmp_path):
    # lo always holds 127.0.0.1 (as a local address) and never 127.0.0.77.
    spec = {"interface": "lo", "node": "n2", "probe": "127.0.0.1", "released": False,
            "addresses": [{"home": "n1", "vrid": 50, "address": "127.0.0.1", "address6": None},
                          {"home": "n2", "vrid": 51, "address": "127.0.0.77",
                           "address6": "::1"}]}
    path = tmp_path / "vrrp.json"
    path.write_text(json.dumps(spec))
    marker = tmp_path / "vrrp-released"
    lines = floating_metrics(str(path), str(marker), ())
    assert 'govhost_floating_held{address="127.0.0.1",home="n1"} 1' in lines
    assert 'govhost_floating_held{address="127.0.0.77",home="n2"} 0' in lines
    # held here, home elsewhere: away
    assert 'govhost_floating_away{address="127.0.0.1",home="n1"} 1' in lines
    assert 'govhost_floating_away{address="::1",home="n2"} 0' in lines
    assert "govhost_floating_released 0" in lines
    assert "govhost_floating_released_by_hand 0" in lines and "govhost_vrrp_running 0" in lines
    path.write_text(json.dumps({**spec, "released": True}))      # drained
    lines = floating_metrics(str(path), str(marker), ())
    assert "govhost_floating_released 1" in lines
    assert "govhost_floating_released_by_hand 0" in lines
    marker.touch()                                               # by hand
    path.write_text(json.dumps(spec))
    lines = floating_metrics(str(path), str(marker), ())
    assert "govhost_floating_released 1" in lines
    assert "govhost_floating_released_by_hand 1" in lines


def test_keepalived_running_is_read_from_its_pid_file(tmp_path):
    """A pid file naming a live process that is keepalived; a stale pid file (the process
    gone, or the number reused by another program) is not."""
    if not shutil.which("sleep"):
        pytest.skip("needs sleep")
    import subprocess
    stale = tmp_path / "stale.pid"
    stale.write_text("999999999\n")
    other = tmp_path / "other.pid"
    other.write_text(f"{os.getpid()}\n")          # this python: not keepalived
    assert not keepalived_running((str(stale), str(other), str(tmp_path / "none.pid")))
    # A process named keepalived (a copy of sleep under that name).
    fake = tmp_path / "keepalived"
    shutil.copy(shutil.which("sleep"), fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        for _ in range(100):        # until the kernel shows the new program's name
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "keepalived":
                break
            time.sleep(0.05)
        mine = tmp_path / "k.pid"
        mine.write_text(f"{proc.pid}\n")
        assert keepalived_running((str(stale), str(mine)))
    finally:
        proc.kill()
        proc.wait()
    assert not keepalived_running((str(mine),))


def test_no_spec_no_metrics(tmp_path):
    assert floating_metrics(str(tmp_path / "missing.json")) == []
