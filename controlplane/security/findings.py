"""The rules of `govhost security check`: measured facts in, findings out (pure).

Each rule turns one kind of fact (a door knocked on, sshd's effective settings, a secret's
mode, a served certificate, a unit's WAF mode, a node's updates) into findings that say what
is wrong, where, and what to do; facts that are fine give nothing. The edge that measures
the facts is controlplane.security.check.
"""
from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from controlplane.core.paths import CONSOLE_ACCOUNT
from controlplane.sites.waf import NotBlocking

SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str        # critical: a door open that must not be; warning: fix soon; info
    area: str            # doors, ssh, secrets, tls, waf, updates, uploads, console
    where: str           # node, node:port, unit, host name or file
    what: str
    todo: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Door:
    node: str            # the node, or the floating address knocked on
    port: int
    source: str          # the address knocked from
    seen_as: str         # public, management or `node NAME` (a cluster address)
    expected: bool       # the firewall should let it through
    result: str          # open, refused (let through, nothing listens), dropped, error

    @property
    def wrong(self) -> bool:
        """Not what the firewall should do: dropped where it should let through, or let
        through (answered or refused) where it should drop."""
        return (self.result == "dropped") if self.expected else \
            self.result in ("open", "refused")


def doors(measured: Iterable[Door], firewall: bool) -> list[Finding]:
    out = []
    for d in measured:
        where = f"{d.node}:{d.port}"
        if not d.wrong:
            continue
        if d.expected:
            out.append(Finding("warning", "doors", where,
                               f"dropped for {d.seen_as} source {d.source}, which should "
                               "reach it",
                               "check hosts.yaml firewall.management and the node's "
                               "firewall state (`govhost status`), then `govhost apply`"))
        elif d.result == "open":
            todo = ("add `firewall:` to hosts.yaml and run `govhost apply`" if not firewall
                    else "the node's firewall is not in force: `govhost apply` (a reverted "
                    "change shows in `govhost status`)")
            out.append(Finding("critical", "doors", where,
                               f"open to {d.seen_as} source {d.source}; it must not be", todo))
        else:
            out.append(Finding("warning", "doors", where,
                               f"answered {d.seen_as} source {d.source} (connection refused) "
                               "instead of dropping it: no firewall rule covers it",
                               "add `firewall:` to hosts.yaml and run `govhost apply`"
                               if not firewall else "run `govhost apply` to load the rules"))
    return out


SAFE_ROOT = {"no", "prohibit-password", "without-password", "forced-commands-only"}


