"""The lab cluster: real Debian machines on one host, for running every feature for real.

Two kinds of node, both on 127.0.1.N and reached by Ansible over real SSH, so the production
playbooks run unchanged:
- `machine` (the default): a Debian root filesystem built by mmdebstrap (see lab_image),
  booted by `systemd-nspawn --boot` with systemd as PID 1 on its own copy-on-write layer over
  the cached image. It shares the host's network and nothing of the host's files. A supervisor
  restarts it when it reboots (exit status 133, as `systemd-nspawn@.service` does); anything
  else it exits with is a power-off. Its disk (the upper layer) can be wiped on its own.
- `overlay` (the old fast mode): the host's own root filesystem under an overlay, sshd as
  PID 1, no init system; it borrows the host's packages, so host packages must not change
  while it runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from controlplane.core.errors import LabError
from controlplane.lab import image as lab_image
from controlplane.lab import network

LAB_ROOT = Path(os.environ.get("GOVHOST_LAB_ROOT", "/var/lib/govhost/lab"))
KEY = LAB_ROOT / "id_ed25519"
APT_CACHE = LAB_ROOT / "apt-archives"
KINDS = ("machine", "overlay")
DEFAULT_KIND = os.environ.get("GOVHOST_LAB_KIND", "machine")
DEFAULT_IMAGE = os.environ.get("GOVHOST_LAB_IMAGE", "bare")
REBOOT_STATUS = 133        # systemd-nspawn's exit status when the machine asked to reboot

_START = r"""
set -e
hostname "$NODE"
mount -t overlay overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$D/root"
mount -t proc proc "$D/root/proc"
mount --rbind /dev "$D/root/dev"
mount -t sysfs sysfs "$D/root/sys"
mount -t tmpfs tmpfs "$D/root/run"
mount -t tmpfs tmpfs "$D/root/tmp"
mkdir -p "$D/root/run/sshd"
exec chroot "$D/root" /usr/sbin/sshd -D -e -o "ListenAddress=$IP" -o PidFile=/run/sshd.pid \
    -o PasswordAuthentication=no -o UseDNS=no
"""

# The machine's supervisor, in its own mount namespace so that its overlay mount goes away
# with it. A reboot makes systemd-nspawn exit with 133: boot again, like a real machine.
_MACHINE = r"""
mount -t overlay overlay -o "lowerdir=$IMAGE,upperdir=$D/upper,workdir=$D/work" "$D/root" || exit 1
while :; do
    date +%s > "$D/boots/$(date +%s%N)"
    systemd-nspawn -D "$D/root" --boot --machine="$NODE" --hostname="$NODE" \
        --register=no --keep-unit -q --console=passive --capability=CAP_NET_ADMIN \
        --network-namespace-path="$NETNS" --bind="$CACHE:/var/cache/apt/archives" </dev/null
    rc=$?
    echo "node $NODE: systemd-nspawn exited with status $rc at $(date -Is)"
    [ "$rc" -eq 133 ] || exit "$rc"
done
"""


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str
    dir: str
    pid: int | None          # the node's supervisor (machine) or sshd (overlay)
    running: bool
    ssh_open: bool
    kind: str = "machine"
    image: str = ""          # machine nodes: the image its disk was made from (bare, warm)
    boots: int = 0           # machine nodes: how many times it has booted on this disk


def node_name(i: int) -> str:
    return f"n{i}"


node_address = network.node_address
node_address6 = network.node_address6


def _index(name: str) -> int:
    if not (name.startswith("n") and name[1:].isdigit()):
        raise LabError(f"no lab node named {name!r}; lab nodes are n1, n2, …")
    return int(name[1:])


def _node_dir(i: int) -> Path:
    return LAB_ROOT / "nodes" / node_name(i)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _alive(pid: int | None, name: str = "") -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    line = _cmdline(pid)
    return "sshd" in line or (bool(name) and f"govhost-lab-{name}" in line)


def _port_open(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _read(d: Path, what: str) -> str:
    try:
        return (d / what).read_text().strip()
    except OSError:
        return ""


def _read_pid(d: Path) -> int | None:
    try:
        return int(_read(d, "pid"))
    except ValueError:
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(k) for k in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _child_of(pid: int) -> int | None:
    kids = _children(pid)
    return kids[0] if kids else None


def _check_host(kind: str) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces and overlay mounts); run as root")
    tools = ("unshare", "ssh-keygen", "systemd-nspawn", "mmdebstrap") if kind == "machine" \
        else ("unshare", "sshd", "ssh-keygen", "nginx")
    for tool in tools:
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise LabError(f"{tool} is not installed on this host; run scripts/setup.sh first")


def ssh_argv(address: str, *options: str, shared: bool = False) -> list[str]:
    """`ssh` as root to a lab node with the lab key, up to the remote command. Nodes get new
    host keys every time they are made, so they are not remembered. With `shared`, over the
    lab's one connection to that address (network.shared_ssh_dir): for the tests' quick
    commands; stop, freeze and reboot close it. A bench that measures a connection, or a
    test that tries whether one can be made (sshd still lets the operator in after a
    change, a firewall keeps someone out), leaves it off: sshd keeps the connections it
    had when its configuration changes. The caller's options come first (ssh takes the
    first value of each), so `-o ControlPath=none` still means none."""
    share = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
             "-o", f"ControlPath={network.shared_ssh_dir()}/%h",
             "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"] if shared else []
    return ["ssh", "-i", str(KEY), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", *options, *share,
            f"root@{address}"]


def ensure_key() -> Path:
    LAB_ROOT.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "govhost-lab",
                        "-f", str(KEY)], check=True)
    return KEY


def _authorize(home: Path) -> None:
    """The operator's key in root's authorized_keys of a node's disk (never the host's)."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    (ssh_dir / "authorized_keys").write_text(KEY.with_suffix(".pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)


