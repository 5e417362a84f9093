"""A unit's manifest tried against the county before it is written: checked as the loader
behind `govhost validate` checks it with every other manifest, then planned as `govhost plan`
plans. Site requests and the changes a unit's admin makes in the console both go through it,
so a file in inventory/tenants/ is only ever written once the whole inventory validates.

The county's manifests are not read again for each trial: the trials' own loaded
inventory (`County.inv_now`: read again only when a file changed on disk) takes the unit's
file in place, and only that file is parsed; the checks across units run over all of them (inventory.with_tenant). A
county that does not load as it is, is loaded whole with the unit's file given in place
(the unit's file may be the one at fault), without copying it anywhere."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.core.errors import ManifestError, Problem
from controlplane.sites import apply as apply_mod


@dataclass
class Trial:
    """What loading the county with one unit's manifest in place gave."""

    problems: list[Problem] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    units_after: int = 0


def run(county: County, name: str, text: str) -> Trial:
    """Check the county with `text` as tenants/<name>.yaml (new or replacing the unit's
    file) and plan it. Only problems of that file are the unit's; a county whose own
    manifests do not validate refuses every trial."""
    try:
        inv = with_manifest(county, name, text)
    except ManifestError as exc:
        mine = f"tenants/{name}.yaml"
        problems = [p for p in exc.problems if p.file.endswith(mine) or name in p.message]
        if not problems:
            problems = [Problem("inventory", "", "the county's inventory does not validate "
                                "today; an operator must fix it first")]
        return Trial(problems)
    with county.state() as st:
        _, p = apply_mod.prepare(county.trying(inv), st)
    plan = p.to_json()
    mine_plan = next((t for t in plan["tenants"] if t["tenant"] == name), None)
    return Trial([], {"tenant": mine_plan, "units_after": len(inv.tenants), "nodes": [
        {"node": n["node"], "added": n["added"], "changed": len(n["changed"]),
         "removed": n["removed"]} for n in plan["nodes"] if n["needed"]]},
        len(inv.tenants))


def with_manifest(county: County, name: str, text: str) -> inventory.Inventory:
    """The county's inventory as `inventory.load` would give it with `text` as
    tenants/<name>.yaml, or the ManifestError it would raise."""
    file_name, raw = f"{name}.yaml", text.encode("utf-8")
    try:
        base = county.inv_now()
    except ManifestError:
        return county.load(overlay={file_name: raw})
    return inventory.with_tenant(base, file_name, raw)


def write(target: Path, text: str, replace: bool) -> None:
    """Write a manifest atomically: a new file never over one that appeared meanwhile; a
    changed file swapped in whole (no reader ever sees half of it)."""
    part = target.with_name(f".{target.name}.part")
    part.write_text(text, encoding="utf-8")
    try:
        if replace:
            os.replace(part, target)
        else:
            os.link(part, target)
    finally:
        part.unlink(missing_ok=True)
