"""A unit's manifest tried against the county before it is written: the manifests copied
beside it and loaded by the same loader as `govhost validate`, then planned as `govhost plan`
plans. Site requests and the changes a unit's admin makes in the console both go through it,
so a file in inventory/tenants/ is only ever written once the whole inventory validates."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """Load the county with `text` as tenants/<name>.yaml (new or replacing the unit's file)
    and plan it. Only problems of that file are the unit's; a county whose own manifests do
    not validate refuses every trial."""
    with tempfile.TemporaryDirectory(prefix="govhost-trial-") as tmp:
        root = _copy_with(county.root, Path(tmp), name, text)
        trial = County(root, county.state_dir)
        try:
            inv = trial.inv
        except ManifestError as exc:
            mine = f"tenants/{name}.yaml"
            problems = [p for p in exc.problems if p.file.endswith(mine) or name in p.message]
            if not problems:
                problems = [Problem("inventory", "", "the county's inventory does not validate "
                                    "today; an operator must fix it first")]
            return Trial(problems)
        with county.state() as st:
            _, p = apply_mod.prepare(trial, st)
    plan = p.to_json()
    mine_plan = next((t for t in plan["tenants"] if t["tenant"] == name), None)
    return Trial([], {"tenant": mine_plan, "units_after": len(inv.tenants), "nodes": [
        {"node": n["node"], "added": n["added"], "changed": len(n["changed"]),
         "removed": n["removed"]} for n in plan["nodes"] if n["needed"]]},
        len(inv.tenants))


def _copy_with(src: Path, dest: Path, name: str, text: str) -> Path:
    """A copy of the inventory's manifests (not its state) with the unit's file in place."""
    root = dest / "inventory"
    root.mkdir()
    for f in ("cluster.yaml", "hosts.yaml"):
        shutil.copy2(src / f, root / f)
    for d in ("tenants", "wording"):
        if (src / d).is_dir():
            shutil.copytree(src / d, root / d)
    (root / "tenants").mkdir(exist_ok=True)
    (root / "tenants" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return root


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
