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

SECRET_FILE = "secret"
BACKUP_KEY_FILE = "backup_ed25519"
RECOVERY_KEY_FILE = "recovery-key"    # backup/control.py: kept out of every snapshot


def ensure(state: Path) -> bytes:
    """The cluster secret in the state directory `state`, created on first use. Two first
    uses at once agree on one file."""
    path = state / SECRET_FILE
    create_once(path, lambda: _random.token_hex(32) + "\n")
    value = read_private(path)
    if len(value) < 32:
        raise ValueError(f"{path} does not hold a secret; delete it to make a new one "
                         "(this changes every derived database password)")
    return value


def backup_key(state: Path) -> bytes:
    """The SSH key with which nodes reach the backup repository (OpenSSH private key).

    A key of its own, not derived: OpenSSH's private-key format carries a random check word,
    so a derived key would render differently at every apply."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def make() -> str:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()).decode()

    path = state / BACKUP_KEY_FILE
    create_once(path, make)
    return read_private(path) + b"\n"


def public_key(private_pem: bytes, comment: str = "govhost-backup") -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_pem, password=None)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    return f"{pub} {comment}"


def create_once(path: Path, make) -> None:
    """Write `make()` to `path` (mode 0600) unless it exists; concurrent first uses agree."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make())
    try:
        os.link(tmp, path)              # fails if another run created it meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def read_private(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); "
                              f"run `chmod 600 {path}`")
    return path.read_text().strip().encode()


def derive(secret: bytes, purpose: str, length: int = 32) -> str:
    """A password for `purpose`: letters and digits only, so it is safe in any config file."""
    if not secret:
        raise ValueError("no cluster secret loaded")
    raw = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
    return base64.b32encode(raw).decode().rstrip("=").lower()[:length]


def console_proxy(cluster_secret: bytes) -> str:
    """The header value every node's nginx sends with what it forwards to the console: only
    requests carrying it are taken (controlplane/console/guard.py); it lives on the nodes in
    a root-only file of the config release, out of reach of units' PHP."""
    return derive(cluster_secret, "console-proxy", 32)


def messages(cluster_secret: bytes) -> str:
    """The county's message secret: signs citizens' challenges and the copies nodes keep of
    each other's messages (govhost_node/message_server.py). Root-only on the nodes."""
    return derive(cluster_secret, "messages", 52)
