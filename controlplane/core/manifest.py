"""The manifest schema: cluster settings, hosts and one tenant per unit.

The schema is the contract with the units and the operators. Every field is checked here so
that nothing downstream (templates, playbooks, shell) ever sees a value outside a safe alphabet:
names are DNS labels, host names are canonical ASCII, free text never reaches nginx or a shell
and is still refused if it carries control or markup characters.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import re
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from controlplane.core import names
from govhost_node.message_spool import FORGET_AFTER_DAYS

# C0 and C1 controls and the Unicode line/paragraph separators: YAML, JavaScript and log
# readers take U+0085, U+2028 and U+2029 as line breaks.
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029{};$`\\<>\"]")


def _safe_text(value: str) -> str:
    bad = _FORBIDDEN_TEXT.search(value)
    if bad:
        raise ValueError(
            f"{value!r} contains {bad.group()!r}; text may not contain control characters or "
            "any of { } ; $ ` \\ < > \""
        )
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _label(value: str) -> str:
    try:
        return names.check_label(value)
    except names.NameError_ as exc:
        raise ValueError(str(exc)) from None


def _host(value: str) -> str:
    try:
        return names.canonical_host(value)
    except names.NameError_ as exc:
        raise ValueError(str(exc)) from None


def _matching(pattern: str, what: str):
    """A validator: the whole value matches `pattern`, else "'<value>' <what>". The whole
    value: `re.match` with `$` also took a value with a line break at its end."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} {what}")
        return value
    return check


_email = _matching(r"^[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9-]+\.)+[A-Za-z]{2,63}$",
                   "is not an e-mail address (name@host.domain)")
_phone = _matching(r"^\+?[0-9][0-9 ()-]{2,30}$",
                   "is not a phone number (digits, spaces, + ( ) -)")


Text = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_safe_text)]
Label = Annotated[StrictStr, AfterValidator(_label)]
Host = Annotated[StrictStr, AfterValidator(_host)]
Email = Annotated[StrictStr, AfterValidator(_email)]
Phone = Annotated[StrictStr, AfterValidator(_phone)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Contact(_Model):
    name: Text
    email: Email
    phone: Phone


class RateLimit(_Model):
    """Requests per second per client address, with a burst allowance."""

    requests_per_second: StrictInt = Field(ge=1, le=10_000)
    burst: StrictInt = Field(default=0, ge=0, le=100_000)


class StaticSite(_Model):
    type: Literal["static"]


class PhpSettings(_Model):
    """Limits of the tenant's PHP-FPM pool (workers start on demand, up to max_children)."""

    max_children: StrictInt = Field(default=5, ge=1, le=200)
    memory_mb: StrictInt = Field(default=128, ge=16, le=4096)
    upload_mb: StrictInt = Field(default=20, ge=1, le=2048)
    timeout_seconds: StrictInt = Field(default=60, ge=1, le=600)


class PhpSite(_Model):
    """A PHP site: its own pool, its own user; `database: true` adds a MariaDB database."""

    type: Literal["php"]
    php: PhpSettings = PhpSettings()
    database: StrictBool = False


def _upstream(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: upstream must start with http:// or https://")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: upstream may not carry user, query or fragment")
    if parts.path not in ("", "/"):
        raise ValueError(f"{value!r}: upstream must be scheme://host:port with no path")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r}: port must be 1-65535") from None
    host = parts.hostname or ""
    if not names.is_ip_literal(host):
        try:
            host = names.canonical_host(host)
        except names.NameError_ as exc:
            raise ValueError(f"{value!r}: {exc}") from None
    elif ":" in host:
        host = f"[{ipaddress.ip_address(host).compressed}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}:{port or default}"


Upstream = Annotated[StrictStr, AfterValidator(_upstream)]


class ProxySite(_Model):
    """A unit's own application published under its name through the platform."""

    type: Literal["proxy"]
    upstreams: list[Upstream] = Field(min_length=1, max_length=16)
    timeout_seconds: StrictInt = Field(default=60, ge=1, le=600)
    max_body_mb: StrictInt = Field(default=10, ge=1, le=2048)

    @model_validator(mode="after")
    def _one_scheme(self) -> "ProxySite":
        if len({u.split(":", 1)[0] for u in self.upstreams}) > 1:
            raise ValueError("all upstreams must use the same scheme")
        return self


Site = Annotated[Union[StaticSite, PhpSite, ProxySite], Field(discriminator="type")]


_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "ssh-rsa", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")


def _ssh_key(value: str) -> str:
    """One OpenSSH public key: type, base64 blob, optional plain comment. No options (a
    `command=` or `from=` prefix would be the tenant configuring sshd), no line breaks."""
    parts = value.split(" ")
    if not 2 <= len(parts) <= 3 or parts[0] not in _KEY_TYPES:
        raise ValueError("expected '<type> <base64> [comment]' with type one of "
                         + ", ".join(_KEY_TYPES[:3]) + ", …; key options are not allowed")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key's second field is not base64") from None
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4:4 + n].decode(errors="replace") != parts[0]:
        raise ValueError(f"the key data does not match its type {parts[0]}")
    if len(parts) == 3 and not re.fullmatch(r"[A-Za-z0-9@._+-]{1,100}", parts[2]):
        raise ValueError("the key comment may only hold letters, digits and @._+-")
    return value