def sshd(node: str, contexts: Mapping[str, Mapping[str, list[str]]], ssh_port: int,
         unit_port: int, sftp_group: str = "govhost-sftp") -> list[Finding]:
    """sshd's effective settings (`sshd -T -C`) per kind of connection (`operator@22`,
    `unit@2222`) against what a node facing the internet needs: keys only everywhere, and a
    unit's account chrooted to SFTP with no forwarding."""
    if "error" in contexts:     # a node tool that could not run sshd at all
        return [Finding("warning", "ssh", node, "could not read sshd's settings: "
                        + " ".join(contexts["error"]), "check sshd with `sshd -t` on the node")]
    out = []
    listening: set[int] = set()
    for who, settings in sorted(contexts.items()):
        where = f"{node} {who}"
        if "error" in settings:
            out.append(Finding("warning", "ssh", where, "could not read sshd's settings: "
                               + " ".join(settings["error"]),
                               "check sshd with `sshd -t` on the node"))
            continue

        def one(key: str, settings: Mapping[str, list[str]] = settings) -> str:
            return (settings.get(key) or [""])[0].lower()

        listening |= {int(p) for p in settings.get("port", []) if p.isdigit()}
        for key, good in (("passwordauthentication", "no"), ("permitemptypasswords", "no"),
                          ("kbdinteractiveauthentication", "no")):
            value = one(key)
            if value and value != good:
                out.append(Finding("critical", "ssh", where, f"sshd {key} is {value}",
                                   f"set `{key} {good}`: only keys may log in (apply sets it; "
                                   "look for a drop-in in /etc/ssh/sshd_config.d that undoes "
                                   "it)"))
        if who.startswith("operator@") and one("permitrootlogin") not in SAFE_ROOT:
            out.append(Finding("critical", "ssh", where,
                               f"sshd permitrootlogin is {one('permitrootlogin') or 'unknown'}",
                               "set `PermitRootLogin prohibit-password` (keys only)"))
        if one("x11forwarding") == "yes":
            out.append(Finding("warning", "ssh", where, "sshd x11forwarding is yes",
                               "set `X11Forwarding no`"))
        tries = one("maxauthtries")
        if tries.isdigit() and int(tries) > 6:
            out.append(Finding("warning", "ssh", where, f"sshd maxauthtries is {tries}",
                               "set `MaxAuthTries 6` or fewer"))
        if who.startswith("unit@"):
            force = one("forcecommand")
            if force.startswith("internal-sftp") and not _refuses_links(force):
                out.append(Finding("critical", "ssh", where,
                                   "a unit's SFTP account may make links in its upload area",
                                   "run `govhost apply` (`internal-sftp -P symlink,hardlink`)"))
            if not force.startswith("internal-sftp") or \
                    one("chrootdirectory") in ("", "none"):
                out.append(Finding("critical", "ssh", where,
                                   "a unit's account is not confined to chrooted SFTP",
                                   "run `govhost apply` (it writes the units' Match block in "
                                   "/etc/ssh/sshd_config.d)"))
            if one("allowtcpforwarding") not in ("no", ""):
                out.append(Finding("critical", "ssh", where,
                                   "a unit's account may forward TCP connections",
                                   "run `govhost apply` (`AllowTcpForwarding no` for units)"))
    if unit_port != ssh_port:
        # Units' SFTP on its own port: units are kept off the operators' port and operators
        # off the units' (so the public port never takes an operator's key guesses).
        unit_on_ssh = contexts.get(f"unit@{ssh_port}")
        if unit_on_ssh and sftp_group not in " ".join(unit_on_ssh.get("denygroups", [])):
            out.append(Finding("warning", "ssh", f"{node} unit@{ssh_port}",
                               "units' accounts may log in on the operators' SSH port",
                               "run `govhost apply` (DenyGroups on the operators' port)"))
        op_on_sftp = contexts.get(f"operator@{unit_port}")
        if op_on_sftp and sftp_group not in " ".join(op_on_sftp.get("allowgroups", [])):
            out.append(Finding("warning", "ssh", f"{node} operator@{unit_port}",
                               "operators may log in on the units' public SFTP port",
                               "run `govhost apply` (AllowGroups on the units' port)"))
    missing = sorted({ssh_port, unit_port} - listening)
    if missing and contexts:
        out.append(Finding("warning", "ssh", node,
                           f"sshd does not listen on port(s) {', '.join(map(str, missing))}",
                           "run `govhost apply` (it writes the port settings for operators' "
                           "SSH and units' SFTP)"))
    return out


def _refuses_links(force_command: str) -> bool:
    """Whether `internal-sftp …` denies the symlink and hardlink requests (-P list)."""
    words = force_command.split()
    denied: set[str] = set()
    for i, w in enumerate(words):
        if w == "-p" and i + 1 < len(words):          # sshd -T prints the value lowercased
            denied |= set(words[i + 1].split(","))
        elif w.startswith("-p") and len(w) > 2:
            denied |= set(w[2:].split(","))
    return {"symlink", "hardlink"} <= denied


def upload_links(node: str, links: Iterable[Mapping[str, str]]) -> list[Finding]:
    """Links found in units' upload areas: a path a unit shaped, which root must not follow.
    The console's upload refuses to go through them; an operator removes them."""
    return [Finding("critical", "uploads", f"{node} {e['unit']}:{e['path']}",
                    f"a {e['kind']} in {e['unit']}'s upload area"
                    + (f" pointing to {e['target']}" if e.get("target") else ""),
                    f"remove it (`rm /srv/govhost/sites/{e['unit']}/upload/{e['path']}` on "
                    f"{node}) and ask the unit how it got there; its SFTP account cannot make "
                    "links")
            for e in links]


def console(processes: Iterable[Mapping[str, object]]) -> list[Finding]:
    """The console faces the internet with a login form: its web process must run as its own
    account without the cluster's keys (console/web.py), beside a broker that keeps them. A
    web process as root, or a `govhost console` as root with no web process of its own (a
    version before the split), means any bug in a web handler is root on the control
    machine, with the cluster's keys."""
    procs = list(processes)
    out = []
    for p in procs:
        if p.get("part") == "web":
            broker = next((q for q in procs if q["pid"] == p.get("ppid")), None)
            if p.get("uid") == 0 or p.get("gid") == 0 or (
                    broker is not None and broker.get("uid") == p.get("uid")):
                out.append(Finding("critical", "console", f"control pid {p['pid']}",
                                   "the console's web process runs as root or as its broker",
                                   "start it with `govhost console` as root: it runs the web "
                                   "process as the govhost-console account"))
            elif p.get("user") not in (None, CONSOLE_ACCOUNT):
                out.append(Finding("warning", "console", f"control pid {p['pid']}",
                                   f"the console's web process runs as {p.get('user')}, not "
                                   f"{CONSOLE_ACCOUNT}",
                                   "an account of its own, shared with no other service: "
                                   "`govhost console --account` names it"))
        elif not any(q.get("part") == "web" and q.get("ppid") == p["pid"] for q in procs):
            out.append(Finding("critical", "console", f"control pid {p['pid']}",
                               "govhost console runs as root" if p.get("uid") == 0 else
                               "govhost console runs without a web process of its own",
                               "a console that serves the web itself holds the cluster's keys "
                               "(or the state) in the process facing the internet: update "
                               "govhost and restart the console as root (it splits in two)"))
    return out


