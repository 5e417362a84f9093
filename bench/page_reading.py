"""Reading one published page for the wording check and the county search
(`pagetext.extract`, then `wording.match.findings`), as a publish does for every changed page,
on two pages whose cost grew with the square of their size before stop 66:

  script  an inline script of N lines of string literals (a data table a page's script
          draws: common on statistics and 公开目录 pages), 3 literals a line;
  hits    a page of N lines, each naming an old place name the county's `names` list flags
          (茶河乡 -> 茶河镇: an archive index of a township's notices), N findings.

Beside them the floor: reading the same bytes as UTF-8 and finding the lines with
`str.splitlines` (what any reading of the page costs). The county's lists are the example
inventory's (inventory/wording/*.yaml).

    python bench/page_reading.py [N] [--json]          (N default 20000)

The figures, each with its floor and ratio, are one JSON object on the last line.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.core import inventory, pagetext  # noqa: E402
from controlplane.wording.match import Matcher, findings  # noqa: E402


def best(fn, runs: int = 3) -> tuple[float, object]:
    out, took = None, float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        took = min(took, time.perf_counter() - t)
    return took, out


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20000
    inv = inventory.load(REPO / "inventory", Path("/nonexistent-state"))
    matcher = Matcher(inv.wording)
    rows = ",\n".join(f'  ["第{i}号通知", "2026-01-{i % 28 + 1:02d}", "/gk/{i}.html"]'
                      for i in range(n))
    script = (f"<html><head><title>公开目录</title></head><body><h1>公开目录</h1>"
              f"<div id=list></div><script>\nvar rows = [\n{rows}\n];\n</script>"
              f"</body></html>").encode()
    lines = "\n".join(f"<li><a href=/a/{i}.html>茶河乡第{i}期工作简报</a></li>"
                      for i in range(n))
    hits = f"<html><head><title>简报</title></head><body><ul>\n{lines}\n</ul></body></html>" \
        .encode()
    out: dict = {"bench": "page_reading", "n": n}
    for name, page in (("script", script), ("hits", hits)):
        took, found = best(lambda: findings(matcher, pagetext.extract("a/index.html", page)))
        floor, _ = best(lambda: page.decode("utf-8").splitlines())
        out[name] = {"bytes": len(page), "findings": len(found), "seconds": round(took, 4),
                     "floor_seconds": round(floor, 5),
                     "ratio": round(took / floor, 1) if floor else None}
        if not as_json:
            print(f"{name}: {len(page) / 1024:.0f} KiB, {len(found)} findings: {took:.3f} s "
                  f"(floor {floor * 1000:.2f} ms, {took / floor:.0f}x)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