SshKey = Annotated[StrictStr, Field(max_length=16_000), AfterValidator(_ssh_key)]


class Sftp(_Model):
    """Who may upload: public keys only (password login is off for every tenant account)."""

    keys: list[SshKey] = Field(default_factory=list, max_length=20)


class Section(_Model):
    """A township's sub-unit or village, served at /<name>/ on the township's site."""

    name: Label
    title: Text
    sftp: Sftp | None = None


_schedule = _matching(r"^(hourly|daily|weekly|([01][0-9]|2[0-3]):[0-5][0-9])$",
                      "is not a schedule; allowed: hourly, daily, weekly, or a time of day "
                      "HH:MM (every day at that time)")


Schedule = Annotated[StrictStr, AfterValidator(_schedule)]
_PATH_RE = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


def _abs_path(value: str) -> str:
    if not _PATH_RE.match(value) or any(p in (".", "..") for p in value.split("/")):
        raise ValueError(f"{value!r} is not an absolute path of letters, digits and _.- "
                         "(no . or .. parts)")
    return value


AbsPath = Annotated[StrictStr, Field(max_length=200), AfterValidator(_abs_path)]
Keep = Annotated[StrictInt, Field(ge=0, le=3650)]


class TenantBackup(_Model):
    """A unit's own backup policy; anything left out comes from cluster.yaml's `backup`."""

    enabled: StrictBool = True
    schedule: Schedule | None = None
    keep_daily: Keep | None = None
    keep_weekly: Keep | None = None
    keep_monthly: Keep | None = None


ColumnCategory = Literal["news", "updates", "notices", "policy", "personnel", "plans"]
_column_path = _matching(r"^/([A-Za-z0-9_-]+/)+$",
                         "is not a column path; use /name/ (letters, digits, _ -), nested as "
                         "/a/b/, with the slashes at both ends")


class Column(_Model):
    """A column (栏目) of the site: files under `path` are its content; how often it must be
    updated comes from its category (cluster.yaml compliance.column_limits_days)."""

    path: Annotated[StrictStr, Field(max_length=200), AfterValidator(_column_path)]
    title: Text
    category: ColumnCategory


_site_code = _matching(r"^[0-9A-Za-z]{10}$",
                       "is not a site identification code (网站标识码): 10 letters or digits")


class Identity(_Model):
    """What the homepage footer must show besides the organiser and contact."""

    site_code: Annotated[StrictStr, AfterValidator(_site_code)]
    icp: Text
    psb: Text


IssuerName = Literal["acme", "internal", "manual", "none"]


class TenantTls(_Model):
    """A unit's own choice of issuer over the cluster's (e.g. `internal` for an intranet-only
    site, `manual` for a certificate bought from a commercial CA)."""

    issuer: IssuerName


WafMode = Literal["auto", "off", "detect", "block"]
# CRS rules that are the machinery, not a judgement of the request: setup (900-901), the
# anomaly score that refuses (949) or scores the response (959), the correlation (980).
# Excluding one would switch blocking off while every view still said "block".
WAF_MACHINERY = ((900000, 901999), (949000, 949999), (959000, 959999), (980000, 980999))
WAF_DETECT_MAX_DAYS = 90


class Waf(_Model):
    """The web application firewall (ModSecurity with the OWASP Core Rule Set) in front of
    the unit's site. `auto`: a static site blocks; a site that takes input (PHP, proxy)
    detects only while it waits for `govhost launch` and blocks from the launch on.
    `detect` is an exception the county must see: it needs a `reason` and an `until` date
    (blocking starts that day). `exclude_rules`: CRS rule ids the site trips by design."""

    mode: WafMode = "auto"
    exclude_rules: list[Annotated[StrictInt, Field(ge=1, le=999_999)]] = Field(
        default_factory=list, max_length=100)
    reason: Text | None = None
    until: datetime.date | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # `waf: off` (YAML reads a bare off as false) or `waf: block`
        if value is False:
            return {"mode": "off"}
        if value == "detect":
            raise ValueError("`waf: detect` needs a reason and an end date: "
                             "`waf: {mode: detect, reason: \"why the site cannot block yet\", "
                             "until: YYYY-MM-DD}` (it blocks from that day)")
        if isinstance(value, str):
            return {"mode": value}
        return value

    @model_validator(mode="after")
    def _exclusions_judge_only(self) -> "Waf":
        machinery = [i for i in self.exclude_rules
                     if any(lo <= i <= hi for lo, hi in WAF_MACHINERY)]
        if machinery:
            raise ValueError(f"exclude_rules {machinery}: these CRS rules are how it refuses "
                             "(setup 900000-901999, anomaly scores 949xxx/959xxx, correlation "
                             "980xxx), not a check a site trips; exclude the rule that matched "
                             "instead (`govhost waf replay` names it)")
        return self

    @model_validator(mode="after")
    def _detect_is_stated(self) -> "Waf":
        if self.mode == "detect" and (self.reason is None or self.until is None):
            raise ValueError("`mode: detect` needs `reason` (why the site cannot block yet) "
                             "and `until` (YYYY-MM-DD, the day blocking starts)")
        if self.mode != "detect" and (self.reason is not None or self.until is not None):
            raise ValueError("`reason` and `until` belong to `mode: detect` only")
        if self.until is not None and \
                self.until > datetime.date.today() + datetime.timedelta(WAF_DETECT_MAX_DAYS):
            raise ValueError(f"`until` {self.until} is more than {WAF_DETECT_MAX_DAYS} days "
                             "away: an exception is for the time the site's rules take to "
                             "settle; give a nearer date and extend it with a new one if "
                             "needed")
        return self