def secrets(where: str, entries: Iterable[Mapping[str, str]]) -> list[Finding]:
    """Secrets readable by anyone but their owner, or owned by someone else."""
    out = []
    for e in entries:
        mode = int(e["mode"], 8)
        if mode & 0o077:
            out.append(Finding("critical", "secrets", f"{where}:{e['path']}",
                               f"mode {e['mode']}: readable by others than its owner",
                               f"chmod 600 {e['path']} (and find out who could read it)"))
        if e.get("want_owner") and e["owner"] != e["want_owner"]:
            out.append(Finding("warning", "secrets", f"{where}:{e['path']}",
                               f"owned by {e['owner']}, not {e['want_owner']}",
                               f"chown {e['want_owner']} {e['path']}"))
    return out


@dataclass(frozen=True)
class Served:
    host: str
    node: str            # the node, or the floating address knocked on
    error: str = ""              # the handshake failed
    covers: bool = True          # the certificate names the host
    days_left: float | None = None
    old_protocols: tuple[str, ...] = ()   # TLS 1.0/1.1 handshakes the node accepted


def tls(served: Iterable[Served], warn_days: int = 14) -> list[Finding]:
    out = []
    for s in served:
        where = f"{s.host}@{s.node}"
        if s.error:
            out.append(Finding("critical", "tls", where, f"no TLS handshake: {s.error}",
                               "`govhost tls status` and `govhost apply`"))
            continue
        if not s.covers:
            out.append(Finding("critical", "tls", where, "the certificate served does not "
                               "name the site", "`govhost tls issue` for the unit, then apply"))
        if s.days_left is not None and s.days_left < 0:
            out.append(Finding("critical", "tls", where, "the certificate served has expired",
                               "`govhost tls renew`, then apply"))
        elif s.days_left is not None and s.days_left < warn_days:
            out.append(Finding("warning", "tls", where,
                               f"the certificate expires in {s.days_left:.0f} days",
                               "`govhost tls renew` (renewal runs 30 days ahead: check why "
                               "it did not)"))
        if s.old_protocols:
            out.append(Finding("critical", "tls", where,
                               f"accepts {', '.join(s.old_protocols)}",
                               "only TLS 1.2 and 1.3: run `govhost apply` (nginx.conf sets "
                               "ssl_protocols)"))
    return out


def waf(not_blocking: Sequence[NotBlocking], today: datetime.date) -> list[Finding]:
    """A unit whose WAF does not block is told so: off or a stated exception is a warning
    (until its end date); units waiting for launch are one note, not one per unit."""
    out = []
    waiting = [n.unit for n in not_blocking if n.why == "before-launch"]
    for n in not_blocking:
        if n.why == "off":
            out.append(Finding("warning", "waf", n.unit, n.text(today),
                               "remove `waf: off` from the unit's manifest; exclude the rule "
                               "that breaks the site instead (`govhost waf replay` finds it; "
                               "`waf: {mode: block, exclude_rules: [ID]}`)"))
        elif n.why == "stated":
            out.append(Finding("warning", "waf", n.unit, n.text(today),
                               "exclude the rules its forms trip (`govhost waf replay`) and "
                               "set `waf: block` before the end date"))
    if waiting:
        out.append(Finding("info", "waf", ", ".join(waiting),
                           f"WAF detecting only until launch ({len(waiting)} unit"
                           f"{'s' if len(waiting) > 1 else ''})",
                           "read the units' WAF logs (preview and test traffic) for false "
                           "alarms and exclude their rules before `govhost launch`"))
    return out


def updates(node: str, pending_security: float | None, reboot_required: bool
            ) -> list[Finding]:
    out = []
    if pending_security is None:
        out.append(Finding("info", "updates", node, "pending updates not known yet",
                           "the node's agent checks in the background; ask again later"))
    elif pending_security > 0:
        out.append(Finding("warning", "updates", node,
                           f"{pending_security:.0f} security update(s) pending",
                           "they install in the node's window; now: `govhost node upgrade "
                           f"{node}`"))
    if reboot_required:
        out.append(Finding("warning", "updates", node, "an update asks for a reboot",
                           f"`govhost node reboot {node}` (drains, reboots, waits, undrains)"))
    return out


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        counts[f.severity] += 1
    return counts
