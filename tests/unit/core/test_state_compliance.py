"""The week's compliance verdicts, of the county or of one unit (its console page)."""
from __future__ import annotations

from controlplane.core.state import State


def test_one_units_verdicts_are_those_of_the_latest_week(tmp_path):
    st = State(tmp_path / "state.db")
    try:
        st.record_compliance("2026-W48", 100.0, {"jiaoyu": {"a": {"ok": False}},
                                                 "wenlv": {"a": {"ok": True}}})
        st.record_compliance("2026-W49", 200.0, {"jiaoyu": {"a": {"ok": True}},
                                                 "wenlv": {"a": {"ok": False}}})
        whole = st.compliance()
        one = st.compliance(None, tenant="wenlv")
        assert one == {"wenlv": whole["wenlv"]}
        assert one["wenlv"]["week"] == "2026-W49" and not one["wenlv"]["verdicts"]["a"]["ok"]
        assert st.compliance("2026-W48", tenant="jiaoyu")["jiaoyu"]["verdicts"] == \
            {"a": {"ok": False}}
        assert st.compliance(None, tenant="nosuch") == {}
    finally:
        st.close()