ReviewLevel = Literal["unit", "county"]


class Review(_Model):
    """Who must approve a release before it goes live, in order: `unit` (one of the unit's
    reviewers) or `county` (a county operator); each level by a different person. `none`
    is no level, `required` one level of the unit."""

    levels: list[ReviewLevel] = Field(default_factory=list, max_length=3)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if value == "none":
            return {"levels": []}
        if value == "required":
            return {"levels": ["unit"]}
        if isinstance(value, str):
            raise ValueError(f"{value!r} is not a review setting; use none, required or "
                             "{levels: [unit, county]} (one to three levels, each unit or "
                             "county)")
        return value


_messages_code = _matching(r"^[A-Z]{2,6}$",
                           "is not a message code: 2 to 6 capital letters (JY for 教育局), "
                           "the start of every message number of the unit")
_messages_path = _matching(r"^/[a-z0-9][a-z0-9-]{0,31}/$",
                           "is not a page path: one level such as /hudong/ (lower-case "
                           "letters, digits and -, with a slash at each end)")


class Messages(_Model):
    """The unit's message box (留言, 互动交流; docs/messages.md): citizens write on `path` of
    the unit's site, each message is numbered `CODE-YYYYMMDD-node-sequence`."""

    code: Annotated[StrictStr, AfterValidator(_messages_code)]
    path: Annotated[StrictStr, AfterValidator(_messages_path)] = "/hudong/"


class Tenant(_Model):
    """One unit (department or township) and its site."""

    name: Label
    title: Text
    kind: Literal["department", "township"]
    contact: Contact
    # Defaults by factory: a default instance is deep-copied for every manifest (a fifth
    # of loading a county of 5,000).
    site: Site = Field(default_factory=lambda: StaticSite(type="static"))
    replicas: StrictInt | None = Field(default=None, ge=1, le=5)
    aliases: list[Host] = Field(default_factory=list, max_length=20)
    sections: list[Section] = Field(default_factory=list, max_length=200)
    rate_limit: RateLimit | None = None
    sftp: Sftp = Field(default_factory=Sftp)
    review: Review = Field(default_factory=lambda: Review())
    quota_mb: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    backup: TenantBackup = Field(default_factory=TenantBackup)
    waf: Waf = Field(default_factory=lambda: Waf())
    columns: list[Column] = Field(default_factory=list, max_length=100)
    identity: Identity | None = None
    tls: TenantTls | None = None
    # 47号: a site that has not passed a security check may not go online. `pending`: served
    # only to the county's addresses until `govhost launch NAME` passes (docs/compliance.md).
    launch: Literal["pending", "live"] = "live"
    messages: Messages | None = None

    @model_validator(mode="after")
    def _unique_sections(self) -> "Tenant":
        seen: set[str] = set()
        for s in self.sections:
            if s.name in seen:
                raise ValueError(f"section {s.name!r} is listed twice")
            seen.add(s.name)
        paths = [c.path for c in self.columns]
        if len(set(paths)) != len(paths):
            raise ValueError("a column path is listed twice")
        if len(set(self.aliases)) != len(self.aliases):
            raise ValueError("an alias is listed twice (compared case-insensitively, as punycode)")
        return self


class Defaults(_Model):
    replicas: StrictInt = Field(default=2, ge=1, le=5)
    rate_limit: RateLimit = RateLimit(requests_per_second=20, burst=40)
    quota_mb: StrictInt = Field(default=1024, ge=1, le=1_000_000)
    keep_content_releases: StrictInt = Field(default=5, ge=2, le=100)


class Portal(_Model):
    title: Text
    hostnames: list[Label] = Field(default_factory=lambda: ["www"], max_length=5)
    serve_apex: StrictBool = True


class NginxSettings(_Model):
    worker_connections: StrictInt = Field(default=4096, ge=256, le=65536)
    client_max_body_size_mb: StrictInt = Field(default=20, ge=1, le=2048)
    keepalive_timeout: StrictInt = Field(default=30, ge=0, le=600)