def _lab_settings(upper: Path) -> None:
    """What the lab's network asks of every node's disk: packages through the apt proxy on
    the control machine (the only way out of the lab), and a resolver that answers at once
    (nothing listens there: no name lookup waits out a timeout for a server it cannot reach)."""
    apt = upper / "etc" / "apt" / "apt.conf.d"
    apt.mkdir(parents=True, exist_ok=True)
    (apt / "01govhost-lab-proxy").write_text(
        f'Acquire::http::Proxy "http://{network.HOST4}:{network.APT_PROXY_PORT}";\n')
    # A lab machine's disk is thrown away: dpkg need not flush every file it unpacks (a
    # county's servers keep dpkg's default; bootstrap does not set this).
    dpkg = upper / "etc" / "dpkg" / "dpkg.cfg.d"
    dpkg.mkdir(parents=True, exist_ok=True)
    (dpkg / "01govhost-lab-unsafe-io").write_text("force-unsafe-io\n")
    etc = upper / "etc"
    if (etc / "resolv.conf").is_symlink():
        (etc / "resolv.conf").unlink()
    (etc / "resolv.conf").write_text(f"nameserver {network.HOST4}\noptions timeout:1 attempts:1\n")


def _start_overlay(i: int) -> subprocess.Popen:
    d = _node_dir(i)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "kind").write_text("overlay\n")
    _authorize(d / "upper" / "root")
    # A node is a fresh Debian machine: root gets Debian's stock shell files, not whatever
    # the host's root added (bash reads .bashrc for every SSH command; a pyenv/cargo setup
    # there costs ~100 ms per command, which no real node pays).
    for dot in ("bashrc", "profile"):
        stock = Path(f"/usr/share/base-files/dot.{dot}")
        if stock.exists():
            shutil.copyfile(stock, d / "upper" / "root" / f".{dot}")
    _lab_settings(d / "upper")
    log = open(d / "node.log", "ab")
    env = {**os.environ, "NODE": node_name(i), "D": str(d), "IP": node_address(i)}
    netns = network.plug(node_name(i), i)
    return subprocess.Popen(
        ["nsenter", f"--net={netns}", "unshare", "--mount", "--pid", "--uts", "--fork",
         "--propagation", "private", "sh", "-c", _START],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)


def _apt_cache(name: str) -> Path:
    """The node's own apt archive directory, with hard links to every package the lab's
    other nodes (or an older shared cache) downloaded. Shared by all nodes, one apt held
    its lock for a whole install and three bootstraps ran one after the other (168 s for
    three bare nodes, against about 75 s side by side on two cores); the apt proxy still
    fetches each file from the mirror once."""
    own = APT_CACHE / name
    (own / "partial").mkdir(parents=True, exist_ok=True)
    have = {p.name for p in own.glob("*.deb")}
    for deb in sorted(APT_CACHE.glob("*.deb")) + sorted(APT_CACHE.glob("*/*.deb")):
        if deb.name not in have and deb.parent != own:
            try:
                os.link(deb, own / deb.name)
                have.add(deb.name)
            except OSError:
                pass
    return own


