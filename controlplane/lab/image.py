"""Root filesystems for the lab's machine nodes, built once by mmdebstrap and cached.

Two images, both plain Debian from the mirror apt already uses:
- `bare`: only systemd, openssh-server, python3 and dbus — what a freshly installed server
  has. Bootstrap takes it the whole way (apt, units, timers).
- `warm`: `bare` plus the Debian packages the node role installs. Bootstrap still runs on it
  unchanged; it just finds the packages there. Tests that do not test bootstrap itself use it
  so that the suite is not dominated by package downloads.
Each image is keyed by what goes into it, so changing the package list builds a new one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from controlplane.core import paths
from controlplane.core.errors import LabError

BASE_PACKAGES = ("systemd", "systemd-sysv", "openssh-server", "python3", "dbus")
KINDS = ("bare", "warm")


def _host_release() -> str:
    """The Debian suite of this machine: nodes run what the servers of the county would."""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"') or "bookworm"
    except OSError:
        pass
    return "bookworm"


def _sources() -> list[str]:
    """The host's apt sources, handed to mmdebstrap: nodes use the mirror the host uses."""
    for p in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if p.is_file() and p.read_text().strip():
            return [str(p)]
    return ["http://deb.debian.org/debian"]


def node_packages() -> list[str]:
    """What the node role installs on any node (db packages included), from its defaults."""
    defaults = yaml.safe_load((paths.PLAYBOOKS / "roles" / "node" / "defaults" / "main.yml")
                              .read_text())
    pkgs: list[str] = []
    for key in ("govhost_node_packages", "govhost_db_packages"):
        for p in defaults.get(key) or []:
            if p not in pkgs:
                pkgs.append(p)
    return pkgs


def packages(kind: str) -> list[str]:
    if kind not in KINDS:
        raise LabError(f"unknown lab image {kind!r}; use one of {', '.join(KINDS)}")
    return list(BASE_PACKAGES) + (node_packages() if kind == "warm" else [])


def image_dir(root: Path, kind: str) -> Path:
    key = hashlib.sha256(" ".join([_host_release(), *packages(kind)]).encode()).hexdigest()[:10]
    return root / "images" / f"{kind}-{key}"


def ensure(root: Path, kind: str, say=lambda msg: None) -> Path:
    """The image's root filesystem, built if it is not cached yet. Returns its directory."""
    dest = image_dir(root, kind)
    if (dest / ".complete").exists():
        return dest / "rootfs"
    if not shutil.which("mmdebstrap"):
        raise LabError("mmdebstrap is not installed; run scripts/setup.sh first")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    say(f"building the {kind} node image with mmdebstrap (once; cached in {dest})")
    started = time.monotonic()
    cmd = ["mmdebstrap", "--variant=minbase", "--mode=root", "-q",
           f"--include={','.join(packages(kind))}",
           # Package lists stay, as on an installed server: apt works without an update first.
           "--skip=cleanup/apt/lists",
           _host_release(), str(tmp / "rootfs"), *_sources()]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(f"building the {kind} lab image failed (is the package mirror "
                       f"reachable?):\n{(proc.stderr or proc.stdout)[-1500:]}")
    _finish(tmp / "rootfs")
    (tmp / ".complete").write_text(f"{time.monotonic() - started:.1f}\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest / "rootfs"


def _finish(rootfs: Path) -> None:
    """What the Debian installer leaves that mmdebstrap does not, and what no shared-network
    machine may start with: the host name is set per node, and services that Debian starts
    on a wildcard address are left for bootstrap to disable."""
    (rootfs / "etc" / "hostname").write_text("localhost\n")
    # sshd host keys are made per node at first boot (ssh.service's ExecStartPre does not;
    # the lab writes them before starting the node), so images carry none.
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    # No console login prompts: the lab talks to nodes over SSH only.
    getty = rootfs / "etc" / "systemd" / "system" / "getty.target.wants"
    shutil.rmtree(getty, ignore_errors=True)
