"""What the release steps ask of the node's system: commands that must succeed, processes
known by their pid files, services under systemd or (the overlay lab nodes, which have no
init system) started by govhost-node itself, and files replaced atomically."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Sequence

from govhost_node.layout import Layout


class NodeExit(Exception):
    """End govhost-node with `code`; `message` (if any) goes to stderr after "govhost-node:".
    The control machine acts on the codes of exits.py."""

    def __init__(self, message: str | None, code: int = 1) -> None:
        super().__init__(message or f"exit {code}")
        self.message = message
        self.code = code


def die(message: str) -> NodeExit:
    return NodeExit(message, 1)


def say(text: str) -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    print(f"govhost-node: {text}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], quiet: bool = False, **kw) -> None:
    """Run a command that must succeed; its own error output reaches the caller, and its
    exit code ends govhost-node (as `set -e` did in the shell version)."""
    if quiet:
        kw.setdefault("stdout", subprocess.DEVNULL)
    r = subprocess.run(list(argv), **kw)
    if r.returncode != 0:
        raise NodeExit(None, r.returncode)


def ok(argv: Sequence[str], keep_stderr: bool = False) -> bool:
    """True when the command succeeds; its output is not wanted (its complaints are, with
    `keep_stderr`)."""
    try:
        return subprocess.run(list(argv), stdout=subprocess.DEVNULL,
                              stderr=None if keep_stderr else subprocess.DEVNULL
                              ).returncode == 0
    except OSError:
        return False


def output(argv: Sequence[str]) -> tuple[int, str]:
    """Exit code and the command's stdout and stderr together (what a check printed)."""
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def has(command: str) -> bool:
    return shutil.which(command) is not None


def under_systemd(lay: Layout) -> bool:
    """Under systemd the services are its units (a reboot brings them back); without an init
    system govhost-node starts them itself."""
    return os.path.isdir(os.path.join(lay.run, "systemd", "system"))


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def alive(pidfile: str) -> bool:
    pid = read_pid(pidfile)
    return pid is not None and pid_alive(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_pidfile(pidfile: str, sig: int = signal.SIGTERM) -> None:
    pid = read_pid(pidfile)
    if pid is not None:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def active(unit: str) -> bool:
    return ok(["systemctl", "is-active", "-q", unit])


def start_detached(argv: Sequence[str], log: str, pidfile: str | None = None) -> int:
    """Start a program in a session of its own, its output appended to `log`; it outlives
    govhost-node. The pid goes to `pidfile`."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    if pidfile is not None:
        write_atomic(pidfile, f"{p.pid}\n")
    return p.pid


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.new"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install_copy(src: str, dst: str, mode: int = 0o644) -> None:
    """Copy `src` over `dst` atomically with `mode` (a reader sees the old or the new)."""
    tmp = f"{os.path.dirname(dst)}/.{os.path.basename(dst)}.new"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    os.replace(tmp, dst)


def same_file(a: str, b: str) -> bool:
    """`cmp -s`: both exist and hold the same bytes."""
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def end_with_parent() -> bool:
    """Have the kernel send this process SIGTERM when its parent ends, however it ends
    (Linux's parent-death signal): a worker or a connection started for a program's run
    does not outlive it. False when the kernel refused."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0        # PR_SET_PDEATHSIG
