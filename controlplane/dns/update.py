"""RFC 2136 dynamic updates, signed with TSIG (dnspython).

The county's own DNS server (BIND) holds the zone. For DNS-01 answers govhost adds the
`_acme-challenge` TXT records for an order and deletes them after, in one signed update each
way; `govhost dns push` replaces the sites' A and AAAA record sets (controlplane.dns.publish).
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Mapping

import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update

from controlplane.core.manifest import Rfc2136

_ALGORITHMS = {"hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha512": dns.tsig.HMAC_SHA512}


class DnsUpdateError(Exception):
    pass


def _secret(path: str) -> str:
    p = Path(path)
    try:
        if p.stat().st_mode & 0o077:
            raise DnsUpdateError(f"{path} is readable by others; run `chmod 600 {path}`")
        text = p.read_text().strip()
    except FileNotFoundError:
        raise DnsUpdateError(f"the TSIG secret file {path} does not exist") from None
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DnsUpdateError(f"{path} does not hold a base64 TSIG secret") from None
    return text


class Updater:
    def __init__(self, cfg: Rfc2136):
        self.cfg = cfg
        self.keyring = dns.tsigkeyring.from_text({cfg.tsig_key_name: _secret(cfg.tsig_secret_file)})
        self.zone = dns.name.from_text(cfg.zone)

    def _message(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(self.zone, keyring=self.keyring,
                                        keyname=self.cfg.tsig_key_name,
                                        keyalgorithm=_ALGORITHMS[self.cfg.tsig_algorithm])

    def _send(self, records: Mapping[str, list[str]], add: bool) -> None:
        upd = self._message()
        for name, values in records.items():
            rname = dns.name.from_text(name)
            for v in values:
                if add:
                    upd.add(rname, 60, "TXT", f'"{v}"')
                else:
                    upd.delete(rname, "TXT", f'"{v}"')
        self._transmit(upd)

    def replace(self, rrsets: Mapping[tuple[str, str], list[str]], ttl: int) -> None:
        """Each (name, type)'s record set becomes exactly `values`, all in one message (the
        server applies it whole or not at all)."""
        upd = self._message()
        for (name, typ), values in rrsets.items():
            rname = dns.name.from_text(name)
            upd.delete(rname, typ)
            for v in values:
                upd.add(rname, ttl, typ, v)
        self._transmit(upd)

    def _transmit(self, upd: dns.update.UpdateMessage) -> None:
        try:
            resp = dns.query.tcp(upd, self.cfg.server, port=self.cfg.port, timeout=10)
        except Exception as exc:
            raise DnsUpdateError(f"DNS update to {self.cfg.server}:{self.cfg.port} failed: "
                                 f"{type(exc).__name__}: {exc} (check the server address and "
                                 f"the TSIG key {self.cfg.tsig_key_name})") from None
        if resp.rcode() != dns.rcode.NOERROR:
            raise DnsUpdateError(f"{self.cfg.server} refused the update of zone {self.cfg.zone}: "
                                 f"{dns.rcode.to_text(resp.rcode())} (check the TSIG key and "
                                 "the zone's update-policy)")

    def publish(self, records: Mapping[str, list[str]]) -> None:
        self._send(records, add=True)

    def withdraw(self, records: Mapping[str, list[str]]) -> None:
        self._send(records, add=False)
