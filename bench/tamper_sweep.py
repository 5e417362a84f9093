"""The tamper watcher's sweep against its full check, side by side on one tree laid out like
a node's (UNITS units x FILES files, default 300 x 100 = 30,000 live files of 8 KiB in a
temporary directory): seconds and CPU of one sweep (lstat only, nothing moved) and of one full
check (every file hashed), and their ratio. The sweep runs every 5 s, the full check every
5 minutes.

    python bench/tamper_sweep.py [UNITS] [FILES] [--json]

The figures, with the full check as the sweep's floor-like reference, are one JSON object
on the last line.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from govhost_node import tamper  # noqa: E402


def layout(root: str, units: int, files: int) -> None:
    for u in range(units):
        rel = os.path.join(root, "sites", f"unit{u:04d}", "releases", "r1")
        digests = []
        for f in range(files):
            name = f"col{f % 10}/page{f}.html"
            data = (f"<p>unit {u} page {f}</p>".encode() * 400)[:8192]
            os.makedirs(os.path.dirname(os.path.join(rel, name)), exist_ok=True)
            with open(os.path.join(rel, name), "wb") as fh:
                fh.write(data)
            digests.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        with open(os.path.join(rel, ".digests"), "w") as fh:
            fh.writelines(digests)
        os.symlink("releases/r1", os.path.join(root, "sites", f"unit{u:04d}", "current"))


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    units = int(args[0]) if args else 300
    files = int(args[1]) if len(args) > 1 else 100
    with tempfile.TemporaryDirectory() as root:
        tamper.SITES = os.path.join(root, "sites")
        tamper.CONFIG = os.path.join(root, "etc-current")
        tamper.BASE = os.path.join(root, "tamper")
        tamper.PRISTINE = os.path.join(root, "pristine")
        tamper.EVIDENCE = os.path.join(root, "tamper", "evidence")
        tamper.INCIDENTS = os.path.join(root, "tamper", "incidents.jsonl")
        tamper.STATE = os.path.join(root, "tamper", "state.json")
        layout(root, units, files)
        g = tamper.Guard("bench")
        g.full_check()                                  # adopt: pristine copies
        full = min(timed(g.full_check) for _ in range(3))
        sweep = min(timed(g.sweep) for _ in range(3))
        n = units * files
        if not as_json:
            print(f"{n} live files ({units} units x {files})")
            print(f"full check: {full[0]:.3f} s wall, {full[1]:.3f} s CPU")
            print(f"sweep:      {sweep[0]:.3f} s wall, {sweep[1]:.3f} s CPU "
                  f"({sweep[1] / n * 1e6:.1f} µs CPU a file)")
            print(f"sweep / full check: {sweep[1] / full[1]:.2f} of the CPU; every 5 s that "
                  f"is {sweep[1] / 5 * 100:.1f} % of a core")
        print(json.dumps({"bench": "tamper_sweep", "files": n, "units": units,
                          "full_wall_s": round(full[0], 4), "full_cpu_s": round(full[1], 4),
                          "sweep_wall_s": round(sweep[0], 4), "sweep_cpu_s": round(sweep[1], 4),
                          "sweep_to_full_cpu": round(sweep[1] / full[1], 4) if full[1] else None,
                          "core_share_every_5s": round(sweep[1] / 5, 4)}))


if __name__ == "__main__":
    main()
