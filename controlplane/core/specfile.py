"""The JSON files a release carries for a node's own programs (tenants.json, backup.json ...).

Written one top-level field a line, and each item of a list field on a line of its own: an
operator on a node reads and greps them by unit, and every item is written by json's C
encoder. (`indent=` makes json use its pure-Python encoder: at 5,000 units the node files
took a quarter of a second of every plan.) The node's programs read them with json.load.
"""
from __future__ import annotations

import json
from typing import Any, Mapping


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def spec_bytes(spec: Mapping[str, Any]) -> bytes:
    """`spec` as the node reads it: the same JSON value, laid out as above."""
    keys = sorted(spec)
    out = ["{"]
    for i, k in enumerate(keys):
        v = spec[k]
        comma = "," if i < len(keys) - 1 else ""
        if isinstance(v, list) and v:
            items = ",\n  ".join(_dumps(x) for x in v)
            out.append(f" {_dumps(k)}: [\n  {items}\n ]{comma}")
        else:
            out.append(f" {_dumps(k)}: {_dumps(v)}{comma}")
    out.append("}")
    return ("\n".join(out) + "\n").encode()
