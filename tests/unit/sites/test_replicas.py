"""Content follows its replicas: the pure move plan and drift."""
from hypothesis import given
from hypothesis import strategies as st

from controlplane.sites.replicas import Holding, drift, plan_moves

L = "20261130T120000-aaaaaa"
OLD = "20261129T120000-bbbbbb"


def held(current=L, releases=(OLD, L), intact=True):
    return Holding(current, tuple(releases), intact)


def test_new_replica_gets_live_and_kept_releases_from_a_current_replica():
    holdings = {"n1": {"t": held()}, "n2": {"t": held()}, "n3": {}}
    p = plan_moves({"t": ("n1", "n2", "n3")}, {"t": ("n1", "n2")}, {"t": L}, holdings, keep=5)
    assert len(p.moves) == 1
    m = p.moves[0]
    assert (m.source, m.target, m.live, m.releases) == ("n1", "n3", L, (OLD, L))
    assert not p.stranded


def test_a_modified_copy_is_neither_a_source_nor_left_alone():
    holdings = {"n1": {"t": held(intact=False)}, "n2": {"t": held()}}
    p = plan_moves({"t": ("n1", "n2")}, {"t": ("n1", "n2")}, {"t": L}, holdings, keep=5)
    assert [(m.source, m.target) for m in p.moves] == [("n2", "n1")]
    assert [d.why for d in drift({"t": ("n1", "n2")}, {"t": L}, holdings)] == ["modified"]


def test_no_intact_copy_anywhere_is_stranded():
    holdings = {"n1": {}, "n2": {"t": held(intact=False)}}
    p = plan_moves({"t": ("n1",)}, {"t": ("n1",)}, {"t": L}, holdings, keep=5)
    assert p.stranded == {"t": L} and not p.moves


def test_unpublished_units_and_unreachable_nodes_are_not_judged():
    holdings = {"n1": {}}
    assert drift({"t": ("n1", "n2"), "u": ("n1",)}, {"t": L}, holdings)[0].node == "n1"
    assert len(drift({"t": ("n1", "n2"), "u": ("n1",)}, {"t": L}, holdings)) == 1


def test_drift_names_older_and_other_releases():
    holdings = {"n1": {"t": held(current=OLD)}, "n2": {"t": held(current="20271231T000000-cccccc")}}
    assert {d.node: d.why for d in drift({"t": ("n1", "n2")}, {"t": L}, holdings)} == \
        {"n1": "older", "n2": "other"}


nodes = st.sampled_from(["n1", "n2", "n3", "n4"])


@given(st.lists(nodes, min_size=1, max_size=4, unique=True),
       st.lists(nodes, min_size=1, max_size=4, unique=True),
       st.dictionaries(nodes, st.booleans()))
def test_after_the_moves_every_reachable_replica_holds_the_live_release(new, old, good):
    """Property: each replica lacking the live release gets exactly one move from a node that
    holds it intact, unless no node does (then the unit is stranded)."""
    holdings = {n: ({"t": held()} if ok else {}) for n, ok in good.items()}
    p = plan_moves({"t": tuple(new)}, {"t": tuple(old)}, {"t": L}, holdings, keep=3)
    sources = {n for n, ok in good.items() if ok}
    lacking = [n for n in new if n in holdings and n not in sources]
    if lacking and not sources:
        assert p.stranded == {"t": L}
    else:
        assert sorted(m.target for m in p.moves) == sorted(lacking)
        assert all(m.source in sources and m.source != m.target for m in p.moves)
        assert all(m.releases[-1] == L and len(m.releases) <= 3 for m in p.moves)
