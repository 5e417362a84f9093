#!/usr/bin/env python3
"""What sending every unit's answers to a node costs (`govhost messages sync`, and a node
that joins or is replaced: its pages show the units' answers). UNITS units (default 1,000)
with ANSWERS answered messages each (default 3) in a private copy of the example county's
state, sent to n3 on the lab, side by side in one run:

  one a unit  what sync did before stop 65: `govhost-messages answers UNIT` over SSH once a
              unit (the way one new answer is still sent)
  stream      `govhost-messages answers-many`: the units' answers as JSON lines, in batches
              of up to 16 MB, one command a batch

and that n3 then holds each unit's answers, as the first sent them. The units are generated
names the nodes serve no site for; their answer files are removed from n3 at the end.

Needs root and the lab with the example county applied:
    govhost lab up --nodes 3 && govhost apply --yes
    bench/answers_sync.py [UNITS] [ANSWERS] [--json]
(--json: the figures as one JSON object on the last line).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import applied  # noqa: E402

from controlplane.core.county import County  # noqa: E402
from controlplane.messages import answers  # noqa: E402
from govhost_node import messages as rules  # noqa: E402
from tests.helpers import example_inventory, lab_ssh  # noqa: E402
from tests.integration.test_apply_lab import NODES  # noqa: E402

NODE = "n3"
SPOOL = "/var/lib/govhost/messages/answers"


def answered(county: County, units: int, each: int) -> list[str]:
    names = [f"bench{u:05d}" for u in range(units)]
    with county.state() as st:
        for u, unit in enumerate(names):
            for i in range(1, each + 1):
                m = rules.accept(f"B{u:05d}", 1, i, date(2026, 12, 5))
                st.record_answer({"number": m.number, "unit": unit,
                                  "received": "2026-12-05T02:00:00Z", "subject": f"第{i}件事",
                                  "text": "村口的路灯坏了三天，晚上出行不便。" * 3,
                                  "token_hash": rules.token_hash(m.token)},
                                 "已于本周修复，感谢您的反映。", i % 2 == 1, "bench")
    return names


def held(names: list[str]) -> dict[str, str]:
    """unit -> sha256 of its answer file on n3."""
    out = lab_ssh(NODES[NODE], f"cd {SPOOL} && sha256sum bench*.json 2>/dev/null || true")
    got = {}
    for line in out.splitlines():
        digest, _, name = line.partition("  ")
        got[name.removesuffix(".json")] = digest
    return {u: got[u] for u in names if u in got}


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    units = int(args[0]) if args else 1000
    each = int(args[1]) if len(args) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="govhost-bench-answers-") as tmp:
        inv = example_inventory(Path(tmp) / "inventory")
        applied(inv)
        county = County(inv)
        names = answered(county, units, each)
        try:
            lab_ssh(NODES[NODE], f"rm -f {SPOOL}/bench*.json")
            t = time.perf_counter()
            one = {u: answers.push(county, u, only=NODE) for u in names}
            per_unit = time.perf_counter() - t
            first = held(names)
            lab_ssh(NODES[NODE], f"rm -f {SPOOL}/bench*.json")
            t = time.perf_counter()
            streamed = answers.sync(county, only=NODE)
            stream = time.perf_counter() - t
            second = held(names)
        finally:
            lab_ssh(NODES[NODE], f"rm -f {SPOOL}/bench*.json")
    mine = {u: r for u, r in streamed.items() if u in set(names)}
    out = {"bench": "answers_sync", "units": units, "answers_per_unit": each,
           "one_a_unit_s": round(per_unit, 3), "stream_s": round(stream, 3),
           "x_stream": round(per_unit / stream, 1) if stream else None,
           "ok_one_a_unit": sum(1 for r in one.values() if r.get(NODE) == "ok"),
           "ok_stream": sum(1 for r in mine.values() if r.get(NODE) == "ok"),
           "held_after_stream": len(second),
           "same_files": len(first) == len(names) and first == second}
    if not as_json:
        print(f"{units} units x {each} answers to {NODE}: one command a unit "
              f"{per_unit:.1f} s, streamed {stream:.2f} s ({out['x_stream']}x); "
              f"{out['held_after_stream']} units held, the same files: {out['same_files']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
