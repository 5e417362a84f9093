"""Getting a certificate from an ACME CA with the `acme` library (certbot's): account, order,
challenges, finalization. The challenge answers are handed to callables (the nodes for
HTTP-01, the county DNS server for DNS-01), so this module holds the protocol only.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.core.manifest import AcmeSettings
from controlplane.tls.plan import challenge_for

USER_AGENT = "govhost-acme"

# HTTP-01 answers: token -> key authorization; DNS-01: record name -> TXT values.
PublishHttp = Callable[[Mapping[str, str]], None]
WithdrawHttp = Callable[[Mapping[str, str]], None]
PublishDns = Callable[[Mapping[str, list[str]]], None]
WithdrawDns = Callable[[Mapping[str, list[str]]], None]


class AcmeFailure(Exception):
    """An order that did not end in a certificate. `names` are those whose validation
    failed (empty when the failure was not tied to a name)."""

    def __init__(self, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.names = names


class _Network(client.ClientNetwork):
    """The library retries a bad nonce once; a CA may reject several in a row (Pebble rejects
    5 % of good nonces on purpose), and the RFC says the error is always retryable."""

    ATTEMPTS = 8

    def post(self, *args: Any, **kwargs: Any):
        for attempt in range(self.ATTEMPTS):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as exc:
                if exc.code != "badNonce" or attempt == self.ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")


@dataclass
class Responders:
    publish_http: PublishHttp
    withdraw_http: WithdrawHttp
    publish_dns: PublishDns | None = None
    withdraw_dns: WithdrawDns | None = None
    dns_wait: float = 0.0
    log: list[str] = field(default_factory=list)


_ACCOUNT_LOCK = threading.Lock()


def account_key(path: Path) -> jose.JWKEC:
    """The ACME account key (P-256), made once and kept 0600 in the state directory.
    Orders run in several threads; the first one makes the key."""
    with _ACCOUNT_LOCK:
        return _account_key(path)


def _account_key(path: Path) -> jose.JWKEC:
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(path)
    return jose.JWKEC(key=serialization.load_pem_private_key(path.read_bytes(), password=None))


class AcmeClient:
    """One ACME account at one CA. Not shared between threads: each worker makes its own."""

    def __init__(self, settings: AcmeSettings, key_path: Path):
        self.settings = settings
        self.key = account_key(key_path)
        verify: Any = settings.ca_bundle or True
        self.net = _Network(self.key, alg=jose.ES256, verify_ssl=verify, user_agent=USER_AGENT,
                            timeout=30)
        try:
            directory = client.ClientV2.get_directory(settings.directory, self.net)
        except Exception as exc:  # requests' and the library's errors alike
            raise AcmeFailure(f"cannot reach the ACME directory {settings.directory}: "
                              f"{_short(exc)}") from None
        self.client = client.ClientV2(directory, self.net)
        self._register(key_path.with_suffix(".json"))

    def _register(self, record: Path) -> None:
        reg = messages.NewRegistration.from_data(email=self.settings.contact,
                                                 terms_of_service_agreed=True)
        try:
            regr = self.client.new_account(reg)
        except errors.ConflictError as exc:   # the key already has an account: use it
            regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            self.net.account = regr
        with _ACCOUNT_LOCK:
            record.write_text(json.dumps({"directory": self.settings.directory,
                                          "uri": regr.uri}))

    @property
    def has_ari(self) -> bool:
        return "renewalInfo" in self.client.directory

    def renewal_start(self, cert_pem: bytes) -> float | None:
        """The start of the CA's suggested renewal window (ACME ARI), where it offers one."""
        if not self.has_ari:
            return None
        try:
            start, _ = self.client.renewal_time(cert_pem)
        except Exception:
            return None
        return start.timestamp() if start is not None else None

    def issue(self, names: tuple[str, ...], key_pem: bytes, answer: Responders) -> bytes:
        """A full chain (PEM) for `names`, or AcmeFailure."""
        csr = crypto_util.make_csr(key_pem, list(names))
        try:
            order = self.client.new_order(csr)
        except messages.Error as exc:
            raise AcmeFailure(f"the CA refused the order: {_short(exc)}") from None
        http: dict[str, str] = {}
        dns: dict[str, list[str]] = {}
        pending = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            ident = authz.body.identifier.value
            name = f"*.{ident}" if authz.body.wildcard else ident
            kind = challenge_for(name, self.settings)
            chall = next((c for c in authz.body.challenges if c.chall.typ == kind), None)
            if chall is None:
                raise AcmeFailure(f"the CA offers no {kind} challenge for {name}", (name,))
            response, validation = chall.response_and_validation(self.key)
            if isinstance(chall.chall, challenges.HTTP01):
                http[chall.chall.encode("token")] = validation
            else:
                dns.setdefault(chall.chall.validation_domain_name(ident), []).append(validation)
            pending.append((chall, response))
        try:
            if http:
                answer.publish_http(http)
            if dns:
                if answer.publish_dns is None:
                    raise AcmeFailure("DNS-01 is needed but no DNS server is configured")
                answer.publish_dns(dns)
                if answer.dns_wait:
                    time.sleep(answer.dns_wait)
            for chall, response in pending:
                self.client.answer_challenge(chall, response)
            deadline = dt.datetime.now() + dt.timedelta(
                seconds=self.settings.order_timeout_seconds)
            done = self.client.poll_and_finalize(order, deadline)
            return done.fullchain_pem.encode()
        except errors.ValidationError as exc:
            failed = []
            details = []
            for authz in exc.failed_authzrs:
                ident = authz.body.identifier.value
                failed.append(f"*.{ident}" if authz.body.wildcard else ident)
                for c in authz.body.challenges:
                    if c.error is not None:
                        details.append(f"{failed[-1]}: {c.error.detail or c.error.typ}")
            raise AcmeFailure("validation failed: " + "; ".join(details or failed),
                              tuple(failed)) from None
        except errors.TimeoutError:
            raise AcmeFailure(f"the order did not complete within "
                              f"{self.settings.order_timeout_seconds:.0f} s") from None
        except (messages.Error, errors.Error) as exc:
            raise AcmeFailure(_short(exc)) from None
        finally:
            try:
                if http:
                    answer.withdraw_http(http)
                if dns and answer.withdraw_dns is not None:
                    answer.withdraw_dns(dns)
            except Exception as exc:  # cleanup must not hide the outcome
                answer.log.append(f"cleanup: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 400 else text[:400] + "…"
