"""Certificates as data: parse, check and make them (cryptography; no files, no network).

Checks use cryptography's own path builder (RFC 5280 with the web PKI's server profile), the
same judgement a browser makes, rather than comparing fields by hand.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

SYSTEM_ROOTS = "/etc/ssl/certs/ca-certificates.crt"


class CertProblem(ValueError):
    """A certificate, chain or key that must not be deployed, and why."""


@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]
    not_before: float
    not_after: float
    serial: str
    issuer: str
    fingerprint: str
    ocsp_url: str | None


def split_pem(data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertProblem(f"not a PEM certificate bundle ({exc})") from None
    return certs


def info(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    ocsp = None
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp = next((d.access_location.value for d in aia
                     if d.access_method == AuthorityInformationAccessOID.OCSP), None)
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        names=names,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        serial=format(cert.serial_number, "x"),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        ocsp_url=ocsp,
    )


def load_key(data: bytes):
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertProblem(f"not an unencrypted PEM private key ({exc})") from None


def key_matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    pub = load_key(key_pem).public_key()
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pub.public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def load_roots(paths: Iterable[str]) -> list[x509.Certificate]:
    roots: list[x509.Certificate] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                roots.extend(x509.load_pem_x509_certificates(f.read()))
        except FileNotFoundError:
            continue
    return roots


def check(chain_pem: bytes, key_pem: bytes, names: Sequence[str],
          roots: Sequence[x509.Certificate], now: float | None = None) -> CertInfo:
    """The leaf (first in `chain_pem`) with its chain must verify to one of `roots` for every
    one of `names`, and `key_pem` must be its key. Raises CertProblem saying what is wrong."""
    certs = split_pem(chain_pem)
    if not certs:
        raise CertProblem("the file holds no certificate")
    leaf, rest = certs[0], certs[1:]
    if not key_matches(leaf, key_pem):
        raise CertProblem("the private key does not belong to the certificate (its public key "
                          "differs); import the key the CSR was made with")
    facts = info(leaf)
    when = dt.datetime.fromtimestamp(now, dt.timezone.utc) if now else dt.datetime.now(
        dt.timezone.utc)
    if not roots:
        raise CertProblem("no trusted roots to check the chain against")
    builder = PolicyBuilder().store(Store(list(roots))).time(when)
    missing = [n for n in names if not _covered(facts.names, n)]
    if missing:
        raise CertProblem(f"the certificate does not cover {', '.join(missing)} (it covers "
                          f"{', '.join(facts.names) or 'no DNS names'})")
    for n in names:
        try:
            builder.build_server_verifier(x509.DNSName(n)).verify(leaf, rest)
        except VerificationError as exc:
            raise CertProblem(f"the chain does not verify for {n}: {exc}; include every "
                              "intermediate certificate after the leaf") from None
    return facts


def _covered(cert_names: Sequence[str], name: str) -> bool:
    from controlplane.tls.plan import covers
    return covers(cert_names, name)


def new_key() -> bytes:
    """An ECDSA P-256 key: every client of the last decade speaks ECDHE-ECDSA, and it is
    cheap for nginx's handshakes."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def make_root(name: str, now: float, years: int = 20) -> tuple[bytes, bytes]:
    """A county root CA (certificate, key): path length 0, it signs leaves directly."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 3600)).not_valid_after(_utc(now + years * 365 * 86400))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA384()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def sign_leaf(root_pem: bytes, root_key_pem: bytes, key_pem: bytes, names: Sequence[str],
              now: float, days: int, ips: Sequence[str] = ()) -> bytes:
    """A server certificate for `names` from the county root (PEM, leaf only)."""
    root = x509.load_pem_x509_certificate(root_pem)
    root_key = serialization.load_pem_private_key(root_key_pem, password=None)
    pub = load_key(key_pem).public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(root.subject).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 300)).not_valid_after(_utc(now + days * 86400))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM)
