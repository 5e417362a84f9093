"""The web application firewall in front of every site (pure): ModSecurity v3 in nginx with
Debian's OWASP Core Rule Set, loaded once per nginx (not once per site) and switched per
unit: off, detection only (matches logged, nothing refused) or blocking (403).

A site blocks from its first public day. A unit on `auto` (the default) that takes input
(PHP, proxy) only detects while it waits for `govhost launch`: its staff's preview and test
traffic shows in its audit log what its own forms trip, before the public arrives. From the
launch on it blocks; a static unit blocks from the start. Anything else is an exception the
manifest states: `waf: {mode: detect, reason, until}` (blocking again from `until`) or
`waf: off`, and both are shown as warnings wherever the county looks (status, security
check, compliance report). Every match goes to one audit log per node (JSON lines, with the
Host), which the node's agent splits into each unit's own `waf-audit.log` and counts.
"""
from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from controlplane.core import paths
from controlplane.core.manifest import Tenant

MODULE = "/usr/share/nginx/modules/ngx_http_modsecurity_module.so"
AUDIT_LOG = f"{paths.NODE_LOGS}/waf-audit.log"
CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"
CRS_RULES = "/usr/share/modsecurity-crs/rules/*.conf"
ENGINE = {"detect": "DetectionOnly", "block": "On"}
NODE_WAF_DIR = f"{paths.NODE_CONF_ROOT}/waf"
# Files nginx sends as they are (vhost_site.conf.j2 writes this location; a unit test holds
# the two together): static and PHP sites serve them without the WAF.
ASSET_LOCATION = r"\.(?:css|js|png|jpe?g|gif|webp|ico|svg|woff2?|ttf)$"
_ASSET = re.compile(ASSET_LOCATION, re.IGNORECASE)
_PHP = re.compile(r"[^/]\.php(/|$)")          # the PHP location's, matched before the assets


def skips_waf(site_type: str, path: str) -> bool:
    """Whether a node serves `path` (no query) of a unit's site without the WAF, as
    vhost_site.conf.j2 orders its locations: PHP (path info too) and /files/ stay behind."""
    if site_type not in ("static", "php"):
        return False
    if site_type == "php" and (_PHP.search(path) or path.startswith("/files/")):
        return False
    return bool(_ASSET.search(path))


def mode_now(t: Tenant, launched: bool, today: datetime.date) -> str:
    """The mode in force for a unit: `auto` detects only before the launch of a site that
    takes input; an explicit `detect` ends (blocks) on its `until` date."""
    w = t.waf
    if w.mode == "auto":
        return "detect" if t.site.type != "static" and not launched else "block"
    if w.mode == "detect" and w.until is not None and today >= w.until:
        return "block"
    return w.mode


def modes(tenants: Iterable[Tenant], gated: Collection[str],
          today: datetime.date) -> dict[str, str]:
    """Each unit's WAF mode in force today; `gated`: the units still waiting for launch."""
    return {t.name: mode_now(t, t.name not in gated, today) for t in tenants}


def mode_of(t: Tenant, in_force: Mapping[str, str]) -> str:
    """The mode a render uses: the one worked out for this run, or (a render without the
    state, e.g. `govhost plan` in a test) the one the manifest alone gives: a pending unit
    not launched, a stated exception not yet ended."""
    if t.name in in_force:
        return in_force[t.name]
    return mode_now(t, t.launch != "pending", datetime.date.min)


@dataclass(frozen=True)
class NotBlocking:
    """A unit whose WAF does not block today, and why: shown until it ends."""
    unit: str
    mode: str                        # off | detect
    why: str                         # off | stated | before-launch
    reason: str = ""
    until: datetime.date | None = None

    def text(self, today: datetime.date) -> str:
        if self.why == "off":
            return "WAF off (`waf: off`): attacks reach the site unrefused"
        if self.why == "before-launch":
            return "WAF detecting only until `govhost launch` (blocks from the launch on)"
        assert self.until is not None
        left = (self.until - today).days
        return (f"WAF detecting only until {self.until.isoformat()} ({left} day"
                f"{'' if left == 1 else 's'} left): {self.reason}")

    def to_json(self, today: datetime.date) -> dict:
        return {"unit": self.unit, "mode": self.mode, "why": self.why, "reason": self.reason,
                "until": self.until.isoformat() if self.until else None,
                "text": self.text(today)}


def not_blocking(tenants: Iterable[Tenant], in_force: Mapping[str, str]
               ) -> list[NotBlocking]:
    """The units whose WAF does not block today (in the order given)."""
    out = []
    for t in tenants:
        mode = in_force.get(t.name, "block")
        if mode == "block":
            continue
        why = ("off" if mode == "off" else "stated" if t.waf.mode == "detect"
               else "before-launch")
        out.append(NotBlocking(t.name, mode, why, t.waf.reason or "", t.waf.until))
    return out


def after_launch(t: Tenant, today: datetime.date) -> str:
    """The mode a unit would have once launched: what `govhost launch` judges."""
    return mode_now(t, True, today)


def main_conf(audit_log: str = AUDIT_LOG) -> bytes:
    """The rules nginx loads once: ModSecurity's settings and the CRS from Debian."""
    return (
        "# Written by govhost: ModSecurity and the OWASP CRS for every site of this node.\n"
        "# Sites switch it on (detection only or blocking) in waf/<unit>.conf.\n"
        "SecRuleEngine DetectionOnly\n"
        "SecRequestBodyAccess On\n"
        "SecRequestBodyLimit 104857600\n"
        "SecRequestBodyNoFilesLimit 1048576\n"
        "SecRequestBodyLimitAction ProcessPartial\n"
        "SecResponseBodyAccess Off\n"
        "SecPcreMatchLimit 100000\n"
        "SecPcreMatchLimitRecursion 100000\n"
        "SecArgumentSeparator &\n"
        "SecCookieFormat 0\n"
        "SecTmpDir /tmp/\n"
        "SecDataDir /tmp/\n"
        "SecAuditEngine RelevantOnly\n"
        "SecAuditLogParts ABHZ\n"
        "SecAuditLogType Serial\n"
        "SecAuditLogFormat JSON\n"
        f"SecAuditLog {audit_log}\n"
        f"Include {CRS_SETUP}\n"
        f"Include {CRS_RULES}\n").encode()


def main_path(main: bytes) -> str:
    """Where the node keeps `main` for nginx: ModSecurity reads the file when nginx loads its
    configuration, by an absolute path, and the release's own directory is not yet in place
    when `nginx -t` checks it. The stage step installs it here under its digest (so a new
    version never changes the file a running nginx uses)."""
    return f"{NODE_WAF_DIR}/main-{hashlib.sha256(main).hexdigest()[:16]}.conf"


def site_conf(mode: str, exclude: Iterable[int]) -> bytes | None:
    """The lines a unit's server blocks include; None when the WAF is off for the unit."""
    if mode == "off":
        return None
    rules = [f"SecRuleEngine {ENGINE[mode]}"]
    ids = sorted(set(exclude))
    if ids:
        rules.append("SecRuleRemoveById " + " ".join(str(i) for i in ids))
    body = "\n".join(rules)
    return (f"# Written by govhost: the WAF for this unit ({mode}).\n"
            f"modsecurity on;\nmodsecurity_rules '\n{body}\n';\n").encode()
