"""`govhost security check`: measure every door from outside and inside, ask each node for
its sshd settings and secrets, shake hands with every site, read the nodes' update state,
and judge it all (controlplane.security.findings).

Doors are knocked on from source addresses on the control machine (hosts.yaml
`firewall.check_from`): one outside the management networks (what the public sees) and one
inside. A door is `open` (connected), `refused` (let through, nothing listens) or `dropped`
(no answer: the firewall). Nothing on the nodes is changed; the report is kept as a run
in the state store (the compliance report shows the last one).
"""
from __future__ import annotations

import datetime
import json
import os
import pwd
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from controlplane.core import accounts, paths, remote
from controlplane.core import secrets as secrets_mod
from controlplane.core.county import County
from controlplane.core.inventory import Inventory
from controlplane.core.manifest import Node
from controlplane.security import findings as rules
from controlplane.security.findings import Door, Finding, Served
from controlplane.sites import apply, firewall, status, waf

KNOCK_SECONDS = 1.5


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    doors: list[Door] = field(default_factory=list)
    waf_modes: dict[str, str] = field(default_factory=dict)
    checked: dict[str, list[str]] = field(default_factory=dict)   # area -> what was looked at

    def to_dict(self) -> dict:
        return {"summary": rules.summary(self.findings),
                "findings": [f.to_dict() for f in self.findings],
                "doors": [d.__dict__ for d in self.doors],
                "waf": self.waf_modes, "checked": self.checked}


