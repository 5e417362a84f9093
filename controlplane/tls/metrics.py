"""Credentials for the nodes' metrics: TLS and basic auth on the node exporter (9100) and
govhost-agent (9273), so that only Prometheus reads what the nodes say about the units.

A county CA of its own for these endpoints (created once in the state directory) signs one
certificate per node for its addresses; the certificates live in the state directory, so a
render is stable from apply to apply and they are issued again only when a node's address
changes or the certificate nears its end. The password is derived from the cluster secret
(a new secret rotates it); the node exporter wants its bcrypt hash, which is computed with a
salt derived from the secret as well, so the shipped file is the same at every apply.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import bcrypt
from cryptography import x509

from controlplane.core import secrets
from controlplane.core.manifest import Hosts
from controlplane.tls import certs

USER = "prometheus"
DIR = "metrics"
DAYS = 825
RENEW_DAYS = 30
_BCRYPT_ALPHABET = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class MetricsAccess:
    user: str
    password: str = field(repr=False)
    password_hash: str = field(repr=False)   # bcrypt, for the node exporter's web config
    ca_pem: bytes = field(repr=False)
    ca_path: Path
    # node name -> (certificate PEM, key PEM)
    node_certs: Mapping[str, tuple[bytes, bytes]] = field(repr=False, default_factory=dict)

    @property
    def agent_sha256(self) -> str:
        """What govhost-agent compares a request's Authorization header with: its SHA-256,
        so the node holds no password."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return hashlib.sha256(f"Basic {token}".encode()).hexdigest()


@lru_cache(maxsize=8)
def _bcrypt(password: str, salt_seed: bytes) -> str:
    raw = hmac.new(salt_seed, b"metrics-bcrypt-salt", hashlib.sha256).digest()
    salt = bytes(_BCRYPT_ALPHABET[b % 64] for b in raw[:22])
    # bcrypt's 22nd salt character carries only 2 bits: one of ".Oeu" keeps it canonical.
    salt = salt[:21] + b".Oeu"[raw[22] % 4:raw[22] % 4 + 1]
    return bcrypt.hashpw(password.encode(), b"$2b$10$" + salt).decode()


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _usable(cert_pem: bytes, addresses: set[str], ca_pem: bytes, now: float) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    ips = {str(ipaddress.ip_address(a)) for a in san.get_values_for_type(x509.IPAddress)}
    left = cert.not_valid_after_utc.timestamp() - now
    return cert.issuer == ca.subject and addresses <= ips and left > RENEW_DAYS * 86400


def ensure(state_dir: Path, secret: bytes, hosts: Hosts, county_name: str,
           now: float | None = None) -> MetricsAccess:
    """The county's metrics CA, each node's certificate and the password; whatever is
    missing, stale or no longer covers a node's addresses is made now."""
    now = time.time() if now is None else now
    d = state_dir / DIR
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_path, ca_key_path = d / "ca.pem", d / "ca.key"
    if not (ca_path.exists() and ca_key_path.exists()):
        ca_pem, ca_key = certs.make_root(f"{county_name} metrics CA", now)
        _write(ca_key_path, ca_key, 0o600)
        _write(ca_path, ca_pem, 0o644)
    ca_pem, ca_key = ca_path.read_bytes(), ca_key_path.read_bytes()
    node_certs: dict[str, tuple[bytes, bytes]] = {}
    for node in hosts.nodes:
        cert_path, key_path = d / f"{node.name}.pem", d / f"{node.name}.key"
        addresses = {a for a in (node.address, node.address6) if a}
        if not (cert_path.exists() and key_path.exists()
                and _usable(cert_path.read_bytes(), addresses, ca_pem, now)):
            key = certs.new_key()
            cert = certs.sign_leaf(ca_pem, ca_key, key, [f"{node.name}.metrics.govhost"],
                                   now, DAYS, ips=sorted(addresses))
            _write(key_path, key, 0o600)
            _write(cert_path, cert, 0o644)
        node_certs[node.name] = (cert_path.read_bytes(), key_path.read_bytes())
    password = secrets.derive(secret, "metrics-basic-auth")
    return MetricsAccess(USER, password, _bcrypt(password, secret), ca_pem, ca_path, node_certs)


def read(access: MetricsAccess | None, address: str, port: int, timeout: float = 3.0) -> str:
    """A node's /metrics on `port` as Prometheus reads it: over TLS, checked against the
    county's metrics CA, with basic auth (plain HTTP without `access`). Raises OSError."""
    import ssl
    import urllib.request

    host = f"[{address}]" if ":" in address else address
    if access is None:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
            return r.read().decode()
    ctx = ssl.create_default_context(cadata=access.ca_pem.decode())
    token = base64.b64encode(f"{access.user}:{access.password}".encode()).decode()
    req = urllib.request.Request(f"https://{host}:{port}/metrics",
                                 headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return r.read().decode()
