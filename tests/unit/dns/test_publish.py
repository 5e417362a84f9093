"""`govhost dns push`'s comparison (pure): what the server answers against the plan."""
from controlplane.dns.plan import Record
from controlplane.dns.publish import Answer, changes, wanted

ZONE = "qingshui.gov.cn"


def test_a_family_the_plan_dropped_is_taken_away_and_outside_names_are_left():
    plan = [Record(f"jiaoyu.{ZONE}", "A", "10.0.0.101"), Record("www.example.org", "A", "1.2.3.4")]
    want, outside = wanted(plan, ZONE)
    assert want == {(f"jiaoyu.{ZONE}", "A"): frozenset({"10.0.0.101"}),
                    (f"jiaoyu.{ZONE}", "AAAA"): frozenset()}
    assert outside == ["www.example.org"]
    have = {(f"jiaoyu.{ZONE}", "A"): Answer(frozenset({"10.0.0.101"}), 300),
            (f"jiaoyu.{ZONE}", "AAAA"): Answer(frozenset({"fd00::1"}), 300)}
    [c] = changes(want, have, 300)
    assert (c.name, c.type, c.now, c.after) == (f"jiaoyu.{ZONE}", "AAAA", ("fd00::1",), ())


def test_a_ttl_change_is_pushed_and_a_cname_is_left_alone():
    want = {(f"a.{ZONE}", "A"): frozenset({"10.0.0.1"}), (f"b.{ZONE}", "A"): frozenset({"10.0.0.1"})}
    have = {(f"a.{ZONE}", "A"): Answer(frozenset({"10.0.0.1"}), 60),
            (f"b.{ZONE}", "A"): Answer(frozenset(), cname=True)}
    assert [(c.name, c.now, c.after) for c in changes(want, have, 300)] == [
        (f"a.{ZONE}", ("10.0.0.1",), ("10.0.0.1",))]
    have[(f"a.{ZONE}", "A")] = Answer(frozenset({"10.0.0.1"}), 300)
    assert changes(want, have, 300) == []
