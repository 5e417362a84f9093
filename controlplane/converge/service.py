"""Every apply, whoever starts it, and what must follow it.

An apply is started by `govhost apply`, by the console (a site request approved, a unit's
upload key changed), by node lifecycle (add, remove, replace, drain, reboot), by certificate
issuance and by `govhost launch`. Each changes what the county serves, so each must also bring
in line what lives beside the nodes' configuration: units no longer served leave the county
search, and word lists changed since the live county was last checked against them are
checked now. Until this module only the CLI's `apply` did that, so an apply from the console
or a node command left a removed unit findable and new lists unchecked.

The follow-up runs after the apply lock is released (it does not hold back the next apply),
only when every node converged, and its failures are reported, never raised: the nodes
already serve the new configuration.
"""
from __future__ import annotations

from typing import Any, Callable

from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.search import index as search_index
from controlplane.sites import apply as sites_apply
from controlplane.wording import check as wording_check

Say = Callable[[str], None]


def apply(county: County, progress: sites_apply.Progress | None = None,
          confirm: Callable[[sites_apply.Plan], bool] | None = None,
          share_for_node: str | None = None, say: Say = lambda _: None
          ) -> sites_apply.ApplyResult:
    """`sites.apply.apply`, then `follow_up` when it converged (in `result.after`)."""
    result = sites_apply.apply(county, progress=progress, confirm=confirm,
                               share_for_node=share_for_node)
    if result.ok:
        result.after.update(follow_up(county, say))
    return result


def follow_up(county: County, say: Say = lambda _: None) -> dict[str, Any]:
    """What an inventory change means beyond the nodes' config. Each part is tried whatever
    the other did; what failed is in `problems` (the next apply tries again)."""
    out: dict[str, Any] = {"search_dropped": [], "wording": None, "problems": []}
    try:
        out["search_dropped"] = search_index.drop_removed(county, say=say)
    except GovhostError as exc:
        out["problems"].append(f"county search: {exc}")
    try:
        res = wording_check.recheck_if_changed(county, say)
    except GovhostError as exc:
        out["problems"].append(f"word lists: {exc}")
    else:
        if res is not None:
            out["wording"] = {
                "units": len(res["units"]),
                "serious": wording_check.serious(res)}
    return out
