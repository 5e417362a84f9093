"""The lab cluster: real Debian "machines" on one host, for running every feature for real.

Each node is a copy-on-write clone of the host's root filesystem (overlayfs, lower = /) in its
own mount, PID and UTS namespaces, running its own sshd on 127.0.1.N:22. Ansible reaches it
over real SSH, so the production playbooks run unchanged. sshd is PID 1 of the node: killing it
stops the node and everything in it.
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

from .errors import LabError

LAB_ROOT = Path(os.environ.get("GOVHOST_LAB_ROOT", "/var/lib/govhost/lab"))
KEY = LAB_ROOT / "id_ed25519"

_START = r"""
set -e
hostname "$NODE"
mount -t overlay overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$D/root"
mount -t proc proc "$D/root/proc"
mount --rbind /dev "$D/root/dev"
mount --rbind /sys "$D/root/sys"
mount -t tmpfs tmpfs "$D/root/run"
mount -t tmpfs tmpfs "$D/root/tmp"
mkdir -p "$D/root/run/sshd"
exec chroot "$D/root" /usr/sbin/sshd -D -e -o "ListenAddress=$IP" -o PidFile=/run/sshd.pid \
    -o PasswordAuthentication=no -o UseDNS=no
"""


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str
    dir: str
    pid: int | None          # PID of the node's sshd (PID 1 inside the node)
    running: bool
    ssh_open: bool


def node_name(i: int) -> str:
    return f"n{i}"


def node_address(i: int) -> str:
    return f"127.0.1.{i}"


def _node_dir(i: int) -> Path:
    return LAB_ROOT / "nodes" / node_name(i)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return "sshd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _port_open(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_pid(d: Path) -> int | None:
    try:
        return int((d / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _child_of(pid: int) -> int | None:
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            if kids:
                return int(kids[0])
    except OSError:
        return None
    return None


def _check_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces and overlay mounts); run as root")
    for tool in ("unshare", "sshd", "ssh-keygen", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise LabError(f"{tool} is not installed on this host; run scripts/setup.sh first")


def ssh_argv(address: str, *options: str) -> list[str]:
    """`ssh` as root to a lab node with the lab key, up to the remote command. Nodes get new
    host keys every time they are made, so they are not remembered."""
    return ["ssh", "-i", str(KEY), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", *options,
            f"root@{address}"]


def ensure_key() -> Path:
    LAB_ROOT.mkdir(parents=True, exist_ok=True)
    if not KEY.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "govhost-lab",
                        "-f", str(KEY)], check=True)
    return KEY


def _start(i: int) -> None:
    d = _node_dir(i)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    # The node's own authorized_keys, in its upper layer, so the host's is never edited.
    ssh_dir = d / "upper" / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    (ssh_dir / "authorized_keys").write_text(KEY.with_suffix(".pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # A node is a fresh Debian machine: root gets Debian's stock shell files, not whatever
    # the host's root added (bash reads .bashrc for every SSH command; a pyenv/cargo setup
    # there costs ~100 ms per command, which no real node pays).
    for dot in ("bashrc", "profile"):
        stock = Path(f"/usr/share/base-files/dot.{dot}")
        if stock.exists():
            shutil.copyfile(stock, d / "upper" / "root" / f".{dot}")
    # A stale pid or nginx state from a node that was killed would confuse the node.
    log = open(d / "node.log", "ab")
    env = {**os.environ, "NODE": node_name(i), "D": str(d), "IP": node_address(i)}
    proc = subprocess.Popen(
        ["unshare", "--mount", "--pid", "--uts", "--fork", "--propagation", "private",
         "sh", "-c", _START],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = (d / "node.log").read_text(errors="replace")[-600:]
            raise LabError(f"lab node {node_name(i)} failed to start:\n{tail}")
        child = _child_of(proc.pid)
        if child and _port_open(node_address(i)):
            (d / "pid").write_text(f"{child}\n")
            return
        time.sleep(0.1)
    raise LabError(f"lab node {node_name(i)}: sshd did not listen on {node_address(i)}:22 in 15 s")


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
        alive = _alive(pid)
        out.append(LabNode(d.name, node_address(i), str(d), pid if alive else None, alive,
                           alive and _port_open(node_address(i))))
    return out


def up(count: int) -> list[LabNode]:
    """Start nodes n1..n<count>; nodes already running are left alone (safe to rerun)."""
    if not 1 <= count <= 20:
        raise LabError("--nodes must be between 1 and 20")
    _check_host()
    ensure_key()
    for i in range(1, count + 1):
        d = _node_dir(i)
        if not _alive(_read_pid(d)):
            _start(i)
    return nodes()


def stop(name: str) -> bool:
    """Stop one node (as if its machine lost power); its disk (upper layer) is kept."""
    for n in nodes():
        if n.name == name and n.pid:
            os.kill(n.pid, signal.SIGKILL)
            for _ in range(50):
                if not _alive(n.pid):
                    break
                time.sleep(0.05)
            return True
    return False


def down() -> int:
    """Stop every node and remove the lab's disks; returns how many nodes were running."""
    stopped = 0
    for n in nodes():
        if n.pid and stop(n.name):
            stopped += 1
    base = LAB_ROOT / "nodes"
    if base.exists():
        time.sleep(0.2)
        shutil.rmtree(base, ignore_errors=True)
    return stopped


def as_json(ns: list[LabNode]) -> list[dict]:
    return [asdict(n) for n in ns]


def dumps(ns: list[LabNode]) -> str:
    return json.dumps(as_json(ns), indent=2)