def _ip(value: str) -> str:
    # A scope (fe80::1%eth0) may hold any text: it would reach ssh and shell commands.
    try:
        if "%" not in value:
            return ipaddress.ip_address(value).compressed
    except ValueError:
        pass
    raise ValueError(f"{value!r} is not an IP address (no %scope)")


IpAddress = Annotated[StrictStr, AfterValidator(_ip)]
UserName = Annotated[StrictStr, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]


class Offsite(_Model):
    """The second repository (the city's disaster-recovery center), reached over SFTP with
    govhost's backup key and filled with `restic copy` on its own schedule."""

    address: IpAddress
    port: StrictInt = Field(default=22, ge=1, le=65535)
    user: UserName = "govhost-backup"
    path: AbsPath = "/srv/govhost/offsite/repo"
    schedule: Schedule = "04:00"


class BackupSettings(_Model):
    """Cluster-wide backup defaults; the repository lives on the node with the backup role."""

    schedule: Schedule = "02:30"
    keep_daily: Keep = 7
    keep_weekly: Keep = 4
    keep_monthly: Keep = 6
    path: AbsPath = "/srv/govhost/backup/repo"
    verify_schedule: Schedule = "weekly"
    verify_subset_percent: StrictInt = Field(default=5, ge=1, le=100)
    offsite: Offsite | None = None


Days = Annotated[StrictInt | float, Field(gt=0, le=3650)]


def _column_limits() -> dict[str, float]:
    return {"news": 14, "updates": 14, "notices": 182, "policy": 182, "personnel": 365,
            "plans": 365}


class Compliance(_Model):
    """Thresholds of the national inspection indicators (these defaults are the inspections')."""

    probe_timeout_seconds: float = Field(default=15, gt=0, le=120)
    unreachable_week_ratio: float = Field(default=0.05, gt=0, lt=1)
    homepage_stale_days: Days = 14
    # A probe round per exporter interval; the inspection probes at least this often a day.
    probes_per_day_min: StrictInt = Field(default=20, ge=1, le=1440)
    column_limits_days: dict[ColumnCategory, Days] = Field(default_factory=_column_limits)
    # The veto counts columns (检查指标, 栏目更新): this many first-level news/updates columns
    # past 2 weeks or notices/policy columns past 6 months (their column_limits_days) ...
    stale_columns_veto: StrictInt = Field(default=5, ge=1, le=1000)
    # ... or this many columns of any level not updated for long_stale_days ...
    long_stale_days: Days = 365
    long_stale_columns_veto: StrictInt = Field(default=10, ge=1, le=1000)
    # ... or this many empty columns. Below the limits each such column is a deduction.
    empty_columns_veto: StrictInt = Field(default=5, ge=1, le=1000)
    stale_column_deduction: float = Field(default=1, ge=0, le=100)
    crawl_max_pages: StrictInt = Field(default=200, ge=1, le=10_000)
    crawl_max_seconds: float = Field(default=60, gt=0, le=3600)
    # Each site is crawled at 80 % of its own rate limit, so the crawl's speed is set by how
    # many sites go at once (8: ~130 requests/s, under half a core of the control machine).
    crawl_sites_at_once: StrictInt = Field(default=8, ge=1, le=64)
    check_external_links: StrictBool = True
    log_retention_days: StrictInt = Field(default=180, ge=1, le=3650)
    # Each homepage loaded in headless Chromium through a node (指引: within 3 s), under a
    # visitor's connection (download Mbit/s, round trip ms; 0 Mbit/s: no throttling), then
    # checked with axe-core for GB/T 37668 (WCAG 2.0 A/AA). Violations of rules at
    # `accessibility_fail_impact` or worse fail the indicator past `accessibility_max_violations`.
    browser_checks: StrictBool = True
    load_time_limit_seconds: float = Field(default=3, gt=0, le=120)
    browser_download_mbps: float = Field(default=10, ge=0, le=10_000)
    browser_latency_ms: StrictInt = Field(default=40, ge=0, le=5000)
    browser_page_timeout_seconds: StrictInt = Field(default=30, ge=1, le=300)
    browser_workers: StrictInt = Field(default=2, ge=1, le=16)
    accessibility_fail_impact: Literal["minor", "moderate", "serious", "critical"] = "serious"
    accessibility_max_violations: StrictInt = Field(default=0, ge=0, le=10_000)


_tsig_name = _matching(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                       "is not a TSIG key name (letters, digits, . _ -)")


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or any(c in value for c in " \"<>{}`"):
        raise ValueError(f"{value!r} is not an https:// URL (an ACME directory is HTTPS)")
    return value


class Rfc2136(_Model):
    """The county's DNS server, updated by RFC 2136 (TSIG-signed): for DNS-01 challenges
    (tls.acme.dns) and for the sites' A and AAAA records (cluster.yaml `dns:`, `govhost dns
    push`), each with a key of its own. The TSIG secret stays in a file on the control
    machine, never in the inventory."""

    server: IpAddress
    port: StrictInt = Field(default=53, ge=1, le=65535)
    zone: Host
    tsig_key_name: Annotated[StrictStr, AfterValidator(_tsig_name)]
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha512"] = "hmac-sha256"
    tsig_secret_file: AbsPath
    propagation_seconds: float = Field(default=0, ge=0, le=600)


