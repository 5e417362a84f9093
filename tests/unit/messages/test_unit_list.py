"""A unit's message list (the console's, `messages list --unit`) and the hourly reminder's
open messages, read from the state for that unit or those messages alone (found by the
hunt, stop 67: a unit's list built every message of the county, 369 ms at 40,000, and the
index is never pruned). Checked against the whole read they replace, on a real state
store: messages written to units, forwarded once or twice (on and back), answered, with
answers under review."""
import random
from datetime import date

from controlplane.core.county import County
from controlplane.core.state import State
from controlplane.messages import inbox
from tests.helpers import example_inventory

TODAY = date(2026, 12, 10)
UNITS = ["jiaoyu", "chahe", "wenlv", "caizheng", "zhujian"]


def test_a_units_list_and_the_open_messages_are_those_of_the_whole_read(tmp_path,
                                                                          monkeypatch):
    county = County(example_inventory(tmp_path / "inventory"))
    rnd = random.Random(67)
    with county.state() as st:
        rows = [{"number": f"JY-202612{d:02d}-1-{i:06d}", "unit": rnd.choice(UNITS),
                 "received": f"2026-12-{d:02d}T02:00:00Z", "subject": f"路灯 {i}"}
                for i, d in ((i, rnd.randint(1, 9)) for i in range(1, 121))]
        st.index_messages(rows)
        for r in rows:
            owner = r["unit"]
            for _ in range(rnd.choice((0, 0, 1, 2))):           # forwarded on, maybe back
                to = rnd.choice([u for u in UNITS if u != owner])
                st.add_route(r["number"], owner, to, "不属于本单位职责", "operator")
                owner = to
            fate = rnd.random()
            if fate < 0.4:
                st.record_answer({**r, "text": "t", "token_hash": "ab" * 32}, "已修复", True,
                                 "editor", owner)
            elif fate < 0.6:
                st.add_draft(r["number"], owner, "已修复", True, "editor", ["unit"])
    whole = inbox.known(county, TODAY)
    for unit in UNITS:
        assert inbox.of_unit(inbox.known(county, TODAY, unit=unit), unit) == \
            inbox.of_unit(whole, unit), unit
    assert inbox.known(county, TODAY, open_only=True) == [e for e in whole
                                                          if e.answered_at is None]
    # the unit's read does not read every answer, route or message of the county
    calls = []
    for name in ("answered_at", "routes", "message_index", "drafts"):
        real = getattr(State, name)
        monkeypatch.setattr(State, name, lambda self, *a, _n=name, _r=real, **k:
                            calls.append(_n) or _r(self, *a, **k))
    inbox.known(county, TODAY, unit="wenlv")
    inbox.known(county, TODAY, open_only=True)
    assert "answered_at" not in calls and calls.count("message_index") == 0
