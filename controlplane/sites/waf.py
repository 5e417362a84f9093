"""The web application firewall in front of every site (pure): ModSecurity v3 in nginx with
Debian's OWASP Core Rule Set, loaded once per nginx (not once per site) and switched per
unit: off, detection only (matches logged, nothing refused) or blocking (403).

A unit on `auto` starts in detection only, so that a site's own forms and uploads show up in
the audit log before anything is refused; after the county's `waf.detect_days` (7) it
blocks. Every match goes to one audit log per node (JSON lines, with the Host), which the
node's agent splits into each unit's own `waf-audit.log` and counts as metrics.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from controlplane.core import paths
from controlplane.core.manifest import Tenant

DAY = 86400
MODULE = "/usr/share/nginx/modules/ngx_http_modsecurity_module.so"
AUDIT_LOG = f"{paths.NODE_LOGS}/waf-audit.log"
CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"
CRS_RULES = "/usr/share/modsecurity-crs/rules/*.conf"
ENGINE = {"detect": "DetectionOnly", "block": "On"}
NODE_WAF_DIR = f"{paths.NODE_CONF_ROOT}/waf"


def modes(tenants: Iterable[Tenant], since: Mapping[str, float], now: float,
          detect_days: int) -> dict[str, str]:
    """Each unit's WAF mode in force now: `auto` is `detect` for `detect_days` after the unit
    first went live behind the WAF (`since`; a unit not live yet starts now), then `block`."""
    out = {}
    for t in tenants:
        mode = t.waf.mode
        if mode == "auto":
            started = since.get(t.name, now)
            mode = "block" if now - started >= detect_days * DAY else "detect"
        out[t.name] = mode
    return out


def mode_of(t: Tenant, in_force: Mapping[str, str]) -> str:
    """The mode a render uses: the one worked out for this run, or (a render without the
    state, e.g. `govhost plan` in a test) the first week's."""
    return in_force.get(t.name) or ("detect" if t.waf.mode == "auto" else t.waf.mode)


def main_conf() -> bytes:
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
        f"SecAuditLog {AUDIT_LOG}\n"
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