def knock(source: str | None, address: str, port: int, timeout: float = KNOCK_SECONDS) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            if source:
                s.bind((source, 0))
            s.connect((address, port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except (socket.timeout, TimeoutError):
            return "dropped"
        except OSError as exc:
            return f"error: {exc.strerror or exc}"


def _bindable(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
            return True
        except OSError:
            return False


def measure_doors(inv: Inventory, placement: dict[str, tuple[str, ...]]
                  ) -> tuple[list[Door], list[Finding]]:
    fw = inv.hosts.firewall
    sources = (fw.check_from if fw is not None and fw.check_from is not None else None)
    notes: list[Finding] = []
    knock_from = []
    for seen_as in ("public", "management"):
        addr = getattr(sources, seen_as) if sources is not None else None
        if addr is None:
            notes.append(Finding("info", "doors", seen_as, f"not measured as {seen_as}",
                                 f"set hosts.yaml firewall.check_from.{seen_as} to an address "
                                 "of this machine " + ("outside" if seen_as == "public"
                                                       else "inside") + " the management "
                                 "networks (or run the check from such a machine)"))
        elif not _bindable(addr):
            notes.append(Finding("warning", "doors", seen_as,
                                 f"{addr} is not an address of this machine",
                                 f"fix hosts.yaml firewall.check_from.{seen_as}"))
        else:
            knock_from.append((seen_as, addr))
    php = [t.name for t in inv.tenants if t.site.type == "php"]
    db_sources = firewall.db_clients(inv.hosts, placement, php)
    ports = firewall.checked_ports(inv.hosts)
    jobs = [(node, node.address, node.name, port, seen_as, addr) for node in inv.hosts.nodes
            for port in ports for seen_as, addr in knock_from]
    # Each floating address too, held by whichever node: the same doors as a web node's own
    # (judged as its home node's; public and management see every web node alike).
    jobs += [(node, node.floating, node.floating, port, seen_as, addr)
             for node in inv.hosts.web_nodes if inv.hosts.vrrp is not None and node.floating
             for port in ports for seen_as, addr in knock_from]
    # Where this machine also holds the address the nodes connect from (the lab), the doors
    # only the cluster may pass (the database, search, the backup repository) are knocked on
    # from there too, to every node but those connecting from it.
    by_source: dict[str, list[str]] = {}
    for peer in inv.hosts.nodes:
        by_source.setdefault(peer.sources[0], []).append(peer.name)
    for addr, names in by_source.items():
        if _bindable(addr):
            jobs += [(node, node.address, node.name, port, f"node {','.join(names)}", addr)
                     for node in inv.hosts.nodes
                     if node.name not in names or len(names) > 1 for port in ports]

    offsite = inv.cluster.backup.offsite
    repos = firewall.repository_nodes(inv.hosts, offsite.address if offsite else None)

    def one(job) -> Door:
        node, dest, label, port, seen_as, addr = job
        return Door(label, port, addr, seen_as,
                    firewall.allowed(inv.hosts, node, db_sources, addr, port, repos),
                    knock(addr, dest, port))

    with ThreadPoolExecutor(max_workers=32) as pool:
        measured = list(pool.map(one, jobs)) if jobs else []
    return measured, notes


def _node_facts(county: County, inv: Inventory, node: Node) -> dict:
    cmd = remote.ssh_argv(inv.hosts, node, county.known_hosts, paths.NODE_SECAUDIT_TOOL)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": "ssh timed out"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip() or f"exit {out.returncode}")[-300:]}
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unexpected answer {out.stdout[-200:]!r}"}


def _pending_security(access, node: Node) -> float | None:
    """The node agent's count of pending security updates (None: not known)."""
    metrics = status.agent_metrics(node.address, access, timeout=5)
    return (metrics or {}).get("_node", {}).get("updates_pending_security")


def _unverified(only: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that takes any certificate (trust is the probes' job; here: the
    name and the dates), or that offers only the protocol version `only`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if only is not None:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = only
    return ctx


def serve_check(host: str, node: Node, now: float) -> Served:
    """One handshake as a browser makes it (SNI, the node's address), and one each with
    TLS 1.0 and 1.1 only, which the node must refuse."""
    def handshake(ctx: ssl.SSLContext) -> bytes:
        with socket.create_connection((node.address, 443), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True) or b""

    try:
        der = handshake(_unverified())
    except (OSError, ssl.SSLError) as exc:
        return Served(host, node.name, error=str(exc)[:200])
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    covers = any(n == host or (n.startswith("*.") and host.split(".", 1)[-1] == n[2:])
                 for n in names)
    days = (cert.not_valid_after_utc.timestamp() - now) / 86400
    old = []
    for name, version in (("TLS 1.0", ssl.TLSVersion.TLSv1), ("TLS 1.1", ssl.TLSVersion.TLSv1_1)):
        try:
            handshake(_unverified(version))
            old.append(name)
        except (OSError, ssl.SSLError, ValueError):
            pass
    return Served(host, node.name, covers=covers, days_left=days, old_protocols=tuple(old))


def _testssl(host: str, node: Node, work: Path) -> list[Finding]:
    """testssl.sh's own verdicts (HIGH and CRITICAL) for one site through one node."""
    out = work / f"testssl-{host}-{node.name}.json"
    try:
        subprocess.run(["testssl", "--quiet", "--color", "0", "--fast", "--ip", node.address,
                        "--jsonfile", str(out), f"https://{host}"],
                       capture_output=True, text=True, timeout=600)
        items = json.loads(out.read_text())
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return [Finding("warning", "tls", f"{host}@{node.name}", f"testssl did not run: {exc}",
                        "install testssl.sh (scripts/setup.sh does)")]
    return [Finding("critical" if i.get("severity") == "CRITICAL" else "warning", "tls",
                    f"{host}@{node.name}", f"testssl {i.get('id')}: {i.get('finding')}",
                    "see testssl's explanation of this id; nginx.conf sets the TLS settings")
            for i in items if i.get("severity") in ("HIGH", "CRITICAL")]


def console_processes(proc: Path = Path("/proc")) -> list[dict]:
    """The `govhost console` processes on this (control) machine, with the account each runs
    as and its part: the web process (named `govhost-web` by the kernel, console/web.py) or
    the broker that keeps the keys; found by their command line, whoever started them
    (systemd, lab.sh, a shell)."""
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            status = (d / "status").read_text().splitlines()
            uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
            gid = next((int(line.split()[1]) for line in status
                        if line.startswith("Gid:")), -1)
            ppid = next((int(line.split()[1]) for line in status
                         if line.startswith("PPid:")), 0)
            name = next((line.split(None, 1)[1] for line in status
                         if line.startswith("Name:")), "")
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        # `govhost …`, or the same program as `python -m cli …` (from a checkout)
        at = next((i for i, w in enumerate(words) if os.path.basename(w) == "govhost"
                   or (w == "cli" and i and words[i - 1] == "-m")), None)
        rest = words[at + 1:] if at is not None else []
        if "console" not in rest:
            continue
        after = rest[rest.index("console") + 1:]
        if after[:1] == ["install"]:          # installing the service, not running it
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        out.append({"pid": int(d.name), "ppid": ppid, "uid": uid, "gid": gid, "user": user,
                    "part": "web" if name.strip() == paths.CONSOLE_WEB_NAME else "broker"})
    return sorted(out, key=lambda p: p["pid"])


def control_secrets(county: County, inv: Inventory) -> list[dict]:
    """The control machine's own secrets: the cluster secret, the backup key, the metrics
    and TLS keys in the state directory, and the operators' SSH key."""
    state = county.state_dir
    found = [state / secrets_mod.SECRET_FILE, state / secrets_mod.BACKUP_KEY_FILE,
             *sorted(state.rglob("*.key")), Path(os.path.expanduser(inv.hosts.ssh.key))]
    out = []
    for p in found:
        try:
            st = p.stat()
        except OSError:
            continue
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        out.append({"path": str(p), "mode": f"{st.st_mode & 0o7777:04o}", "owner": owner,
                    "want_owner": pwd.getpwuid(os.getuid()).pw_name})
    return out


def run(county: County, with_testssl: bool = False, work: Path | None = None) -> Report:
    inv = county.inv
    st = county.open_state()
    try:
        deployed = apply.deployable(county, st)
        placement = st.placements()
    finally:
        st.close()
    report = Report()
    now = time.time()
    # doors
    measured, notes = measure_doors(deployed, placement)
    report.doors = measured
    report.findings += notes + rules.doors(measured, inv.hosts.firewall is not None)
    report.checked["doors"] = [f"{d.node}:{d.port} from {d.seen_as}" for d in measured]
    # nodes: sshd, secrets, updates
    nodes = list(inv.hosts.nodes)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
        facts = dict(zip([n.name for n in nodes],
                         pool.map(lambda n: _node_facts(county, inv, n), nodes)))
        pending = dict(zip([n.name for n in nodes],
                           pool.map(lambda n: _pending_security(deployed.metrics, n), nodes)))
    for node in nodes:
        f = facts[node.name]
        if "error" in f:
            report.findings.append(Finding("critical", "ssh", node.name,
                                           f"could not ask the node: {f['error']}",
                                           "check the node with `govhost status`; a node "
                                           "without govhost-secaudit needs `govhost apply`"))
            continue
        report.findings += rules.sshd(node.name, f.get("sshd", {}), inv.hosts.ssh.port,
                                      inv.hosts.ssh.unit_port, accounts.SFTP_GROUP)
        report.findings += rules.secrets(node.name, f.get("files", []))
        report.findings += rules.upload_links(node.name, f.get("links", []))
        report.findings += rules.updates(node.name, pending[node.name],
                                         bool(f.get("reboot_required")))
        report.checked.setdefault("secrets", []).extend(
            f"{node.name}:{e['path']}" for e in f.get("files", []))
    report.findings += rules.console(console_processes())
    local = control_secrets(county, inv)
    report.findings += rules.secrets("control", local)
    report.checked.setdefault("secrets", []).extend(f"control:{e['path']}" for e in local)
    # TLS of every site through every web node
    web = [n for n in nodes if "web" in n.roles]
    hosts = sorted(deployed.https_hosts())
    jobs = [(h, n) for h in hosts for n in web]
    with ThreadPoolExecutor(max_workers=16) as pool:
        served = list(pool.map(lambda j: serve_check(j[0], j[1], now), jobs)) if jobs else []
    report.findings += rules.tls(served)
    if with_testssl and web:
        work = work or county.state_dir / "security"
        work.mkdir(parents=True, exist_ok=True)
        for h in hosts:
            report.findings += _testssl(h, web[0], work)
    report.checked["tls"] = [f"{s.host}@{s.node}" for s in served]
    # WAF per unit
    report.waf_modes = dict(deployed.waf_modes or {})
    today = datetime.date.fromtimestamp(now)
    report.findings += rules.waf(waf.not_blocking(inv.tenants, report.waf_modes), today)
    order = {s: i for i, s in enumerate(rules.SEVERITIES)}
    report.findings.sort(key=lambda f: (order[f.severity], f.area, f.where))
    _record(county, report)
    return report


def _record(county: County, report: Report) -> None:
    """Kept as a run, so the compliance report shows the last check and the audit log has it."""
    counts = rules.summary(report.findings)
    st = county.open_state()
    try:
        run_id = st.start_run("security")
        st.finish_run(run_id, "critical" if counts["critical"] else "ok", report.to_dict(),
                      audit={"kind": "security", **counts})
    finally:
        st.close()

