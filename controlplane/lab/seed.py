"""Put a directory into a unit's upload area, as the unit's SFTP upload would: the main job
and benchmarks use it to give the example county real pages without SFTP keys."""
from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from controlplane.core import remote
from controlplane.core.county import County
from controlplane.core.errors import GovhostError


def upload(county: County, unit: str, src: Path) -> dict[str, Any]:
    inv = county.inv
    if inv.tenant(unit) is None:
        raise GovhostError(f"no unit named {unit!r}")
    if not src.is_dir():
        raise GovhostError(f"{src} is not a directory")
    with county.state() as st:
        placed = st.placements().get(unit)
    if not placed:
        raise GovhostError(f"{unit} is not applied yet; run `govhost apply` first")
    node = next(n for n in inv.hosts.nodes if n.name == placed[0])
    buf = io.BytesIO()
    files = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(src.rglob("*")):
            if p.is_file() and not p.is_symlink():
                tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
                files += 1
    area = f"/srv/govhost/sites/{unit}/upload"
    cmd = (f"cd {shlex.quote(area)} && find . -mindepth 1 -delete && "
           "tar -x --no-same-owner --no-same-permissions && chown -R --reference=. .")
    r = subprocess.run(remote._ssh_cmd(inv.hosts, node, county.known_hosts, cmd),
                       input=buf.getvalue(), capture_output=True, timeout=300)
    if r.returncode != 0:
        raise GovhostError(f"upload to {unit} on {node.name}: "
                           f"{r.stderr.decode(errors='replace').strip()}")
    return {"unit": unit, "node": node.name, "files": files}
