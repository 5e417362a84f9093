"""Host names and DNS labels: one canonical spelling for every name a tenant can claim.

Two tenants must never claim the same host name in different spellings (upper case, a trailing
dot, Unicode vs. punycode), so every name is reduced to its canonical ASCII form (lower-case
A-labels, no trailing dot) before it is compared or rendered.
"""
from __future__ import annotations

import ipaddress
import re

import idna

LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# Names the county keeps for its own services; a unit may not take them as its site name.
RESERVED_LABELS = frozenset(
    {
        "www", "mail", "smtp", "imap", "pop", "pop3", "ftp", "sftp", "ns", "ns1", "ns2", "ns3",
        "ns4", "dns", "mx", "webmail", "admin", "root", "localhost", "autodiscover", "autoconfig",
        "vpn", "portal", "api", "govhost", "wpad", "isatap", "static", "cdn", "monitor",
        "grafana", "prometheus", "backup", "acme", "_acme-challenge", "console",
        "preview",
    }
)


class NameError_(ValueError):
    """A host name or label that is not acceptable; the message says what is allowed."""


def is_label(value: str) -> bool:
    """True for a lower-case LDH DNS label (letters, digits, inner hyphens, 1-63 chars)."""
    return bool(LABEL_RE.match(value))


def check_label(value: str) -> str:
    """Return the label if it is a canonical DNS label, else explain what is allowed."""
    if value != value.lower() and is_label(value.lower()):
        raise NameError_(f"{value!r} must be written in lower case: {value.lower()!r}")
    if not is_label(value):
        raise NameError_(
            f"{value!r} is not a DNS label (lower-case letters, digits and inner hyphens, "
            "1-63 characters)"
        )
    if value.startswith("xn--") or (len(value) > 3 and value[2:4] == "--"):
        raise NameError_(
            f"{value!r}: labels with '--' in positions 3-4 are reserved for punycode; "
            "name the unit in plain ASCII"
        )
    return value


def canonical_host(value: str) -> str:
    """Reduce a host name in any spelling to lower-case ASCII with no trailing dot.

    Raises NameError_ for anything that is not a host name: wildcards, spaces, quotes,
    semicolons, braces and every other character nginx or a shell would interpret.
    """
    if not isinstance(value, str) or not value:
        raise NameError_("a host name must be a non-empty string")
    name = value.strip()
    if name != value:
        raise NameError_(f"{value!r} has leading or trailing spaces")
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise NameError_(f"{value!r} is not a host name (1-253 characters)")
    labels = name.split(".")
    out = []
    for label in labels:
        if not label:
            raise NameError_(f"{value!r} is not a host name (empty label)")
        if label.isascii():
            low = label.lower()
            if low.startswith("xn--"):
                try:
                    low = idna.encode(idna.decode(low)).decode("ascii")
                except idna.IDNAError as exc:
                    raise NameError_(f"{value!r}: {label!r} is not valid punycode ({exc})") from None
            if not LABEL_RE.match(low):
                raise NameError_(
                    f"{value!r} is not a host name (letters, digits, hyphens, dots)"
                )
            out.append(low)
        else:
            try:
                out.append(idna.encode(label, uts46=True).decode("ascii"))
            except idna.IDNAError as exc:
                raise NameError_(f"{value!r}: {label!r} is not a valid IDN label ({exc})") from None
    result = ".".join(out)
    if len(result) > 253:
        raise NameError_(f"{value!r} is longer than 253 characters in ASCII form")
    if len(out) < 2:
        raise NameError_(f"{value!r} is not a fully qualified host name (needs a dot)")
    return result


def is_ip_literal(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