def _start_machine(i: int, image: str) -> subprocess.Popen:
    d, name = _node_dir(i), node_name(i)
    rootfs = lab_image.ensure(LAB_ROOT, image)
    for sub in ("upper", "work", "root", "boots"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    upper = d / "upper"
    if not (upper / "etc" / "ssh" / "sshd_config.d" / "lab.conf").exists():
        # A freshly installed server: its own host keys, sshd on its own address, the
        # operator's key for root. Nothing else of the host.
        conf = upper / "etc" / "ssh" / "sshd_config.d"
        conf.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-A", "-f", str(upper)], check=True,
                       capture_output=True)
        (conf / "lab.conf").write_text(f"ListenAddress {node_address(i)}\n"
                                       "PasswordAuthentication no\nUseDNS no\n")
        _authorize(upper / "root")
        # its own host name, as an installer gives each server: the image's is "localhost"
        # for every node, and restic's locks (the repository's, shared by the nodes) name
        # their process by host and pid, which the nodes' lock clean-ups rely on
        (upper / "etc" / "hostname").write_text(f"{name}\n")
        (upper / "etc" / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        (d / "image").write_text(image + "\n")
    (d / "kind").write_text("machine\n")
    _lab_settings(upper)
    cache = _apt_cache(name)
    log = open(d / "node.log", "ab")
    env = {**os.environ, "NODE": name, "D": str(d), "IMAGE": str(rootfs),
           "CACHE": str(cache), "NETNS": network.plug(name, i)}
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MACHINE,
         f"govhost-lab-{name}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)


def _wait_ssh(i: int, proc: subprocess.Popen, kind: str, timeout: float) -> None:
    d = _node_dir(i)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = (d / "node.log").read_text(errors="replace")[-800:]
            raise LabError(f"lab node {node_name(i)} failed to start:\n{tail}")
        pid = proc.pid if kind == "machine" else _child_of(proc.pid)
        if pid and _port_open(node_address(i)):
            (d / "pid").write_text(f"{pid}\n")
            return
        time.sleep(0.1)
    # Not left running half-started: the next start would find its ports taken.
    _kill_launched(proc)
    raise LabError(f"lab node {node_name(i)}: sshd did not listen on {node_address(i)}:22 "
                   f"in {timeout:.0f} s; see {d / 'node.log'}")


def _kill_launched(proc: subprocess.Popen) -> None:
    """A launch that failed: its process tree goes (the namespace's init takes the rest)."""
    for pid in [*_children(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait(timeout=10)


def nodes() -> list[LabNode]:
    out = []
    base = LAB_ROOT / "nodes"
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir(), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        if not (d.name.startswith("n") and d.name[1:].isdigit()):
            continue
        i = int(d.name[1:])
        pid = _read_pid(d)
        alive = _alive(pid, d.name)
        boots = len(list((d / "boots").iterdir())) if (d / "boots").is_dir() else 0
        out.append(LabNode(d.name, node_address(i), str(d), pid if alive else None, alive,
                           alive and _port_open(node_address(i)),
                           _read(d, "kind") or "overlay", _read(d, "image"), boots))
    return out


def up(count: int, kind: str | None = None, image: str | None = None) -> list[LabNode]:
    """Start nodes n1..n<count>; nodes already running are left alone (safe to rerun).

    Machine nodes boot from `image` (bare: a freshly installed server; warm: the node
    packages already there); a stopped node keeps its disk and boots from it again."""
    if not 1 <= count <= 20:
        raise LabError("--nodes must be between 1 and 20")
    # Without a kind, nodes that exist keep theirs (a stopped node comes back as it was).
    kind = kind or next((n.kind for n in nodes()), None) or DEFAULT_KIND
    if kind not in KINDS:
        raise LabError(f"unknown lab kind {kind!r}; use one of {', '.join(KINDS)}")
    _check_host(kind)
    ensure_key()
    other = [n.name for n in nodes() if n.running and n.kind != kind]
    if other:
        raise LabError(f"lab nodes {', '.join(other)} run as another kind; "
                       "run `govhost lab down` first")
    network.up()
    network.apt_proxy_up(LAB_ROOT / "apt-proxy")
    started = []
    for i in range(1, count + 1):
        if not _alive(_read_pid(_node_dir(i)), node_name(i)):
            started.append((i, _launch(i, kind, image)))
    for i, proc in started:
        _wait_ssh(i, proc, kind, 120 if kind == "machine" else 15)
    return nodes()


def _launch(i: int, kind: str, image: str | None) -> subprocess.Popen:
    _forget_other_kind(_node_dir(i), kind)
    if kind == "overlay":
        return _start_overlay(i)
    d = _node_dir(i)
    return _start_machine(i, _read(d, "image") or image or DEFAULT_IMAGE)


_DISK = ("upper", "work", "boots", "image", "pid")


def _clear_disk(d: Path) -> None:
    for sub in _DISK:
        p = d / sub
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _forget_other_kind(d: Path, kind: str) -> None:
    """A node left stopped as the other kind (a run cut off before `lab down`) must not lend
    its disk: an overlay over a machine's upper layer sees the bare image's /etc/passwd (no
    `mysql`, none of the host's users) over the host's root, and a machine over an overlay's
    would boot the host's files. Its disk goes; it starts as a new node of this kind."""
    was = _read(d, "kind")
    if was and was != kind:
        _clear_disk(d)


def start(name: str) -> LabNode:
    """Power a stopped node on again; its disk is as it was."""
    i = _index(name)
    d = _node_dir(i)
    if not d.is_dir():
        raise LabError(f"lab node {name} does not exist; `govhost lab up` makes it")
    kind = _read(d, "kind") or "overlay"
    if not _alive(_read_pid(d), name):
        _wait_ssh(i, _launch(i, kind, None), kind, 120 if kind == "machine" else 15)
    return next(n for n in nodes() if n.name == name)


def _wait_gone(pids: list[int], seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and any(network.pid_running(p) for p in pids):
        time.sleep(0.05)


def stop(name: str) -> bool:
    """Stop one node as if its machine lost power; its disk is kept. Returns whether it was
    running. Whatever still lives on the node's network goes too (a start that failed half
    way), so the next start finds its addresses free."""
    was = False
    for n in nodes():
        if n.name != name or not n.pid:
            continue
        was = True
        # The cable first: a machine that loses power sends nothing more, not even the
        # resets its kernel would send for connections whose processes are being killed.
        network.cable(name, False)
        if n.kind == "machine":
            # supervisor (sh) -> systemd-nspawn -> the machine's PID 1. Killing PID 1 ends
            # every process of the machine; the supervisor goes first so it does not boot again.
            nspawn = [c for c in _children(n.pid) if "systemd-nspawn" in _cmdline(c)]
            inits = [k for c in nspawn for k in _children(c)]
            os.kill(n.pid, signal.SIGKILL)
            for pid in inits:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            _wait_gone([n.pid, *nspawn, *inits])
        else:
            os.kill(n.pid, signal.SIGKILL)
            _wait_gone([n.pid], 2.5)
    left = network.processes(name)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _wait_gone(left, 2.5)
    network.unplug(name)
    return was


def reboot(name: str, timeout: float = 120) -> LabNode:
    """`systemctl reboot` inside a machine node; returns once it answers SSH again."""
    node = next((n for n in nodes() if n.name == name), None)
    if node is None or not node.running or node.kind != "machine":
        raise LabError(f"{name} is not a running machine node")
    boots = node.boots
    subprocess.run(ssh_argv(node.address, "-o", "ConnectTimeout=5") + ["systemctl reboot"],
                   capture_output=True, timeout=30)
    network.close_shared_ssh(name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = next(n for n in nodes() if n.name == name)
        if now.boots > boots and now.ssh_open:
            return now
        if not now.running:
            raise LabError(f"{name} powered off instead of rebooting; see {now.dir}/node.log")
        time.sleep(0.2)
    raise LabError(f"{name} did not come back from its reboot in {timeout:.0f} s")


def wipe(name: str, image: str = "bare") -> LabNode:
    """The node's disk dies and it comes back as a freshly installed server (same address,
    same operator key, nothing else): what a replaced machine looks like to govhost."""
    i = _index(name)
    d = _node_dir(i)
    if (_read(d, "kind") or "machine") != "machine":
        raise LabError("only machine nodes can be wiped; `govhost lab up --kind machine`")
    stop(name)
    _clear_disk(d)
    ensure_key()
    _wait_ssh(i, _start_machine(i, image), "machine", 120)
    return next(n for n in nodes() if n.name == name)


def down() -> int:
    """Stop every node and remove the lab's disks; returns how many nodes were running.
    The images and the apt cache stay, so the next `lab up` is quick."""
    stopped = 0
    for n in nodes():
        if stop(n.name):
            stopped += 1
    network.down()
    network.apt_proxy_down(LAB_ROOT / "apt-proxy")
    base = LAB_ROOT / "nodes"
    if base.exists():
        time.sleep(0.2)
        shutil.rmtree(base, ignore_errors=True)
    return stopped


def as_json(ns: list[LabNode]) -> list[dict]:
    return [asdict(n) for n in ns]


def dumps(ns: list[LabNode]) -> str:
    return json.dumps(as_json(ns), indent=2)
