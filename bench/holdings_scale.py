"""What a node's answer to "which content do you hold, intact?" costs as its units grow
(`govhost-tenants holdings`: every apply, `status`, control backup and exporter round asks
every node for it). On a tree laid out like a node's, UNITS units of FILES files each
(default 3,333 x 10: a node's share of a 5,000-unit county on 3 nodes), in a temporary
directory, at a quarter of the units and at all of them:

  full      the whole node checked, its cache of file keys warm (the steady state)
  one unit  one unit's check (a unit's page in the console asks only for it)
  floor     what the full check cannot do without: an lstat of every live file and a read
            of every unit's digest list

Before stop 64 the full check looked each unit's files up among all of the node's cached
keys: 184 s at 3,333 x 10 (the square of the units). Before stop 67 the keys were one file
for the node, read whole by a one-unit check (46 ms at 3,333 x 10), and the check walked
each release with os.walk and relpath. The figures, each with its floor and
ratio, and the growth per unit from a quarter of the units to all of them (1.0: it grows as
the units do), are one JSON object on the last line.

    python bench/holdings_scale.py [UNITS] [FILES] [--json]
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from govhost_node import digests, tenants  # noqa: E402

RID = "20261130T120000-aaaaaa"


def layout(sites: str, first: int, last: int, files: int) -> None:
    for u in range(first, last):
        rel = os.path.join(sites, f"unit{u:04d}", "releases", RID)
        os.makedirs(rel)
        listed = {}
        for f in range(files):
            data = f"<p>unit {u} page {f}</p>".encode()
            with open(os.path.join(rel, f"p{f}.html"), "wb") as fh:
                fh.write(data)
            listed[f"p{f}.html"] = hashlib.sha256(data).hexdigest()
        digests.write(rel, listed)
        os.symlink(f"releases/{RID}", os.path.join(sites, f"unit{u:04d}", "current"))


def best(fn, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def quiet(*only: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        tenants.holdings(*only)


def floor(sites: str) -> None:
    for unit in os.listdir(sites):
        rel = os.path.join(sites, unit, "releases", RID)
        for name in digests.read(rel):
            os.lstat(os.path.join(rel, name))


def measure(sites: str, units: int) -> dict:
    quiet()
    time.sleep(digests.SETTLE_NS / 1e9 + 0.1)    # keys of files just written are not kept
    quiet()
    full = best(quiet)
    one = best(lambda: quiet(f"unit{units // 2:04d}"), 5)
    low = best(lambda: floor(sites))
    return {"units": units, "full_s": round(full, 6), "one_unit_s": round(one, 6),
            "floor_s": round(low, 6), "x_floor": round(full / low, 2) if low else None,
            "full_ms_per_unit": round(full / units * 1000, 6)}


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    units = int(args[0]) if args else 3333
    files = int(args[1]) if len(args) > 1 else 10
    quarter = max(1, units // 4)
    with tempfile.TemporaryDirectory(prefix="govhost-bench-holdings-") as root:
        sites = os.path.join(root, "sites")
        tenants.SITES = sites
        tenants.VERIFIED = os.path.join(root, "verified")
        tenants.OLD_VERIFIED = os.path.join(root, "verified.json")
        layout(sites, 0, quarter, files)
        small = measure(sites, quarter)
        layout(sites, quarter, units, files)
        large = measure(sites, units)
        out = {"bench": "holdings_scale", "files_per_unit": files, "runs": [small, large],
               "growth_per_unit": round(large["full_ms_per_unit"] / small["full_ms_per_unit"],
                                        2) if small["full_ms_per_unit"] else None,
               "cache_bytes": sum(e.stat().st_size for e in os.scandir(tenants.VERIFIED))}
    if not as_json:
        for r in out["runs"]:
            print(f"{r['units']:>6} units x {files}: full {r['full_s']:.3f} s "
                  f"({r['x_floor']}x the floor {r['floor_s']:.3f} s), one unit "
                  f"{r['one_unit_s'] * 1000:.1f} ms")
        print(f"per unit, {units} against {quarter} units: {out['growth_per_unit']}x; "
              f"the cache {out['cache_bytes'] / 1e6:.1f} MB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
