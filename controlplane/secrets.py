"""The cluster secret: one random key on the control machine, never in the inventory's Git.

Per-tenant credentials (the MariaDB password of a PHP tenant) are derived from it with HMAC,
so they are stable across applies without being stored anywhere, and a new secret rotates
them all. The file lives in the state directory (mode 0600, created once, atomically).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as _random
from pathlib import Path

from .state import state_dir

SECRET_FILE = "secret"


def secret_path(inventory: Path) -> Path:
    return state_dir(inventory) / SECRET_FILE


def ensure(inventory: Path) -> bytes:
    """The cluster secret, created on first use. Two first uses at once agree on one file."""
    path = secret_path(inventory)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_random.token_hex(32) + "\n")
    try:
        os.link(tmp, path)              # fails if another run created it meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path)


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); "
                              f"run `chmod 600 {path}`")
    value = path.read_text().strip()
    if len(value) < 32:
        raise ValueError(f"{path} does not hold a secret; delete it to make a new one "
                         "(this changes every derived database password)")
    return value.encode()


def derive(secret: bytes, purpose: str, length: int = 32) -> str:
    """A password for `purpose`: letters and digits only, so it is safe in any config file."""
    if not secret:
        raise ValueError("no cluster secret loaded")
    raw = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
    return base64.b32encode(raw).decode().rstrip("=").lower()[:length]
