"""Put a directory into a unit's upload area, as the unit's SFTP upload would: the main job
and benchmarks use it to give the example county real pages without SFTP keys."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from controlplane.content import upload_area
from controlplane.core.county import County
from controlplane.core.errors import GovhostError


def upload(county: County, unit: str, src: Path) -> dict[str, Any]:
    inv = county.inv
    if inv.tenant(unit) is None:
        raise GovhostError(f"no unit named {unit!r}")
    if not src.is_dir():
        raise GovhostError(f"{src} is not a directory")
    buf = io.BytesIO()
    files = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(src.rglob("*")):
            if p.is_file() and not p.is_symlink():
                tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
                files += 1
    done = upload_area.put(county, unit, buf.getvalue())
    return {**done, "files": files}
