"""Placement: distinct nodes, capacity and drains respected, deterministic, sticky, minimal moves."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.errors import PlacementError
from controlplane.core.placement import NodeSlot, Want, place

node_sets = st.lists(st.integers(1, 9), min_size=1, max_size=6, unique=True).map(
    lambda ids: [NodeSlot(f"n{i}", 10_000) for i in sorted(ids)])
wants = st.lists(
    st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), st.integers(1, 3)),
    min_size=1, max_size=60, unique_by=lambda t: t[0]).map(
    lambda ts: [Want(n, r) for n, r in ts])


def _fit(ws, nodes):
    return [Want(w.tenant, min(w.replicas, len(nodes))) for w in ws]


@settings(max_examples=150, deadline=None)
@given(node_sets, wants)
def test_replicas_on_distinct_nodes_and_deterministic(nodes, ws):
    ws = _fit(ws, nodes)
    p = place(ws, nodes)
    for w in ws:
        assert len(p[w.tenant]) == w.replicas
        assert len(set(p[w.tenant])) == w.replicas
    assert p == place(list(reversed(ws)), list(reversed(nodes)))


@settings(max_examples=100, deadline=None)
@given(node_sets, wants, st.data())
def test_drain_moves_only_the_drained_nodes_tenants(nodes, ws, data):
    if len(nodes) < 2:
        return
    ws = _fit(ws, nodes[:-1])
    before = place(ws, nodes)
    drained = data.draw(st.sampled_from([n.name for n in nodes]))
    after = place(ws, nodes, frozenset({drained}), before)
    for w in ws:
        assert drained not in after[w.tenant]
        if drained not in before[w.tenant]:
            assert after[w.tenant] == before[w.tenant]
        else:
            kept = [n for n in before[w.tenant] if n != drained]
            assert all(n in after[w.tenant] for n in kept)


@settings(max_examples=100, deadline=None)
@given(node_sets, wants)
def test_adding_a_node_moves_nothing_and_apply_does_not_reshuffle(nodes, ws):
    ws = _fit(ws, nodes)
    before = place(ws, nodes)
    bigger = nodes + [NodeSlot("n99", 10_000)]
    assert place(ws, bigger, previous=before) == before
    assert place(ws, nodes, previous=before) == before


@settings(max_examples=100, deadline=None)
@given(node_sets, wants, st.integers(1, 40))
def test_capacity_is_never_exceeded(nodes, ws, cap):
    nodes = [NodeSlot(n.name, cap) for n in nodes]
    ws = _fit(ws, nodes)
    try:
        p = place(ws, nodes)
    except PlacementError:
        assert sum(w.replicas for w in ws) > 0
        return
    for n in nodes:
        assert sum(n.name in v for v in p.values()) <= cap


def test_removing_a_node_keeps_other_replicas():
    nodes = [NodeSlot(f"n{i}", 100) for i in range(1, 5)]
    ws = [Want(f"t{i}", 2) for i in range(50)]
    before = place(ws, nodes)
    after = place(ws, nodes[:3], previous=before)
    moved = sum(before[w.tenant] != after[w.tenant] for w in ws)
    on_n4 = sum("n4" in before[w.tenant] for w in ws)
    assert moved == on_n4


def test_not_enough_capacity_names_tenants():
    nodes = [NodeSlot("n1", 1), NodeSlot("n2", 1)]
    with pytest.raises(PlacementError, match=r"cannot place 1 tenant.*b \(needs 2, got 0\)"):
        place([Want("a", 2), Want("b", 2)], nodes)


def test_spread_is_reasonably_even():
    nodes = [NodeSlot(f"n{i}", 10_000) for i in range(1, 4)]
    p = place([Want(f"unit{i:04d}", 2) for i in range(900)], nodes)
    loads = [sum(n.name in v for v in p.values()) for n in nodes]
    assert min(loads) > 500 and max(loads) < 700, loads
