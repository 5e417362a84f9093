"""Writing into a unit's upload area on its first replica, as the unit's SFTP upload would
leave it (owned by the unit's account): the console's upload and the lab's seeding use it.
`publish` then builds a release from the area."""
from __future__ import annotations

import shlex
import subprocess
from typing import Any

from controlplane.core import paths, remote
from controlplane.core.county import County
from controlplane.core.errors import GovhostError


class LinkInTheWay(GovhostError):
    """The path of an upload runs through a link the unit made in its upload area."""


UNPACK_TOOL = paths.NODE_UNPACK_TOOL
EXIT_LINK = 6            # govhost_node.unpack.EXIT_LINK


def put(county: County, unit: str, tar: bytes, replace: bool = True) -> dict[str, Any]:
    """Unpack `tar` (regular files only: content.uploads makes it) into the upload area;
    with `replace`, what was there goes first. The node unpacks it as the unit's own account
    and follows no link (govhost_node.unpack): a link in the way is LinkInTheWay, naming it."""
    inv = county.inv
    if inv.tenant(unit) is None:
        raise GovhostError(f"no unit named {unit!r}")
    with county.state() as st:
        placed = st.placements().get(unit)
    if not placed:
        raise GovhostError(f"{unit} is not applied yet; run `govhost apply` first")
    node = next(n for n in inv.hosts.nodes if n.name == placed[0])
    cmd = shlex.join([UNPACK_TOOL, "unpack", unit, *(["replace"] if replace else [])])
    r = subprocess.run(remote.ssh_argv(inv.hosts, node, county.known_hosts, cmd),
                       input=tar, capture_output=True, timeout=600)
    err = r.stderr.decode(errors="replace").strip().removeprefix("govhost-unpack: ")
    if r.returncode == EXIT_LINK:
        raise LinkInTheWay(f"upload to {unit} refused: {err}")
    if r.returncode != 0:
        raise GovhostError(f"upload to {unit} on {node.name}: {err}")
    return {"unit": unit, "node": node.name}