class AcmeSettings(_Model):
    """Any ACME CA. Names under `dns.zone` are validated by DNS-01 (and the county gets one
    wildcard certificate); other names by HTTP-01, answered by every web node."""

    directory: Annotated[StrictStr, Field(max_length=300), AfterValidator(_https_url)]
    contact: Email
    # PEM bundle to trust for the ACME server's own HTTPS (a private CA such as the lab's);
    # without it the system's trust store is used.
    ca_bundle: AbsPath | None = None
    # The CA's root: a stored certificate whose chain stops verifying to it is issued again.
    issued_root: AbsPath | None = None
    challenge: Literal["http-01", "dns-01"] = "http-01"
    dns: Rfc2136 | None = None
    names_per_certificate: StrictInt = Field(default=100, ge=1, le=100)
    new_certificates_per_week: StrictInt = Field(default=50, ge=1, le=10_000)
    order_timeout_seconds: float = Field(default=180, ge=10, le=3600)

    @model_validator(mode="after")
    def _dns_needed(self) -> "AcmeSettings":
        if self.challenge == "dns-01" and self.dns is None:
            raise ValueError("challenge dns-01 needs `dns:` (the RFC 2136 server, zone and "
                             "TSIG key)")
        return self


class InternalCa(_Model):
    """The county CA govhost creates and keeps (intranet sites)."""

    name: Text = "County Government Internal CA"
    leaf_days: StrictInt = Field(default=397, ge=1, le=825)


class TlsSettings(_Model):
    """HTTPS for every site: which issuer, and when certificates are renewed."""

    issuer: IssuerName = "none"
    acme: AcmeSettings | None = None
    internal: InternalCa = InternalCa()
    renew_fraction: float = Field(default=2 / 3, gt=0.1, lt=0.95)
    # Spread renewals: each certificate renews up to this share of its lifetime early.
    renew_jitter_fraction: float = Field(default=0.05, ge=0, le=0.2)
    retry_first_seconds: StrictInt = Field(default=600, ge=1, le=86_400)
    retry_max_seconds: StrictInt = Field(default=86_400, ge=60, le=7 * 86_400)
    hsts_max_age: StrictInt = Field(default=31_536_000, ge=0, le=63_072_000)
    ocsp_stapling: StrictBool = True

    @model_validator(mode="after")
    def _acme_needed(self) -> "TlsSettings":
        if self.issuer == "acme" and self.acme is None:
            raise ValueError("issuer acme needs `acme:` (directory, contact)")
        return self


class UpdatesSettings(_Model):
    """Security updates on the nodes (unattended-upgrades), one node at a time: the first
    node's slot is `window`, each next node's `spacing_minutes` later; a node skips its slot
    while a peer is down."""

    window: Annotated[StrictStr, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "03:00"
    spacing_minutes: StrictInt = Field(default=60, ge=10, le=720)
    # More unattended-upgrades Origins-Pattern entries (a county mirror of the security
    # archive; in the lab, a local repository)
    origins: list[Annotated[StrictStr, Field(pattern=r'^[A-Za-z0-9=,._:${} /-]{1,200}$')]] = \
        Field(default_factory=list, max_length=20)


class WafSettings(_Model):
    """Nothing to set today; kept so an old `waf: {detect_days: N}` gets a clear answer."""

    @model_validator(mode="before")
    @classmethod
    def _no_detect_days(cls, value: object) -> object:
        if isinstance(value, dict) and "detect_days" in value:
            raise ValueError("`detect_days` is gone: sites now block from their launch (they "
                             "detect only while `launch: pending`); remove the line, and give "
                             "a unit that must not block yet `waf: {mode: detect, reason, "
                             "until}` in its manifest")
        return value


_WEEKDAYS = r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday)"


def _zone(value: str) -> str:
    import zoneinfo
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone (e.g. Asia/Shanghai)") from None
    return value


