"""One unit's page reads that unit's figures from each node's agent, and leaves the other
units' lines out before parsing (at 5,000 units on 3 nodes, parsing every node's 18,000
samples was most of the page's time). Whatever the names, the unit's own figures, the node's
and the config release's come out as from the whole text."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.sites import status

NAMES = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")


def _exposition(units: list[str], seed: int) -> str:
    """Samples as govhost-agent writes them (govhost_node/agent.py), in its families."""
    rnd = random.Random(seed)
    fams = {
        "govhost_tenant_requests_total": lambda t: [
            f'govhost_tenant_requests_total{{tenant="{t}",code="{c}"}} {rnd.randint(0, 9999)}'
            for c in ("2xx", "3xx", "4xx", "5xx")],
        "govhost_tenant_response_bytes_total": lambda t: [
            f'govhost_tenant_response_bytes_total{{tenant="{t}"}} {rnd.randint(0, 10**9)}'],
        "govhost_tenant_disk_bytes": lambda t: [
            f'govhost_tenant_disk_bytes{{tenant="{t}"}} {rnd.randint(0, 10**9)}'],
        "govhost_tamper_incidents_total": lambda t: [
            f'govhost_tamper_incidents_total{{tenant="{t}"}} {rnd.randint(0, 3)}'],
        "govhost_tamper_unrepaired_files": lambda t: [
            f'govhost_tamper_unrepaired_files{{tenant="{t}"}} {rnd.randint(0, 1)}'],
    }
    out = ["# HELP govhost_tamper_watcher_up whether the watcher runs",
           "# TYPE govhost_tamper_watcher_up gauge", "govhost_tamper_watcher_up 1",
           "# TYPE govhost_node_updates_pending gauge",
           'govhost_node_updates_pending{kind="security"} 4']
    for fam, make in fams.items():
        out += [f"# HELP {fam} a figure of each unit", f"# TYPE {fam} "
                f"{'counter' if fam.endswith('_total') else 'gauge'}"]
        for t in [*units, "_config"]:
            out += make(t)
    return "\n".join(out) + "\n"


def _read(text: str, only: str | None) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(status.tls_metrics, "read", lambda *a, **k: text)
        got = status.agent_metrics("10.77.0.11", None, only=only)
    assert got is not None
    return got


@settings(max_examples=60, deadline=None)
@given(names=st.lists(NAMES, min_size=1, max_size=12, unique=True), pick=st.integers(0, 11),
       seed=st.integers(0, 1000))
def test_one_units_figures_are_those_of_the_whole_text(names, pick, seed):
    # names that share a beginning with the one asked for ("jiaoyu", "jiaoyu2", "jiaoyu-x")
    unit = names[pick % len(names)]
    units = sorted({*names, unit + "2", unit + "-x", "x" + unit})
    text = _exposition(units, seed)
    whole = _read(text, None)
    one = _read(text, unit)
    for key in (unit, "_config", "_node"):
        assert one[key] == whole[key], key
    assert set(one) == {unit, "_config", "_node"}


def test_the_filter_leaves_out_the_other_units_lines():
    text = _exposition(["jiaoyu", "jiaoyu2", "wenlv"], 1)
    kept = status.only_units(text, ("jiaoyu",))
    assert 'tenant="jiaoyu"' in kept and "govhost_tamper_watcher_up 1" in kept
    assert 'tenant="jiaoyu2"' not in kept and 'tenant="wenlv"' not in kept
