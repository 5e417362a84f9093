#!/usr/bin/env python3
"""A node that lacks the county search index (new, replaced): filled unit by unit against
sent the master whole, side by side on a lab node.

A master index of UNITS units of PAGES pages each is built here from generated Chinese text
(words drawn from jieba's dictionary, 600 a page: real segmentation, real FTS5 postings;
kept under BENCH_DIR between runs, as building it takes most of the time). Then, ROUNDS
times, turn about, into a scratch index on n3 (`--db /var/tmp/govhost-bench-*.db`; the
node's own index is not touched):
  unit by unit  every unit's export as a change (`govhost-search apply`), what a sync sent a
                node that held nothing before stop 60;
  whole         the master copied with SQLite's backup and sent as it is (`govhost-search
                load`), what it sends now; the copy on the control machine is timed apart.

Needs the lab (`govhost lab up`) with the county applied (the node programs on n3).
Usage: [BENCH_DIR=DIR] bench/search_whole.py [UNITS] [PAGES] [ROUNDS] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.core import paths  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.search import index, pages  # noqa: E402
from govhost_node import search as node_search  # noqa: E402

NODE = 3
SCRATCH = "/var/tmp/govhost-bench-search"


def build(path: Path, units: int, per_unit: int) -> float:
    """The master index of generated pages; seconds it took (0 when kept from before)."""
    if path.exists():
        return 0.0
    import jieba
    jieba.setLogLevel(60)
    jieba.initialize()
    words = [w for w, f in sorted(jieba.dt.FREQ.items(), key=lambda x: -x[1])[:20000]
             if f > 0 and len(w) > 1]
    rnd = random.Random(1)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    idx = node_search.Index(str(tmp))
    try:
        for u in range(units):
            unit = f"unit{u:04d}"
            put = []
            for j in range(per_unit):
                body = "".join(rnd.choice(words) for _ in range(600))
                html = (f"<html><head><title>{unit} 关于{rnd.choice(words)}的通知 {j}</title>"
                        f"</head><body><p>{body}</p></body></html>").encode()
                put.append(pages.record(f"{unit}.qingshui.gov.cn", f"p/{j:03d}.html",
                                        f"{unit}-{j}", html, node_search.segment))
            idx.apply({"tenant": unit, "title": unit, "release": "r1", "base": None,
                       "drop": [], "put": put})
    finally:
        idx.close()
    os.replace(tmp, path)
    return time.perf_counter() - t0


def on_node(cmd: str, stdin=None) -> subprocess.CompletedProcess:
    r = subprocess.run([*lab.ssh_argv(lab.node_address(NODE)), cmd], stdin=stdin,
                       capture_output=True, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"on n{NODE}: {cmd}: {r.stderr.decode(errors='replace')[-500:]}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("units", nargs="?", type=int, default=60)
    ap.add_argument("pages", nargs="?", type=int, default=200)
    ap.add_argument("rounds", nargs="?", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="the figures as JSON, last line")
    args = ap.parse_args()
    keep = os.environ.get("BENCH_DIR")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="govhost-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    master_path = work / f"master-{args.units}x{args.pages}.db"
    built = build(master_path, args.units, args.pages)
    master = node_search.Index(str(master_path))
    tool = paths.NODE_SEARCH_TOOL
    try:
        exports = work / "exports.jsonl"
        with open(exports, "w", encoding="utf-8") as f:
            for t in sorted(master.releases()):
                f.write(json.dumps(master.export(t), ensure_ascii=False) + "\n")
        got: dict[str, list[float]] = {"unit_by_unit": [], "whole": [], "copy": []}
        for _ in range(args.rounds):
            on_node(f"rm -f {SCRATCH}-*.db*")
            t0 = time.perf_counter()
            with open(exports, "rb") as f:
                on_node(f"{tool} apply --db {SCRATCH}-units.db", stdin=f)
            got["unit_by_unit"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            copy = index._copy(master, work)
            got["copy"].append(time.perf_counter() - t0)
            try:
                with open(copy, "rb") as f:
                    r = on_node(f"{tool} load --db {SCRATCH}-whole.db", stdin=f)
            finally:
                size = copy.stat().st_size
                copy.unlink()
            got["whole"].append(time.perf_counter() - t0)
            held = json.loads(r.stdout)["held"]
            assert len(held) == args.units, held
        on_node(f"rm -f {SCRATCH}-*.db*")
    finally:
        master.close()
        if not keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f"master index: {args.units} units x {args.pages} pages, {size / 2**20:.0f} MiB"
          + (f" (built in {built:.0f} s)" if built else ""))
    print(f"into an empty index on n{NODE}, median of {args.rounds}:")
    print(f"  unit by unit (govhost-search apply)  {med['unit_by_unit']:6.2f} s")
    print(f"  whole (copy {med['copy']:.2f} s + govhost-search load) {med['whole']:6.2f} s")
    print(f"  unit by unit / whole: {med['unit_by_unit'] / med['whole']:.1f}x")
    if args.json:
        print(json.dumps({
            "bench": "search_whole", "units": args.units, "pages": args.pages,
            "rounds": args.rounds, "index_bytes": size,
            "whole": {"seconds": round(med["whole"], 2), "copy_seconds": round(med["copy"], 2),
                      "reference": "unit by unit (govhost-search apply of every export)",
                      "reference_seconds": round(med["unit_by_unit"], 2),
                      "x_reference": round(med["whole"] / med["unit_by_unit"], 2)}}))


if __name__ == "__main__":
    main()
