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


def put(county: County, unit: str, tar: bytes, replace: bool = True) -> dict[str, Any]:
    """Unpack `tar` (regular files only: content.uploads makes it) into the upload area;
    with `replace`, what was there goes first."""
    inv = county.inv
    if inv.tenant(unit) is None:
        raise GovhostError(f"no unit named {unit!r}")
    with county.state() as st:
        placed = st.placements().get(unit)
    if not placed:
        raise GovhostError(f"{unit} is not applied yet; run `govhost apply` first")
    node = next(n for n in inv.hosts.nodes if n.name == placed[0])
    area = shlex.quote(f"{paths.NODE_SITES}/{unit}/upload")
    clear = "find . -mindepth 1 -delete && " if replace else ""
    cmd = (f"cd {area} && {clear}tar -x --no-same-owner --no-same-permissions "
           "--no-overwrite-dir && chown -R --reference=. .")
    r = subprocess.run(remote._ssh_cmd(inv.hosts, node, county.known_hosts, cmd),
                       input=tar, capture_output=True, timeout=600)
    if r.returncode != 0:
        raise GovhostError(f"upload to {unit} on {node.name}: "
                           f"{r.stderr.decode(errors='replace').strip()}")
    return {"unit": unit, "node": node.name}
