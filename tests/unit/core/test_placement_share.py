"""A node that joins gets its share of replicas, and only those move."""
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.placement import NodeSlot, Want, place, rebalance_onto


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=20, max_value=300), st.integers(min_value=1, max_value=3))
def test_a_fourth_node_takes_about_its_share_and_nothing_else_moves(units, replicas):
    three = [NodeSlot(f"n{i}", 10_000) for i in (1, 2, 3)]
    four = three + [NodeSlot("n4", 10_000)]
    wants = [Want(f"u{i:04d}", replicas) for i in range(units)]
    before = place(wants, three)
    after = place(wants, four, previous=rebalance_onto(wants, four, before, "n4"))
    moved = [t for t in before if before[t] != after[t]]
    for t in moved:
        # exactly one replica moved, and it moved to n4
        assert len(set(before[t]) - set(after[t])) == 1 and "n4" in after[t]
        assert len(after[t]) == replicas
    # the share equals what a fresh placement on four nodes would give n4
    fresh = place(wants, four)
    assert sum("n4" in ns for ns in after.values()) == sum("n4" in ns for ns in fresh.values())
