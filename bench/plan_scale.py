#!/usr/bin/env python3
"""A plan of a generated county of N units on M nodes (default 5,000 on 5), in process, as
`govhost plan` and every apply make it: load the manifests, place, render every node's
release, compare with what the nodes run. Side by side in one run, each ROUNDS times (the
figure is the median, the min beside it):

  no memo     every manifest parsed and every unit rendered, as before stop 57
  first       the same with an empty memo (core/memo.py): what the first run pays to fill it
  warm        the memo of the run before: the plan of a county where nothing changed
  one edit    one unit's manifest changed since the run before (the memo holds the others)

with Python's garbage collector set as `govhost` sets it (cli.GC_THRESHOLD) and, beside it,
the warm plan under Python's default setting. Needs nothing but the control plane.

Usage: bench/plan_scale.py [UNITS] [NODES] [ROUNDS] [--json]
"""
from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cli import GC_THRESHOLD  # noqa: E402
from controlplane.core import inventory  # noqa: E402
from controlplane.core.memo import Memo  # noqa: E402
from controlplane.sites.plan import make_plan  # noqa: E402
from tests.helpers import generated_county  # noqa: E402


def _plan(inv_dir: Path, state: Path, memo: Memo | None) -> tuple[float, float]:
    """(load seconds, plan seconds) of one run, its memo opened and closed as a run does."""
    t0 = time.perf_counter()
    inv = inventory.load(inv_dir, state, memo=memo)
    t1 = time.perf_counter()
    plan = make_plan(inv, frozenset(), {}, {})
    t2 = time.perf_counter()
    assert len(plan.placement) == len(inv.tenants)
    if memo is not None:
        memo.close()
    return t1 - t0, t2 - t1


def _figure(runs: list[tuple[float, float]]) -> dict:
    totals = [a + b for a, b in runs]
    return {"seconds": round(statistics.median(totals), 3), "min": round(min(totals), 3),
            "load": round(statistics.median(a for a, _ in runs), 3),
            "place_render_plan": round(statistics.median(b for _, b in runs), 3)}


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    args = [a for a in argv if not a.startswith("--")]
    units = int(args[0]) if args else 5000
    nodes = int(args[1]) if len(args) > 1 else 5
    rounds = int(args[2]) if len(args) > 2 else 5
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-plan-"))
    try:
        inv_dir = generated_county(work / "inventory", units, nodes)
        state = work / "state"
        inventory.load(inv_dir, state)                     # the county secret, made once
        gc.set_threshold(*GC_THRESHOLD)
        out: dict = {"bench": "plan_scale", "units": units, "nodes": nodes, "rounds": rounds}
        nomemo, first, warm, edit = [], [], [], []
        target = inv_dir / "tenants" / f"unit{units // 2:04d}.yaml"
        original = target.read_text(encoding="utf-8")
        for r in range(rounds):
            nomemo.append(_plan(inv_dir, state, None))
            shutil.rmtree(state / "memo", ignore_errors=True)
            first.append(_plan(inv_dir, state, Memo.of_state(state)))
            warm.append(_plan(inv_dir, state, Memo.of_state(state)))
            target.write_text(original.replace("测试单位", f"测试单位{r}"), encoding="utf-8")
            edit.append(_plan(inv_dir, state, Memo.of_state(state)))
        target.write_text(original, encoding="utf-8")
        _plan(inv_dir, state, Memo.of_state(state))
        gc.set_threshold(700, 10, 10)                      # Python's default
        default_gc = [_plan(inv_dir, state, Memo.of_state(state)) for _ in range(rounds)]
        gc.set_threshold(*GC_THRESHOLD)
        out["no_memo"] = _figure(nomemo)
        out["first"] = _figure(first)
        out["warm"] = _figure(warm)
        out["one_edit"] = _figure(edit)
        out["warm_python_default_gc"] = _figure(default_gc)
        out["ratio_warm_to_no_memo"] = round(out["warm"]["seconds"]
                                             / out["no_memo"]["seconds"], 2)
        out["ratio_one_edit_to_no_memo"] = round(out["one_edit"]["seconds"]
                                                 / out["no_memo"]["seconds"], 2)
        out["ratio_first_to_no_memo"] = round(out["first"]["seconds"]
                                              / out["no_memo"]["seconds"], 2)
        out["memo_mb"] = round(os.path.getsize(state / "memo" / "memo.db") / 2**20, 1)
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in ("no_memo", "first", "warm", "one_edit", "warm_python_default_gc"):
        f = out[name]
        print(f"{name:24} {f['seconds']:6.3f} s (min {f['min']:.3f}; load {f['load']:.3f}, "
              f"place+render+plan {f['place_render_plan']:.3f})")
    print(f"warm / no memo {out['ratio_warm_to_no_memo']}, one edit / no memo "
          f"{out['ratio_one_edit_to_no_memo']}, first / no memo {out['ratio_first_to_no_memo']};"
          f" memo {out['memo_mb']} MiB, peak RSS {out['peak_rss_mb']} MiB")
    if as_json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
