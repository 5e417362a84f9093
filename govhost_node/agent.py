"""govhost-agent: what only a node can see, as Prometheus metrics on <node address>:9273.

Read-only and small (standard library only, so a fresh node needs nothing extra):
  - per tenant, from its nginx access log: requests by status class and response bytes.
    Only requests that entered the cluster on this node are counted; a request another node
    forwarded here (it carries the X-Govhost-Hop header, logged as the last field) was
    already counted where it entered. govhost's own probes are not traffic either.
  - per tenant: disk used by its content tree (refreshed in the background, not per scrape);
  - per tenant: CPU seconds and resident memory of the processes running as its accounts
    (`gh-<tenant>` and its sections' `gh-<tenant>.<section>`: PHP-FPM workers, SFTP sessions),
    read from /proc at each scrape. CPU of a process that ended is kept in the counter up to
    what the last scrape saw of it;
  - the node: live release, load, memory, disk of the filesystems govhost writes to;
  - per tenant this node backs up: when its last backup succeeded, whether the last failed.
Log files are read incrementally from where the last scrape stopped; a rotated or truncated
log is read again from its start. Counters start at zero when the agent starts, as counters do.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import pwd
import re
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from govhost_node import vrrp
from govhost_node.layout import NODE

LOGS = f"{NODE.logs}/tenants"
SITES = NODE.sites
CURRENT = NODE.current
# "$request" $status $body_bytes_sent ... $host $http_x_govhost_hop (the log format govhost renders)
LINE = re.compile(rb'" (\d)\d\d (\d+|-) .* (\S+)$')
DU_EVERY = 60.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LogCounters:
    """Per tenant: requests by status class and bytes, read incrementally from access.log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pos: dict[str, tuple[int, int]] = {}      # tenant -> (inode, offset)
        self.requests: dict[tuple[str, str], int] = {}
        self.bytes: dict[str, int] = {}

    def refresh(self) -> None:
        with self.lock:
            try:
                tenants = os.listdir(LOGS)
            except OSError:
                return
            for t in tenants:
                self._read(t, os.path.join(LOGS, t, "access.log"))

    def _read(self, tenant: str, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        inode, offset = self.pos.get(tenant, (st.st_ino, 0))
        if inode != st.st_ino or st.st_size < offset:
            offset = 0                       # rotated or truncated: a new file
        self.bytes.setdefault(tenant, 0)
        if st.st_size == offset:
            self.pos[tenant] = (st.st_ino, offset)
            return
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1          # a half-written last line waits for next time
        for line in data[:end].splitlines():
            m = LINE.search(line)
            if not m or m.group(3) != b"-" or b'"govhost-probe"' in line:
                continue                     # forwarded by another node, or our own probe
            key = (tenant, m.group(1).decode() + "xx")
            self.requests[key] = self.requests.get(key, 0) + 1
            if m.group(2) != b"-":
                self.bytes[tenant] += int(m.group(2))
        self.pos[tenant] = (st.st_ino, offset + end)


WAF_AUDIT = f"{NODE.logs}/waf-audit.log"
WAF_HOSTS = f"{NODE.current}/waf/hosts.json"


class WafLog:
    """The WAF's audit log (one per node, JSON lines): each entry counted for its unit
    (blocked: refused with 403; detected: matched in detection-only mode) and copied to the
    unit's own `waf-audit.log`, read incrementally."""

    def __init__(self, audit: str = WAF_AUDIT, hosts: str = WAF_HOSTS, logs: str = "") -> None:
        self.audit, self.hosts_file, self.logs = audit, hosts, logs or LOGS
        self.lock = threading.Lock()
        self.pos = (0, 0)
        self.hosts: dict[str, str] = {}
        self.hosts_key: tuple[int, float] | None = None
        self.counts: dict[tuple[str, str], int] = {}

    def _load_hosts(self) -> None:
        try:
            st = os.stat(self.hosts_file)   # release files all have one mtime: the inode
            if (st.st_ino, st.st_mtime) != self.hosts_key:
                with open(self.hosts_file, encoding="utf-8") as f:
                    self.hosts = json.load(f)
                self.hosts_key = (st.st_ino, st.st_mtime)
        except (OSError, ValueError):
            pass

    def refresh(self) -> None:
        with self.lock:
            self._load_hosts()
            try:
                st = os.stat(self.audit)
            except OSError:
                return
            inode, offset = self.pos
            if inode != st.st_ino or st.st_size < offset:
                offset = 0
            if st.st_size == offset:
                self.pos = (st.st_ino, offset)
                return
            with open(self.audit, "rb") as f:
                f.seek(offset)
                data = f.read(64 << 20)
            end = data.rfind(b"\n") + 1
            per_unit: dict[str, list[bytes]] = {}
            for line in data[:end].splitlines():
                tenant, action = self._entry(line)
                if tenant is None:
                    continue
                self.counts[(tenant, action)] = self.counts.get((tenant, action), 0) + 1
                per_unit.setdefault(tenant, []).append(line + b"\n")
            for tenant, lines in per_unit.items():
                d = os.path.join(self.logs, tenant)
                if os.path.isdir(d):
                    with open(os.path.join(d, "waf-audit.log"), "ab") as out:
                        out.writelines(lines)
            self.pos = (st.st_ino, offset + end)

    def _entry(self, line: bytes) -> tuple[str | None, str]:
        try:
            tx = json.loads(line)["transaction"]
            headers = {k.lower(): v for k, v in tx["request"].get("headers", {}).items()}
            host = str(headers.get("host", "")).lower().rsplit(":", 1)[0] \
                if not str(headers.get("host", "")).startswith("[") else ""
            code = int(tx.get("response", {}).get("http_code", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, ""
        tenant = self.hosts.get(host)
        if tenant is None or not tx.get("messages"):
            return None, ""
        return tenant, "blocked" if code == 403 else "detected"

    def lines(self) -> list[str]:
        out = ["# HELP govhost_waf_requests_total Requests the WAF matched, by unit: blocked "
               "(refused, 403) or detected (detection-only mode).",
               "# TYPE govhost_waf_requests_total counter"]
        with self.lock:
            for (tenant, action), n in sorted(self.counts.items()):
                out.append(f'govhost_waf_requests_total{{tenant="{_escape(tenant)}",'
                           f'action="{action}"}} {n}')
        return out


FIREWALL_STATE = f"{NODE.state}/firewall"
REBOOT_REQUIRED = "/run/reboot-required"


class Updates(threading.Thread):
    """Packages apt would upgrade, and how many of them come from a security archive,
    simulated every half hour in the background (apt reads its lists, it changes nothing)."""

    def __init__(self, every: float = 1800) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.pending: int | None = None
        self.security: int | None = None

    def run(self) -> None:
        while True:
            self.pending, self.security = self.simulate()
            time.sleep(self.every)

    @staticmethod
    def simulate() -> tuple[int | None, int | None]:
        try:
            out = subprocess.run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "-q",
                                  "dist-upgrade"], capture_output=True, text=True,
                                 timeout=300).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None, None
        return count_upgrades(out)


def count_upgrades(simulated: str) -> tuple[int, int]:
    """(all, security) from `apt-get -s dist-upgrade`: lines `Inst pkg [old] (new ARCHIVE
    [arch])`, the archive naming its suite (…-security for Debian's security archive)."""
    inst = [line for line in simulated.splitlines() if line.startswith("Inst ")]
    return len(inst), sum(1 for line in inst if "-security" in line.lower()
                          or "security:" in line.lower())


def security_metrics(updates: Updates) -> list[str]:
    out = ["# HELP govhost_node_reboot_required 1 when an update asks for a reboot "
           "(`govhost node reboot NAME`).", "# TYPE govhost_node_reboot_required gauge",
           f"govhost_node_reboot_required {1 if os.path.exists(REBOOT_REQUIRED) else 0}"]
    if updates.pending is not None:
        out += ["# HELP govhost_node_updates_pending Packages apt would upgrade, by kind.",
                "# TYPE govhost_node_updates_pending gauge",
                f'govhost_node_updates_pending{{kind="all"}} {updates.pending}',
                f'govhost_node_updates_pending{{kind="security"}} {updates.security}']
    state = "off"
    for name, value in (("reverted", "reverted"), ("pending.nft", "pending"),
                        ("confirmed.nft", "ok")):
        if os.path.exists(os.path.join(FIREWALL_STATE, name)):
            state = value
            break
    out += ["# HELP govhost_firewall_state The node's firewall: 1 for its state (ok, pending "
            "confirmation, reverted: the last change was taken back, off).",
            "# TYPE govhost_firewall_state gauge"]
    out += [f'govhost_firewall_state{{state="{s}"}} {1 if s == state else 0}'
            for s in ("ok", "pending", "reverted", "off")]
    dropped = firewall_dropped()
    if dropped is not None:
        out += ["# HELP govhost_firewall_dropped_packets_total Packets to this node's address "
                "the firewall dropped (not meant to be reachable, or over the SFTP meter).",
                "# TYPE govhost_firewall_dropped_packets_total counter"]
        out += [f'govhost_firewall_dropped_packets_total{{reason="{r}"}} {n}'
                for r, n in sorted(dropped.items())]
    return out


def firewall_dropped() -> dict[str, int] | None:
    table = None
    try:
        with open(os.path.join(FIREWALL_STATE, "confirmed.nft"), encoding="utf-8") as f:
            m = re.search(r"^table inet (govhost_[a-z0-9_]+) \{$", f.read(), re.M)
            table = m.group(1) if m else None
    except OSError:
        return None
    if table is None:
        return None
    try:
        out = subprocess.run(["nft", "-j", "list", "counters", "table", "inet", table],
                             capture_output=True, text=True, timeout=10).stdout
        items = json.loads(out).get("nftables", [])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    names = {"dropped": "not_allowed", "metered": "sftp_meter"}
    return {names[c["name"]]: int(c["packets"]) for c in
            (i.get("counter") for i in items) if c and c.get("name") in names}


class DiskUsage(threading.Thread):
    """Bytes used per tenant content tree, walked in the background every minute."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.used: dict[str, int] = {}

    def run(self) -> None:
        while True:
            self.used = self.measure()
            time.sleep(DU_EVERY)

    @staticmethod
    def measure() -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            tenants = os.listdir(SITES)
        except OSError:
            return out
        for t in tenants:
            out[t] = DiskUsage._tree(os.path.join(SITES, t))
        return out

    @staticmethod
    def _tree(top: str) -> int:
        """Bytes of the files under `top`, each inode once (hard-linked releases share most
        of theirs). The directory listing gives each entry's inode and kind, so only a file
        not seen yet is stat'ed: a unit's kept releases cost a listing, not a stat a file
        (0.93 s of CPU a minute at 300 units of 200 files in 5 releases before)."""
        total, seen = 0, set()
        stack = [top]
        while stack:
            try:
                it = os.scandir(stack.pop())
            except OSError:
                continue
            with it:
                for e in it:
                    try:
                        is_dir = e.is_dir()
                    except OSError:             # a link nothing can follow: counted, as os.walk
                        is_dir = False
                    try:
                        if is_dir:              # a link to a directory: neither walked nor counted
                            if not e.is_symlink():
                                stack.append(e.path)
                            continue
                        ino = e.inode()
                        if ino in seen:
                            continue
                        seen.add(ino)
                        total += e.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        return total


class TenantProcesses:
    """CPU seconds (a counter over the processes' lives) and memory per tenant, by uid."""

    # The account database the owners are read from: kept while this file is unchanged.
    PASSWD = "/etc/passwd"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.owner: dict[int, str | None] | None = None   # uid -> tenant (None: not one)
        self.passwd: tuple[int, int, int] | None = None
        self.last: dict[int, tuple[str, int]] = {}    # pid -> (tenant, cpu ticks last seen)
        self.cpu: dict[str, int] = {}                 # tenant -> ticks, accumulated
        self.rss: dict[str, int] = {}
        self.procs: dict[str, int] = {}

    def tenant_of(self, uid: int) -> str | None:
        """The tenant whose account `uid` is. Every account is read in one pass, again
        only when the account file changed (applies add and remove accounts): a getpwuid
        a uid at every scrape read the whole file once for each uid that ran a process,
        3,333 unit accounts on a node with 3,333 PHP sites busy."""
        if self.owner is None:
            owner: dict[int, str | None] = {}
            for p in pwd.getpwall():
                owner.setdefault(p.pw_uid, p.pw_name[3:].split(".")[0]
                                 if p.pw_name.startswith("gh-") else None)
            self.owner = owner
        return self.owner.get(uid)

    def _accounts_changed(self) -> None:
        try:
            st = os.stat(self.PASSWD)
            key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is None or key != self.passwd:
            self.owner, self.passwd = None, key

    def refresh(self) -> None:
        with self.lock:
            self._accounts_changed()
            seen: dict[int, tuple[str, int]] = {}
            rss: dict[str, int] = {}
            procs: dict[str, int] = {}
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    tenant = self.tenant_of(entry.stat().st_uid)
                    if tenant is None:
                        continue
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except (OSError, IndexError):
                    continue                            # ended while we looked
                pid = int(entry.name)
                ticks = int(fields[11]) + int(fields[12])        # utime + stime
                before = self.last.get(pid)
                grown = ticks - before[1] if before and before[0] == tenant else ticks
                self.cpu[tenant] = self.cpu.get(tenant, 0) + max(grown, 0)
                seen[pid] = (tenant, ticks)
                rss[tenant] = rss.get(tenant, 0) + int(fields[21]) * self.page
                procs[tenant] = procs.get(tenant, 0) + 1
            try:                        # every tenant held here has a series, 0 when idle
                for t in os.listdir(SITES):
                    self.cpu.setdefault(t, 0)
            except OSError:
                pass
            self.last, self.rss, self.procs = seen, rss, procs

    def lines(self) -> list[str]:
        with self.lock:
            out = ["# HELP govhost_tenant_cpu_seconds_total CPU time used by the tenant's "
                   "processes on this node.", "# TYPE govhost_tenant_cpu_seconds_total counter"]
            out += [f'govhost_tenant_cpu_seconds_total{{tenant="{t}"}} {n / self.tick:.2f}'
                    for t, n in sorted(self.cpu.items())]
            out += ["# HELP govhost_tenant_memory_bytes Resident memory of the tenant's "
                    "processes on this node.", "# TYPE govhost_tenant_memory_bytes gauge"]
            out += [f'govhost_tenant_memory_bytes{{tenant="{t}"}} {self.rss.get(t, 0)}'
                    for t in sorted(self.cpu)]
            out += ["# HELP govhost_tenant_processes Processes running as the tenant's "
                    "accounts on this node.", "# TYPE govhost_tenant_processes gauge"]
            out += [f'govhost_tenant_processes{{tenant="{t}"}} {self.procs.get(t, 0)}'
                    for t in sorted(self.cpu)]
            return out


def node_metrics() -> list[str]:
    lines = []
    try:
        release = os.path.basename(os.readlink(CURRENT))
    except OSError:
        release = "none"
    lines += ["# HELP govhost_node_release_info The config release this node serves.",
              "# TYPE govhost_node_release_info gauge",
              f'govhost_node_release_info{{release="{_escape(release)}"}} 1']
    with open("/proc/loadavg") as f:
        load1 = float(f.read().split()[0])
    lines += ["# HELP govhost_node_load1 One-minute load average.",
              "# TYPE govhost_node_load1 gauge", f"govhost_node_load1 {load1}"]
    mem = {}
    with open("/proc/meminfo") as f:
        for row in f:
            k, v = row.split(":", 1)
            mem[k] = int(v.split()[0]) * 1024
    used = 1 - mem.get("MemAvailable", 0) / max(mem.get("MemTotal", 1), 1)
    lines += ["# HELP govhost_node_memory_used_ratio Memory in use (1 - available/total).",
              "# TYPE govhost_node_memory_used_ratio gauge",
              f"govhost_node_memory_used_ratio {used:.6f}"]
    lines += ["# HELP govhost_node_filesystem_used_ratio Space used on a filesystem govhost "
              "writes to.", "# TYPE govhost_node_filesystem_used_ratio gauge"]
    for mount in ("/", NODE.srv, NODE.logs):
        try:
            st = os.statvfs(mount)
        except OSError:
            continue
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        ratio = 1 - free / total if total else 0
        lines.append(f'govhost_node_filesystem_used_ratio{{path="{mount}"}} {ratio:.6f}')
    return lines


BACKUP_STATUS = f"{NODE.state}/backup/status.json"


def backup_metrics() -> list[str]:
    """The last successful backup of each tenant this node backs up (from the status file
    govhost-backup keeps, timer runs included). Never backed up: 0, so the alert fires."""
    import json
    try:
        with open(os.path.join(CURRENT, "backup.json"), encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return []
    try:
        with open(BACKUP_STATUS, encoding="utf-8") as f:
            status = json.load(f)
    except (OSError, ValueError):
        status = {}
    out = ["# HELP govhost_tenant_last_backup_timestamp_seconds When the tenant's last "
           "successful backup finished (0: never).",
           "# TYPE govhost_tenant_last_backup_timestamp_seconds gauge"]
    failing = ["# HELP govhost_tenant_backup_failing 1 if the tenant's last backup attempt "
               "failed.", "# TYPE govhost_tenant_backup_failing gauge"]
    for kind, key in (("files", "files"), ("db", "databases")):
        for e in spec.get(key, []):
            t = e["tenant"]
            got = status.get(t, {}).get(kind, {})
            labels = f'tenant="{_escape(t)}",kind="{kind}"'
            out.append(f"govhost_tenant_last_backup_timestamp_seconds{{{labels}}} "
                       f"{float(got.get('last_success') or 0):.3f}")
            failing.append(f"govhost_tenant_backup_failing{{{labels}}} "
                           f"{1 if got.get('last_error') else 0}")
    return out + failing


TAMPER_STATE = f"{NODE.state}/tamper/state.json"


def tamper_metrics(now: float | None = None) -> list[str]:
    """From the tamper watcher's state file: incidents per unit (`_config`: the node's config
    release), files it could not put back, and whether it is alive (its heartbeat)."""
    import json
    try:
        with open(TAMPER_STATE, encoding="utf-8") as f:
            s = json.load(f)
    except (OSError, ValueError):
        s = {}
    now = time.time() if now is None else now
    up = 1 if s.get("heartbeat") and now - float(s["heartbeat"]) < 60 else 0
    out = ["# HELP govhost_tamper_watcher_up 1 if the tamper watcher reported in the last "
           "minute.", "# TYPE govhost_tamper_watcher_up gauge", f"govhost_tamper_watcher_up {up}",
           "# HELP govhost_tamper_last_full_check_timestamp_seconds When the watcher last "
           "checked every live file.", "# TYPE govhost_tamper_last_full_check_timestamp_seconds "
           "gauge", f"govhost_tamper_last_full_check_timestamp_seconds "
           f"{float(s.get('last_full_check') or 0):.3f}",
           "# HELP govhost_tamper_incidents_total Live files found changed, added or removed "
           "behind govhost's back.", "# TYPE govhost_tamper_incidents_total counter"]
    for t, n in sorted(s.get("incidents", {}).items()):
        out.append(f'govhost_tamper_incidents_total{{tenant="{_escape(t)}"}} {int(n)}')
    out += ["# HELP govhost_tamper_unrepaired_files Live files changed that could not be put "
            "back.", "# TYPE govhost_tamper_unrepaired_files gauge"]
    for t in sorted(set(s.get("watching", {})) | set(s.get("unrepaired", {}))):
        out.append(f'govhost_tamper_unrepaired_files{{tenant="{_escape(t)}"}} '
                   f'{len(s.get("unrepaired", {}).get(t, {}))}')
    return out


def keepalived_running(pidfiles: tuple[str, ...] = vrrp.PIDFILES) -> bool:
    """Read from the pid files and /proc (the agent runs without systemd's help too)."""
    for path in pidfiles:
        try:
            with open(path) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "keepalived":
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def floating_metrics(spec_path: str = f"{CURRENT}/vrrp.json",
                     released_marker: str = vrrp.released_marker(NODE),
                     pidfiles: tuple[str, ...] = vrrp.PIDFILES) -> list[str]:
    """Which floating addresses this node holds now, read from the kernel (not from
    keepalived's idea of its state): what the county's router sees. The alerts add the
    nodes up: held by none, by two (split brain), away from home too long."""
    try:
        with open(spec_path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return []
    try:
        have = vrrp.kernel_addresses(spec["interface"])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return []
    lines = ["# HELP govhost_floating_held 1 when this node holds the floating address now.",
             "# TYPE govhost_floating_held gauge"]
    away = ["# HELP govhost_floating_away 1 when this node holds a floating address whose "
            "home is another node.", "# TYPE govhost_floating_away gauge"]
    for inst in spec.get("addresses", []):
        for key in ("address", "address6"):
            addr = inst.get(key)
            if not addr:
                continue
            held = 1 if addr in have else 0
            labels = f'address="{_escape(addr)}",home="{_escape(inst["home"])}"'
            lines.append(f"govhost_floating_held{{{labels}}} {held}")
            away.append(f"govhost_floating_away{{{labels}}} "
                        f"{1 if held and inst['home'] != spec.get('node') else 0}")
    by_hand = os.path.exists(released_marker)
    released = 1 if by_hand or spec.get("released") else 0
    return lines + away + [
        "# HELP govhost_floating_released 1 while this node keeps out of VRRP (drained, "
        "rebooting, being removed).", "# TYPE govhost_floating_released gauge",
        f"govhost_floating_released {released}",
        "# HELP govhost_floating_released_by_hand 1 while this node keeps out of VRRP by "
        "hand (`govhost-node vrrp release`: an upgrade, or one cut short).",
        "# TYPE govhost_floating_released_by_hand gauge",
        f"govhost_floating_released_by_hand {int(by_hand)}",
        "# HELP govhost_vrrp_running 1 when keepalived runs on this node.",
        "# TYPE govhost_vrrp_running gauge",
        f"govhost_vrrp_running {int(keepalived_running(pidfiles))}"]


class Agent:
    def __init__(self) -> None:
        self.logs = LogCounters()
        self.disk = DiskUsage()
        self.disk.start()
        self.procs = TenantProcesses()
        self.waf = WafLog()
        self.updates = Updates()
        self.updates.start()

    def render(self) -> str:
        t0 = time.monotonic()
        self.logs.refresh()
        self.waf.refresh()
        self.procs.refresh()
        out = node_metrics()
        with self.logs.lock:
            out += ["# HELP govhost_tenant_requests_total Requests that entered the cluster on "
                    "this node, by status class.", "# TYPE govhost_tenant_requests_total counter"]
            for (tenant, cls), n in sorted(self.logs.requests.items()):
                out.append(f'govhost_tenant_requests_total{{tenant="{tenant}",code="{cls}"}} {n}')
            out += ["# HELP govhost_tenant_response_bytes_total Response body bytes sent.",
                    "# TYPE govhost_tenant_response_bytes_total counter"]
            for tenant, n in sorted(self.logs.bytes.items()):
                out.append(f'govhost_tenant_response_bytes_total{{tenant="{tenant}"}} {n}')
        out += ["# HELP govhost_tenant_disk_bytes Disk used by the tenant's content tree.",
                "# TYPE govhost_tenant_disk_bytes gauge"]
        for tenant, n in sorted(self.disk.used.items()):
            out.append(f'govhost_tenant_disk_bytes{{tenant="{tenant}"}} {n}')
        out += self.procs.lines()
        out += self.waf.lines()
        out += security_metrics(self.updates)
        out += backup_metrics()
        out += tamper_metrics()
        out += floating_metrics()
        out += ["# HELP govhost_agent_scrape_seconds Time this scrape took on the node.",
                "# TYPE govhost_agent_scrape_seconds gauge",
                f"govhost_agent_scrape_seconds {time.monotonic() - t0:.6f}"]
        return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="address:port, e.g. 10.77.0.11:9273")
    ap.add_argument("--web-config", default="",
                    help="JSON with cert_file, key_file and authorization_sha256: serve TLS "
                         "and require basic auth (absent file: plain HTTP)")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    agent = Agent()
    web = web_config(args.web_config)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if web and not authorized(self.headers.get("Authorization", ""),
                                      web["authorization_sha256"]):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="govhost-agent"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = agent.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    if web:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(web["cert_file"], web["key_file"])
        # the handshake happens in the connection's thread, not in the accept loop
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    server.serve_forever()


def web_config(path: str) -> dict | None:
    """The agent's TLS and basic-auth settings, if the node has been given them."""
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def authorized(header: str, want_sha256: str) -> bool:
    got = hashlib.sha256(header.encode("utf-8", "replace")).hexdigest()
    return hmac.compare_digest(got, want_sha256)


if __name__ == "__main__":
    main()
