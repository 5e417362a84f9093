"""A unit's SFTP keys, kept by the unit's admin in the console.

The keys stay where the county keeps everything else of a unit: `sftp.keys` in its manifest.
A change from the console rewrites that one field (the file is read by the strict loader and
dumped again, so YAML comments in it are not kept), is tried against the whole county first
exactly as `govhost validate` would (a key with options, a bad type, too many keys are
refused by the manifest's own rules), swapped in atomically and applied; the audit log keeps
who changed which keys. Commit the file to the inventory's Git as after any edit.
"""
from __future__ import annotations

import base64
import hashlib
import time
from typing import Any, Callable

import yaml

from controlplane.converge import service
from controlplane.core import yamlsafe
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.onboarding import trial


class KeysError(GovhostError):
    """A change of keys that was refused; the manifest and the nodes are unchanged."""


def fingerprint(key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line ('' if it cannot be read)."""
    parts = key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        return ""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def listing(county: County, unit: str) -> list[dict[str, str]]:
    t = county.inv.tenant(unit)
    if t is None:
        raise KeysError(f"no unit named {unit!r}")
    return [{"type": k.split()[0], "comment": " ".join(k.split()[2:]),
             "fingerprint": fingerprint(k), "key": k} for k in t.sftp.keys]


def replace(county: County, unit: str, keys: list[str], by: str,
            progress: Callable[[str, str, str], None] | None = None) -> dict[str, Any]:
    """Make `keys` the unit's SFTP keys: tried, written, applied. Refused (nothing changed)
    when the county would not validate with them."""
    path = county.root / "tenants" / f"{unit}.yaml"
    with county.exclusive(f"manifest-{unit}", lambda _: KeysError(
            f"another change of {unit}'s manifest is under way; try again in a moment")):
        doc = yamlsafe.load_file(path)
        before = [fingerprint(k) for k in (doc.get("sftp") or {}).get("keys", [])]
        if keys:
            doc["sftp"] = {**(doc.get("sftp") or {}), "keys": keys}
        elif isinstance(doc.get("sftp"), dict):
            doc["sftp"].pop("keys", None)
            if not doc["sftp"]:
                del doc["sftp"]
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
        text = (f"# sftp.keys last changed in the console by {by} at {stamp}.\n"
                + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100))
        tried = trial.run(county, unit, text)
        if tried.problems:
            raise KeysError("; ".join(f"{p.field}: {p.message}" if p.field else p.message
                                      for p in tried.problems))
        trial.write(path, text, replace=True)
        after = [fingerprint(k) for k in keys]
        with county.state() as st:
            st.audit("unit.sftp-keys", unit, {"before": before, "after": after}, by)
    county.refresh()
    try:
        result = service.apply(County(county.root, county.state_dir), progress=progress)
    except GovhostError as exc:
        return {"unit": unit, "keys": after, "applied": False, "error": str(exc)}
    return {"unit": unit, "keys": after, "applied": result.ok, "result": result.result}
