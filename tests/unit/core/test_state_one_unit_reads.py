"""A unit's page, `status UNIT` and each probe round read what they need of the state, not
the county's every lineage or node digest list (found by the hunt, stop 67: 36 ms and 26 ms
of each unit page at 5,000 units). Checked against the whole reads they replace."""
from hypothesis import given
from hypothesis import strategies as st_

from controlplane.core.state import State

UNITS = ["jiao", "jiaoyu", "yu", "chahe", "chahe-cun", "_portal"]


@given(st_.lists(st_.tuples(st_.sampled_from(["acme-shared", "acme-u-jiaoyu", "internal-1",
                                               "manual-x", "acme-u-chahe"]),
                            st_.lists(st_.sampled_from(UNITS), max_size=4, unique=True)),
                 min_size=0, max_size=8))
def test_a_units_certificate_is_the_first_lineage_that_names_it(tmp_path_factory, saves):
    st = State(tmp_path_factory.mktemp("certs") / "state.db")
    try:
        for lineage, units in saves:
            st.save_certificate(lineage, issuer="internal", names=[f"{u}.x.cn" for u in units],
                                units=units, not_after=1.0e9)
        whole = st.certificates()
        stamp = st.certificates_stamp()
        for u in UNITS:
            assert st.certificate_of_unit(u) == next(
                (c for c in whole.values() if u in c["units"]), None), u
        if saves:
            lineage, units = saves[0]
            st.save_certificate(lineage, units=[*units, "new-unit"])
            assert st.certificates_stamp() != stamp
    finally:
        st.close()


def test_the_applied_release_ids_are_those_of_the_applied_records(tmp_path):
    st = State(tmp_path / "state.db")
    try:
        assert st.applied_ids() == {}
        st.record_applied("n1", "a" * 16, {"etc/nginx/nginx.conf": "0" * 64}, 1)
        st.record_applied("n2", "b" * 16, {}, 1)
        st.record_applied("n1", "c" * 16, {"x": "1" * 64}, 2)
        assert st.applied_ids() == {n: a.release_id for n, a in st.applied().items()} == {
            "n1": "c" * 16, "n2": "b" * 16}
    finally:
        st.close()
