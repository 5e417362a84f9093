"""The lab's network: every node in its own network namespace on a bridge, as on a real LAN.

    control machine (the host) ── govlab-host ──┐
        10.77.8.1, fd00:78::1                    │ 10.77.8.2
                                           ┌─────┴──────┐
    "the internet" (govhost-outside) ──────┤   router   ├── bridge govlab0 ── n1, n2, n3, …
        10.77.9.2, fd00:79::2   10.77.9.1  │ (namespace)│   10.77.0.1      10.77.0.1N
                                           └────────────┘   fd00:77::1     fd00:77::1N

The router is a namespace of its own, so the host itself never forwards a packet (its
sysctls are left as they were) and nothing of the lab can reach past the host: no namespace
has a route anywhere else. Nodes reach the package mirror only through the apt proxy
(apt-cacher-ng) the lab runs on the host's lab address.

A node's power cut deletes its namespace with everything in it (addresses, floating
addresses keepalived added, nftables rules): its addresses stop answering at all, as a dead
server's do, instead of refusing connections at once as a stopped process on loopback did.
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from controlplane.core.errors import LabError

ROUTER = "govhost-router"
OUTSIDE = "govhost-outside"
BRIDGE = "govlab0"
HOST_LINK = "govlab-host"        # the host's end of its link to the router

LAN4 = ipaddress.ip_network("10.77.0.0/24")
LAN6 = ipaddress.ip_network("fd00:77::/64")
GATEWAY4, GATEWAY6 = "10.77.0.1", "fd00:77::1"           # the router on the nodes' LAN
HOST4, HOST6 = "10.77.8.1", "fd00:78::1"                 # the control machine
HOST_PEER4, HOST_PEER6 = "10.77.8.2", "fd00:78::2"       # the router's end of that link
MANAGEMENT4 = "10.77.8.8"        # a second address of the host: an operator's desk
PUBLIC_ON_HOST4 = "10.77.8.99"   # a third, outside the management networks (security check)
# More addresses of the host, outside the management networks: separate clients for tests
# whose per-address limits must not meet (a browser each).
HOST_CLIENTS4 = tuple(f"10.77.8.{i}" for i in range(40, 60))
OUTSIDE4, OUTSIDE6 = "10.77.9.2", "fd00:79::2"           # "the internet"
OUTSIDE_GW4, OUTSIDE_GW6 = "10.77.9.1", "fd00:79::1"
OUTSIDE_MORE4 = tuple(f"10.77.9.{i}" for i in range(20, 30))   # more strangers
APT_PROXY_PORT = 3142
SHARED_SSH = Path("/run/govhost-lab-ssh")


def node_ns(name: str) -> str:
    return f"govhost-{name}"


def node_address(i: int) -> str:
    return str(LAN4.network_address + 10 + i)


def node_address6(i: int) -> str:
    return f"fd00:77::{10 + i}"


def _port(name: str) -> str:
    """The router's end of a node's cable (an interface name fits in 15 bytes)."""
    return f"gl-{name}"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise LabError(f"lab network: `{' '.join(cmd)}` failed: {r.stderr.strip()}")
    return r


def _ns_exists(ns: str) -> bool:
    return Path(f"/run/netns/{ns}").exists()


def _in(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run("ip", "netns", "exec", ns, *cmd, check=check)


def _sysctls(ns: str, forwarding: bool) -> None:
    # arp_notify / ndisc_notify: an interface that comes up announces its addresses, as a
    # server that boots does on most networks; without it the router would keep sending to
    # the MAC address of the machine's previous life until its neighbour entry aged out.
    values = {"net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0",
              "net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
              "net.ipv4.conf.all.arp_notify": "1", "net.ipv4.conf.default.arp_notify": "1",
              "net.ipv6.conf.all.ndisc_notify": "1", "net.ipv6.conf.default.ndisc_notify": "1"}
    if forwarding:
        values |= {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
    for key, value in values.items():
        _in(ns, "sysctl", "-q", "-w", f"{key}={value}")


def _new_ns(ns: str, forwarding: bool = False) -> None:
    _run("ip", "netns", "add", ns)
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    _sysctls(ns, forwarding)


def up() -> None:
    """The router, the bridge, the host's link and the outside: safe to rerun."""
    if os.geteuid() != 0:
        raise LabError("the lab network needs root (network namespaces)")
    if not _ns_exists(ROUTER):
        _new_ns(ROUTER, forwarding=True)
        _run("ip", "-n", ROUTER, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0")
        _run("ip", "-n", ROUTER, "addr", "add", f"{GATEWAY4}/24", "dev", BRIDGE)
        _run("ip", "-n", ROUTER, "addr", "add", f"{GATEWAY6}/64", "dev", BRIDGE, "nodad")
        _run("ip", "-n", ROUTER, "link", "set", BRIDGE, "up")
    if not Path(f"/sys/class/net/{HOST_LINK}").exists():
        _run("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", "uplink",
             "netns", ROUTER)
        _run("ip", "addr", "add", f"{HOST4}/24", "dev", HOST_LINK)
        _run("ip", "addr", "add", f"{MANAGEMENT4}/24", "dev", HOST_LINK)
        for extra in (PUBLIC_ON_HOST4, *HOST_CLIENTS4):
            _run("ip", "addr", "add", f"{extra}/24", "dev", HOST_LINK)
        _run("ip", "addr", "add", f"{HOST6}/64", "dev", HOST_LINK, "nodad")
        _run("ip", "link", "set", HOST_LINK, "up")
        _run("ip", "-n", ROUTER, "addr", "add", f"{HOST_PEER4}/24", "dev", "uplink")
        _run("ip", "-n", ROUTER, "addr", "add", f"{HOST_PEER6}/64", "dev", "uplink", "nodad")
        _run("ip", "-n", ROUTER, "link", "set", "uplink", "up")
    for net in (str(LAN4), f"{OUTSIDE4.rsplit('.', 1)[0]}.0/24"):
        _run("ip", "route", "replace", net, "via", HOST_PEER4, "dev", HOST_LINK)
    for net in (str(LAN6), "fd00:79::/64"):
        _run("ip", "-6", "route", "replace", net, "via", HOST_PEER6, "dev", HOST_LINK)
    if not _ns_exists(OUTSIDE):
        _new_ns(OUTSIDE)
        _run("ip", "-n", ROUTER, "link", "add", "outside", "type", "veth", "peer", "name",
             "eth0", "netns", OUTSIDE)
        _run("ip", "-n", ROUTER, "addr", "add", f"{OUTSIDE_GW4}/24", "dev", "outside")
        _run("ip", "-n", ROUTER, "addr", "add", f"{OUTSIDE_GW6}/64", "dev", "outside", "nodad")
        _run("ip", "-n", ROUTER, "link", "set", "outside", "up")
        _run("ip", "-n", OUTSIDE, "addr", "add", f"{OUTSIDE4}/24", "dev", "eth0")
        _run("ip", "-n", OUTSIDE, "addr", "add", f"{OUTSIDE6}/64", "dev", "eth0", "nodad")
        for extra in OUTSIDE_MORE4:
            _run("ip", "-n", OUTSIDE, "addr", "add", f"{extra}/24", "dev", "eth0")
        _run("ip", "-n", OUTSIDE, "link", "set", "eth0", "up")
        _run("ip", "-n", OUTSIDE, "route", "add", "default", "via", OUTSIDE_GW4)
        _run("ip", "-n", OUTSIDE, "-6", "route", "add", "default", "via", OUTSIDE_GW6)


def plug(name: str, i: int) -> str:
    """A powered-on node's namespace with its cable in the bridge; returns its netns path.
    A namespace left from before (a reboot) is kept as it is."""
    up()
    ns = node_ns(name)
    if not _ns_exists(ns):
        _new_ns(ns)
        # Floating addresses: nginx listens on every node's before it holds it; ARP is
        # answered only for addresses on the asking interface (govhost-node keeps every
        # floating address on lo too). A machine node cannot set these itself.
        for key, value in (("net.ipv4.ip_nonlocal_bind", "1"), ("net.ipv6.ip_nonlocal_bind", "1"),
                           ("net.ipv4.conf.all.arp_ignore", "1"),
                           ("net.ipv4.conf.all.arp_announce", "2")):
            _in(ns, "sysctl", "-q", "-w", f"{key}={value}")
    if _run("ip", "-n", ROUTER, "link", "show", _port(name), check=False).returncode != 0:
        _run("ip", "-n", ROUTER, "link", "add", _port(name), "type", "veth", "peer", "name",
             "eth0", "netns", ns)
        _run("ip", "-n", ROUTER, "link", "set", _port(name), "master", BRIDGE, "up")
        _run("ip", "-n", ns, "addr", "add", f"{node_address(i)}/24", "dev", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{node_address6(i)}/64", "dev", "eth0", "nodad")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "replace", "default", "via", GATEWAY4)
        _run("ip", "-n", ns, "-6", "route", "replace", "default", "via", GATEWAY6)
        # And the router forgets the old cable's MAC address at once (the announcement
        # above may race the bridge port's own start).
        for address in (node_address(i), node_address6(i)):
            _run("ip", "-n", ROUTER, "neigh", "flush", "to", address, check=False)
    return f"/run/netns/{ns}"


def unplug(name: str) -> None:
    """Power is gone: the cable leaves the bridge and the namespace (its addresses, its
    rules) is gone with it; the next power-on starts from a clean network."""
    close_shared_ssh(name)
    _run("ip", "-n", ROUTER, "link", "del", _port(name), check=False)
    if _ns_exists(node_ns(name)):
        _run("ip", "netns", "del", node_ns(name), check=False)


def cable(name: str, connected: bool) -> None:
    """Pull a node's cable out of the bridge (or put it back) without touching the node.
    The shared connections to it close first: a node whose cable is out sends nothing
    more, so they would hang on it instead of failing (close_shared_ssh)."""
    if not connected:
        close_shared_ssh(name)
    _run("ip", "-n", ROUTER, "link", "set", _port(name), "up" if connected else "down")


def pid_running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has ended: its parent has only not yet
    collected it)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def shared_ssh_dir() -> Path:
    """Where the lab's shared connections to its nodes keep their sockets (root's alone):
    one OpenSSH ControlMaster per node address, opened by the first `ssh_argv(...,
    shared=True)` and reused by the next, so that a test's many quick commands on a node do
    not each pay a new connection (0.34 s each; 520 of them in a whole suite)."""
    SHARED_SSH.mkdir(mode=0o700, exist_ok=True)
    os.chmod(SHARED_SSH, 0o700)
    return SHARED_SSH


def close_shared_ssh(name: str) -> None:
    """End the shared connections to node `name` (both its addresses). A connection must not
    outlive what a test does to the node: a node stopped, frozen or rebooted sends no reset,
    so its master would keep taking sessions that hang until ServerAlive gives up, and a
    wiped node is another machine with other host keys."""
    if not (name.startswith("n") and name[1:].isdigit()):
        return
    i = int(name[1:])
    for address in (node_address(i), node_address6(i)):
        sock = SHARED_SSH / address
        if not sock.exists():
            continue
        # Asks the master over its socket which process it is, then to exit, and waits for
        # it to end (it exits after it answers). Where no master answers there (it is
        # exiting already), ssh would go on to connect to the address itself: no
        # configuration file, and a proxy that fails at once, so that it fails here instead.
        ask = ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-o",
               "ProxyCommand=/bin/false", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        try:
            said = subprocess.run([*ask, "-O", "check", address], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=10, check=False)
            m = re.search(r"\(pid=(\d+)\)", said.stderr)
            subprocess.run([*ask, "-O", "exit", address], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=10, check=False)
            if m:
                master = int(m.group(1))
                deadline = time.monotonic() + 3
                while pid_running(master) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if pid_running(master):
                    os.kill(master, signal.SIGKILL)      # one of this lab's own ssh
        except (subprocess.TimeoutExpired, OSError):
            pass
        finally:
            sock.unlink(missing_ok=True)


def processes(name: str) -> list[int]:
    """Every process living in a node's network namespace (a machine's or an overlay's)."""
    try:
        want = os.stat(f"/run/netns/{node_ns(name)}").st_ino
    except OSError:
        return []
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.stat(p / "ns" / "net").st_ino == want:
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def freeze(name: str, frozen: bool) -> int:
    """A hung machine: every process of the node stopped (or continued) and its cable out,
    since a frozen kernel answers no ARP either. Returns how many processes it touched."""
    pids = processes(name)
    if frozen:
        cable(name, False)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        except OSError:
            pass
    if not frozen:
        cable(name, True)
    return len(pids)


_PARTITION_TABLE = "govhost_lab_partition"


def partition(a: str, b: str, apart: bool = True) -> None:
    """Two nodes stop hearing each other's VRRP (IP protocol 112), as behind a switch that
    drops it; everything else between them still passes."""
    _in(ROUTER, "nft", "add", "table", "bridge", _PARTITION_TABLE)
    _in(ROUTER, "nft", "add", "chain", "bridge", _PARTITION_TABLE, "forward",
        "{ type filter hook forward priority 0; policy accept; }")
    rules = [f'iifname "{_port(x)}" oifname "{_port(y)}" ip protocol 112 drop'
             for x, y in ((a, b), (b, a))] + \
        [f'iifname "{_port(x)}" oifname "{_port(y)}" ip6 nexthdr 112 drop'
         for x, y in ((a, b), (b, a))]
    if apart:
        for rule in rules:
            _in(ROUTER, "sh", "-c", f"nft add rule bridge {_PARTITION_TABLE} forward {rule}")
    else:
        _in(ROUTER, "nft", "flush", "chain", "bridge", _PARTITION_TABLE, "forward")


def outside(argv: list[str]) -> int:
    """Run a command from "the internet": an address none of the county's, through the
    router, as a citizen or the inspector would. Returns its exit status."""
    up()
    if not argv:
        raise LabError("give the command to run outside: govhost lab outside -- CMD …")
    return subprocess.run(["ip", "netns", "exec", OUTSIDE, *argv]).returncode


def outside_argv(argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", OUTSIDE, *argv]


CLONE_NEWNET = 0x40000000


@contextmanager
def entered(ns: str = OUTSIDE) -> Iterator[None]:
    """This thread (only) in namespace `ns` until the block ends: sockets it opens there
    stay there. For tests and benches that speak from outside within one Python process."""
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise LabError(f"cannot enter network namespace {ns}: "
                           f"{os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            libc.setns(here, CLONE_NEWNET)
    finally:
        os.close(here)
        os.close(there)


def down() -> None:
    """Remove the lab's network: nodes' namespaces, the router, the outside, the host link."""
    for p in Path("/run/netns").glob("govhost-*") if Path("/run/netns").is_dir() else []:
        _run("ip", "netns", "del", p.name, check=False)
    _run("ip", "link", "del", HOST_LINK, check=False)


_ACNG = """\
CacheDir: {d}/cache
LogDir: {d}/log
SupportDir: /usr/lib/apt-cacher-ng
Port: {port}
BindAddress: {address}
PidFile: {d}/pid
SocketPath: {d}/socket
ForeGround: 1
ExThreshold: 4
"""


def _proxy_pid(d: Path) -> int | None:
    try:
        pid = int((d / "pid").read_text().strip())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"apt-cacher-ng" in cmd else None


def apt_proxy_up(d: Path) -> None:
    """apt-cacher-ng on the host's lab address: the nodes' one way to the package mirror
    the host uses (no remapping: each request goes to the mirror its sources name; anything
    that is not a package file is refused). It caches, so the next `lab up` is faster."""
    if _proxy_pid(d):
        return
    acng = Path("/usr/sbin/apt-cacher-ng")
    if not acng.exists():
        raise LabError("apt-cacher-ng is not installed on this host; run scripts/setup.sh")
    for sub in ("cache", "log", "conf"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "conf" / "acng.conf").write_text(_ACNG.format(d=d, port=APT_PROXY_PORT, address=HOST4))
    log = open(d / "proxy.log", "ab")
    subprocess.Popen([str(acng), "-c", str(d / "conf")], stdin=subprocess.DEVNULL, stdout=log,
                     stderr=log, start_new_session=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection((HOST4, APT_PROXY_PORT), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"the lab's apt proxy did not listen on {HOST4}:{APT_PROXY_PORT}; "
                   f"see {d / 'proxy.log'}")


def apt_proxy_down(d: Path) -> None:
    pid = _proxy_pid(d)
    if pid:
        os.kill(pid, signal.SIGTERM)
