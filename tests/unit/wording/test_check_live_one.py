"""A unit's launch checks that unit's live words, not every unit's (stop 66: `check_live`
read each unit's digest list over SSH, 5,001 sessions at 5,000 units for one launch). The
nodes stand in (Link.digests answers, recorded); the lab runs launches for real
(tests/integration/test_compliance_lab.py)."""
from __future__ import annotations

from controlplane.core.county import County
from controlplane.sites.content_sync import Link
from controlplane.wording import check
from tests.helpers import example_inventory


def test_a_launch_reads_its_own_units_files_only(tmp_path, monkeypatch):
    c = County(example_inventory(tmp_path / "inventory"))
    units = [t.name for t in c.inv.tenants if t.site.type != "proxy"]
    with c.state() as st:
        st.save_placements({u: ("n1", "n2") for u in units})
    asked = []
    monkeypatch.setattr(Link, "digests",
                        lambda self, node, tenant, rid="current": asked.append(tenant)
                        or (None, {}))
    got = check.check_live(c, only=units[1])
    assert asked == [units[1]] and list(got["units"]) == [units[1]]
    assert not (c.state_dir / "wording-checked").exists()    # the county was not read
    asked.clear()
    got = check.check_live(c)
    assert sorted(asked) == sorted(units) and len(units) > 2
    assert (c.state_dir / "wording-checked").exists()
