"""What a night's backup spends keeping its status file (`govhost-backup run`: each job's
last result looked up, each new one recorded in status.json, which govhost-agent exports),
as the jobs grow: JOBS jobs (default 3,333: a node's share of 5,000 units on 3 nodes) over a
status file that already holds them, at a quarter of the jobs and at all of them, next to its
floor (the file read once and written once); and one of the merges a run's timer makes every
2 s while results come in (a night of many minutes pays one each 2 s). No restic: only the
bookkeeping.

Before stop 64 every job read the whole file and then read and wrote it whole again under its
lock: 12.8 s at 1,000 jobs and 154 s at 3,333 (measured on the tree before with the same
loop). The figures, with the floor and the growth per job from a quarter of the jobs to all
of them (1.0: as the jobs grow), are one JSON object on the last line.

    python bench/backup_status.py [JOBS] [--json]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from govhost_node import backup  # noqa: E402


def _result(i: int) -> dict:
    return {"finished_at": time.time(), "ok": True, "snapshot": f"{i:08x}", "seconds": 0.1,
            "fingerprint": "f" * 64, "repository": "r" * 32}


def measure(jobs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="govhost-bench-backup-status-") as d:
        backup.STATE, backup.STATUS = d, os.path.join(d, "status.json")
        backup._merge_status({(f"unit{i:04d}", "files"): _result(i) for i in range(jobs)})
        t = time.perf_counter()
        status = backup._StatusFile()
        for i in range(jobs):
            status.last(f"unit{i:04d}", "files")
            status.record(f"unit{i:04d}", "files", _result(i))
        status.flush()
        run = time.perf_counter() - t
        t = time.perf_counter()
        with open(backup.STATUS, encoding="utf-8") as f:
            doc = json.load(f)
        with open(backup.STATUS + ".floor", "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, sort_keys=True))
        floor = time.perf_counter() - t
        size = os.path.getsize(backup.STATUS)
        t = time.perf_counter()         # one of the timer's merges: a result into the file
        backup._merge_status({("unit0000", "files"): _result(0)})
        merge = time.perf_counter() - t
    return {"jobs": jobs, "seconds": round(run, 6), "floor_s": round(floor, 6),
            "x_floor": round(run / floor, 2) if floor else None, "status_bytes": size,
            "ms_per_job": round(run / jobs * 1000, 6), "merge_s": round(merge, 6),
            # the most the timer's merges cost a minute of night while results keep coming
            "merges_per_minute_s": round(merge * 60 / backup._StatusFile.FLUSH_SECONDS, 3)}


def best(jobs: int, rounds: int = 3) -> dict:
    """The run and the floor each at their quickest of `rounds`."""
    tries = [measure(jobs) for _ in range(rounds)]
    out = min(tries, key=lambda r: r["seconds"])
    out["floor_s"] = min(r["floor_s"] for r in tries)
    out["x_floor"] = round(out["seconds"] / out["floor_s"], 2) if out["floor_s"] else None
    out["merge_s"] = min(r["merge_s"] for r in tries)
    out["merges_per_minute_s"] = min(r["merges_per_minute_s"] for r in tries)
    return out


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    jobs = int(args[0]) if args else 3333
    runs = [best(max(1, jobs // 4)), best(jobs)]
    out = {"bench": "backup_status", "runs": runs,
           "growth_per_job": round(runs[1]["ms_per_job"] / runs[0]["ms_per_job"], 2)
           if runs[0]["ms_per_job"] else None}
    if not as_json:
        for r in runs:
            print(f"{r['jobs']:>6} jobs: {r['seconds']:.3f} s ({r['x_floor']}x the floor "
                  f"{r['floor_s']:.3f} s: the file read and written once); one merge "
                  f"{r['merge_s']:.3f} s, at most {r['merges_per_minute_s']:.2f} s a minute "
                  "of night")
        print(f"per job, {runs[1]['jobs']} against {runs[0]['jobs']}: {out['growth_per_job']}x")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