class OfficeHours(_Model):
    """When units are mailed: their staff read mail at work, and a mail at night is lost
    under the morning's. Platform alerts go to the county team at any time."""

    weekdays: list[Annotated[StrictStr, Field(pattern=rf"^{_WEEKDAYS}(:{_WEEKDAYS})?$")]] = \
        Field(default_factory=lambda: ["monday:friday"], min_length=1, max_length=7)
    times: list[Annotated[StrictStr, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-"
                                                   r"(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]] = \
        Field(default_factory=lambda: ["08:30-12:00", "14:00-17:30"], min_length=1, max_length=8)
    location: Annotated[StrictStr, AfterValidator(_zone)] = "Asia/Shanghai"

    @model_validator(mode="after")
    def _ranges(self) -> "OfficeHours":
        # Alertmanager's week starts on Sunday: "monday:sunday" is no range there.
        days = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
        for r in self.weekdays:
            a, _, b = r.partition(":")
            if b and days.index(a) > days.index(b):
                raise ValueError(f"weekdays {r!r}: a range runs forward from Sunday to "
                                 f"Saturday; write it as two ranges, e.g. {a}:saturday and "
                                 f"sunday:{b}")
        for t in self.times:
            a, b = t.split("-")
            if a >= b:
                raise ValueError(f"times {t!r}: the end must come after the start")
        return self


class AlertMail(_Model):
    """Alert mail through Alertmanager (`govhost monitoring render` writes its config): each
    unit's own alerts to its contact address, at office hours; the rest to the county."""

    smarthost: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$")]
    sender: Email
    require_tls: StrictBool = True
    county: list[Email] = Field(min_length=1, max_length=20)
    office_hours: OfficeHours | None = Field(default_factory=lambda: OfficeHours())
    group_wait_seconds: StrictInt = Field(default=60, ge=1, le=3600)
    group_interval_minutes: StrictInt = Field(default=60, ge=1, le=1440)
    repeat_hours: StrictInt = Field(default=24, ge=1, le=720)


class MessagesSettings(_Model):
    """Deadlines of the citizens' messages (docs/messages.md): a message is due
    `due_workdays` working days after the county day it came in; the unit is mailed
    `remind_workdays` working days before that; the county is alerted of a message still
    unanswered `alert_days` after it came in, well before the inspections' veto (more than
    three months). Working days are Monday to Friday, except the county's `holidays`, plus
    its `extra_workdays` (weekend days worked in exchange, 调休). A citizen's name and
    contact are emptied on every node `contact_retention_days` after the message came in
    (at least past the three months of the inspections' veto). A node takes at most
    `per_unit_hour` messages an hour for one unit: a flood from thousands of addresses,
    each within its own limit, fills one unit's box only so far, and the other units still
    take messages. Each message costs its sender a proof of work of `work_bits` leading zero
    bits (18: about a second in a phone's browser; each bit more doubles it): raised, a
    flood costs more; lowered, old phones wait less."""

    due_workdays: StrictInt = Field(default=5, ge=1, le=60)
    contact_retention_days: StrictInt = Field(default=365, ge=FORGET_AFTER_DAYS, le=3650)
    per_unit_hour: StrictInt = Field(default=1000, ge=10, le=100_000)
    work_bits: StrictInt = Field(default=18, ge=12, le=24)
    remind_workdays: StrictInt = Field(default=1, ge=0, le=20)
    alert_days: StrictInt = Field(default=60, ge=7, le=85)
    holidays: list[datetime.date] = Field(default_factory=list, max_length=400)
    extra_workdays: list[datetime.date] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _days_apart(self) -> "MessagesSettings":
        both = sorted(set(self.holidays) & set(self.extra_workdays))
        if both:
            raise ValueError(f"{both[0].isoformat()} is both a holiday and an extra "
                             "working day; keep it in one list")
        if self.remind_workdays >= self.due_workdays:
            raise ValueError(f"remind_workdays ({self.remind_workdays}) must be fewer than "
                             f"due_workdays ({self.due_workdays})")
        return self


class ConsoleSettings(_Model):
    """The unit web console: every node's nginx serves `<hostname>.<domain>` over HTTPS and
    proxies it to `govhost console` on the control machine at `address:port` (an address
    the nodes reach; keep the port closed to everyone else). Every node also serves
    `<preview_hostname>.<domain>`: releases before they go live, to holders of a signed
    link from the console that ends after `preview_minutes`."""

    hostname: Label = "console"
    preview_hostname: Label = "preview"
    preview_minutes: StrictInt = Field(default=60, ge=5, le=7 * 24 * 60)
    address: IpAddress = "127.0.0.1"
    port: StrictInt = Field(default=8090, ge=1, le=65535)
    max_upload_mb: StrictInt = Field(default=1024, ge=1, le=100_000)

    @property
    def listen(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address \
            else f"{self.address}:{self.port}"


def _network(value: str) -> str:
    try:
        return ipaddress.ip_network(value, strict=False).compressed
    except ValueError:
        raise ValueError(f"{value!r} is not an address or network (e.g. 10.0.5.7/32)") \
            from None


class ProxyPolicy(_Model):
    """Where units' `site: {type: proxy}` may send requests. Loopback, link-local and the
    cluster's own addresses are refused (a unit must not reach the nodes' own services
    through nginx); the operator can allow a network here, in cluster.yaml, which units do
    not write."""

    allow_upstreams: list[Annotated[StrictStr, AfterValidator(_network)]] = Field(
        default_factory=list, max_length=64)


class Cluster(_Model):
    domain: Host
    name: Text
    portal: Portal
    defaults: Defaults = Defaults()
    nginx: NginxSettings = NginxSettings()
    keep_releases: StrictInt = Field(default=5, ge=2, le=50)
    backup: BackupSettings = BackupSettings()
    compliance: Compliance = Compliance()
    tls: TlsSettings = TlsSettings()
    waf: WafSettings = WafSettings()
    updates: UpdatesSettings = UpdatesSettings()
    alerts: AlertMail | None = None
    console: ConsoleSettings | None = None
    messages: MessagesSettings = MessagesSettings()
    proxy: ProxyPolicy = ProxyPolicy()
    # The county's DNS server that takes the sites' A and AAAA records (`govhost dns push`).
    dns: Rfc2136 | None = None
    dns_ttl: StrictInt = Field(default=300, ge=30, le=86400)


class SshSettings(_Model):
    user: UserName = "root"
    port: StrictInt = Field(default=22, ge=1, le=65535)
    key: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_./~-]{1,255}$")]
    # Units' SFTP on a port of its own, open to everyone, so that the operators' port can be
    # closed to all but the management addresses. None: units share the operators' port.
    sftp_port: StrictInt | None = Field(default=None, ge=1, le=65535)

    @property
    def unit_port(self) -> int:
        return self.sftp_port or self.port


def _network(value: str) -> str:
    try:
        return ipaddress.ip_network(value, strict=True).compressed
    except ValueError:
        raise ValueError(f"{value!r} is not an address or network (CIDR, e.g. 192.0.2.0/24, "
                         "with no host bits set)") from None


Network = Annotated[StrictStr, AfterValidator(_network)]


class CheckSources(_Model):
    public: IpAddress | None = None
    management: IpAddress | None = None


class Firewall(_Model):
    """Who may reach what on the nodes (nftables, rendered per node into the config release).
    Everyone: 80, 443 and units' SFTP. `management`: operators' SSH and the metrics. The
    cluster's own nodes: the database, the backup repository and the search server."""

    management: list[Network] = Field(min_length=1, max_length=200)
    # A change that leaves the control machine unable to open a new SSH connection to the
    # node within this time is rolled back by the node itself.
    confirm_seconds: StrictInt = Field(default=60, ge=5, le=900)
    # New SSH/SFTP connections per source address and minute (and the burst allowed first).
    ssh_new_per_minute: StrictInt = Field(default=20, ge=1, le=10_000)
    ssh_burst: StrictInt = Field(default=10, ge=1, le=10_000)
    # Source addresses on the control machine that `govhost security check` knocks from, to
    # see each node's doors as the public and as the management network see them.
    check_from: CheckSources | None = None


Role = Literal["web", "backup", "db", "monitoring"]


def _ipv6(value: str) -> str:
    try:
        if "%" not in value:
            return ipaddress.IPv6Address(value).compressed
    except ValueError:
        pass
    raise ValueError(f"{value!r} is not an IPv6 address (no %scope)")


class Node(_Model):
    name: Label
    address: IpAddress
    # The node's public IPv6 address, where it has one: nginx listens there too and the
    # DNS plan gives every name an AAAA record for it.
    address6: Annotated[StrictStr, AfterValidator(_ipv6)] | None = None
    roles: list[Role] = Field(default_factory=lambda: ["web"], min_length=1)
    capacity: StrictInt = Field(default=2000, ge=1, le=100_000)
    # Where this node's own connections to its peers come from, when that is not `address`
    # (behind NAT).
    source: IpAddress | None = None
    # The node's floating addresses (hosts.yaml `floating`, with `vrrp:`): DNS publishes
    # these; keepalived keeps each on its home node while it serves, on a peer otherwise.
    floating: IpAddress | None = None
    floating6: Annotated[StrictStr, AfterValidator(_ipv6)] | None = None
    # The VRRP virtual router ID of this node's floating address (1-255, unique on the nodes'
    # network). Named per node, not counted from the list, so adding or reordering nodes
    # never renumbers an address while the nodes disagree about it mid-apply.
    vrid: StrictInt | None = Field(default=None, ge=1, le=255)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(a for a in (self.source or self.address, self.address6) if a)


MAX_VRRP_NODES = 14     # priorities 200 - 10 * place stay above 200 - 150 (a failing home)


class Vrrp(_Model):
    """Floating addresses (keepalived, VRRP version 3): one per web node, on the nodes' own
    network. Every web node must have `floating` (and `floating6` where it has `address6`)."""
    # The nodes' network: every node address and floating address must be inside it.
    subnet: Network
    subnet6: Network | None = None
    # The interface on each node that carries the nodes' network.
    interface: Label = Field(default="eth0", max_length=15)   # Linux: IFNAMSIZ - 1
    advert_seconds: StrictInt = Field(default=1, ge=1, le=10)
    # A node that comes back waits this long before taking its address back (preempt).
    preempt_delay_seconds: StrictInt = Field(default=30, ge=0, le=1000)
    # Advertisements to each peer's address instead of multicast (networks that drop it).
    unicast: StrictBool = False


class Hosts(_Model):
    ssh: SshSettings
    nodes: list[Node] = Field(min_length=1, max_length=50)
    firewall: Firewall | None = None
    vrrp: Vrrp | None = None

    @model_validator(mode="after")
    def _sftp_port(self) -> "Hosts":
        if self.firewall is not None and self.ssh.unit_port == self.ssh.port:
            raise ValueError("with a firewall, units' SFTP needs a port of its own "
                             "(ssh.sftp_port, e.g. 2222): the operators' SSH port is open "
                             "only to the management addresses")
        return self

    @model_validator(mode="after")
    def _unique(self) -> "Hosts":
        for attr in ("name", "address"):
            values = [getattr(n, attr) for n in self.nodes]
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"node {attr} listed twice: {', '.join(dup)}")
        return self

    @model_validator(mode="after")
    def _floating(self) -> "Hosts":
        """Floating addresses that cannot work are refused here, before anything is
        touched: an address in two places, a VRID clash, an address off the network or that
        is the network's own (its network or broadcast address)."""
        web = self.web_nodes
        if self.vrrp is None:
            stray = [n.name for n in self.nodes if n.floating or n.floating6 or n.vrid]
            if stray:
                raise ValueError(f"nodes {', '.join(stray)} have floating addresses or a "
                                 "vrid but hosts.yaml has no `vrrp:` section (subnet)")
            return self
        v = self.vrrp
        for n in self.nodes:
            if n.source is not None:
                raise ValueError(f"node {n.name} has `source` and hosts.yaml has `vrrp:`: "
                                 "floating addresses need every node to speak from its own "
                                 "address on the nodes' network (VRRP is let in from those)")
            if "web" not in n.roles and (n.floating or n.floating6 or n.vrid):
                raise ValueError(f"node {n.name} has a floating address or vrid but no web "
                                 "role: only web nodes hold floating addresses")
        if len(web) > MAX_VRRP_NODES:
            raise ValueError(f"{len(web)} web nodes with `vrrp:`; at most {MAX_VRRP_NODES} "
                             "(each node's priority for every address must stay above a "
                             "failing node's)")
        vrids: dict[int, str] = {}
        for n in web:
            if n.vrid is None:
                free = next(i for i in range(50, 256) if i not in
                            {m.vrid for m in web})
                raise ValueError(f"web node {n.name} has no `vrid`: with `vrrp:` every web "
                                 "node names the virtual router ID of its floating address "
                                 f"(1-255, unique on the nodes' network), e.g. vrid: {free}")
            if n.vrid in vrids:
                raise ValueError(f"nodes {vrids[n.vrid]} and {n.name} both have vrid "
                                 f"{n.vrid}: each floating address needs its own virtual "
                                 "router ID")
            vrids[n.vrid] = n.name
        net4 = ipaddress.ip_network(v.subnet)
        net6 = ipaddress.ip_network(v.subnet6) if v.subnet6 else None
        seen: dict[str, str] = {}
        for n in self.nodes:
            for what in ("address", "address6", "floating", "floating6"):
                a = getattr(n, what)
                if a is None:
                    continue
                ip = ipaddress.ip_address(a)
                if ip.compressed in seen:
                    raise ValueError(f"{ip.compressed} is both {seen[ip.compressed]} and "
                                     f"node {n.name} {what}: every address in one place")
                seen[ip.compressed] = f"node {n.name} {what}"
                net = net4 if ip.version == 4 else net6
                if n in web and net is not None and ip not in net:
                    raise ValueError(f"node {n.name} {what} {a} is outside vrrp.subnet"
                                     f"{'' if ip.version == 4 else '6'} {net}: floating "
                                     "addresses move only between nodes on one network")
                if n in web and net is not None and net.num_addresses > 2 and ip in (
                        net.network_address, net.broadcast_address) and ip.version == 4:
                    raise ValueError(f"node {n.name} {what} {a} is the "
                                     f"{'network' if ip == net.network_address else 'broadcast'}"
                                     f" address of vrrp.subnet {net}: no host can hold it")
                if n in web and net is not None and ip.version == 6 and \
                        ip == net.network_address and net.num_addresses > 1:
                    raise ValueError(f"node {n.name} {what} {a} is the subnet-router "
                                     f"anycast address of vrrp.subnet6 {net}: pick another")
                if net is None and what == "floating6":
                    raise ValueError(f"node {n.name} has floating6 but vrrp has no subnet6")
        for n in web:
            if ipaddress.ip_address(n.address).version != 4:
                raise ValueError(f"web node {n.name} address {n.address} must be IPv4 with "
                                 "`vrrp:` (VRRP speaks from it; its IPv6 goes in address6)")
            if n.floating is None:
                raise ValueError(f"web node {n.name} has no `floating` address; with `vrrp:` "
                                 "every web node needs one (DNS publishes only these)")
            if ipaddress.ip_address(n.floating).version != 4:
                raise ValueError(f"node {n.name} floating {n.floating} must be IPv4 "
                                 "(IPv6 goes in floating6)")
            if n.floating6 and not n.address6:
                raise ValueError(f"web node {n.name} has floating6 but no address6: VRRP and "
                                 "the probes need the node's own IPv6 address on the network")
            if n.address6 and not n.floating6:
                raise ValueError(f"web node {n.name} has address6 but no floating6: its "
                                 "AAAA record would have nothing to move")
        return self

    @property
    def web_nodes(self) -> list[Node]:
        return [n for n in self.nodes if "web" in n.roles]
