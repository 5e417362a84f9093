"""An apply's time, split into its parts (ApplyResult.phases): every second of the run lands
in exactly one part, a part met twice adds up, and the activation is split into the
canary's turn and the others' (what bench/apply_scale.py and `apply --json` report)."""
from __future__ import annotations

from controlplane.sites import apply


def test_every_second_lands_in_one_part_and_a_part_met_twice_adds_up(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(apply.time, "monotonic", lambda: now[0])
    clock = apply.PhaseClock(100.0)
    for part, took in (("plan", 0.5), ("status", 0.25), ("stage", 2.0), ("stage", 1.0)):
        now[0] += took
        clock.mark(part)
    now[0] += 3.0
    clock.split("activate_canary", "activate_others", 1.25)
    now[0] += 0.5
    clock.split("activate_canary", "activate_others", None)    # one node: the canary alone
    now[0] += 0.75
    clock.split("activate_canary", "activate_others", 9.0)     # more than the part: capped
    assert clock.seconds == {"plan": 0.5, "status": 0.25, "stage": 3.0,
                             "activate_canary": 2.5, "activate_others": 1.75}
    assert sum(clock.seconds.values()) == now[0] - 100.0
