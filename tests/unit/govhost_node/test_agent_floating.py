"""The agent's floating-address metrics: read from the kernel's addresses on the interface."""
from __future__ import annotations

import json
import shutil

import pytest

from govhost_node.agent import floating_metrics


@pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")
def test_held_away_and_released_from_the_interface(tmp_path):
    # lo always holds 127.0.0.1 (as a local address) and never 127.0.0.77.
    spec = {"interface": "lo", "node": "n2", "probe": "127.0.0.1", "released": False,
            "addresses": [{"home": "n1", "vrid": 50, "address": "127.0.0.1", "address6": None},
                          {"home": "n2", "vrid": 51, "address": "127.0.0.77",
                           "address6": "::1"}]}
    path = tmp_path / "vrrp.json"
    path.write_text(json.dumps(spec))
    lines = floating_metrics(str(path))
    assert 'govhost_floating_held{address="127.0.0.1",home="n1"} 1' in lines
    assert 'govhost_floating_held{address="127.0.0.77",home="n2"} 0' in lines
    # held here, home elsewhere: away
    assert 'govhost_floating_away{address="127.0.0.1",home="n1"} 1' in lines
    assert 'govhost_floating_away{address="::1",home="n2"} 0' in lines
    assert "govhost_floating_released 0" in lines
    path.write_text(json.dumps({**spec, "released": True}))
    assert "govhost_floating_released 1" in floating_metrics(str(path))


def test_no_spec_no_metrics(tmp_path):
    assert floating_metrics(str(tmp_path / "missing.json")) == []
