"""Connections to the nodes: ansible-runner for playbooks, plain OpenSSH for quick reads.

Both share one OpenSSH ControlMaster socket per node, so the quick status read before an
apply opens the connection that the playbooks then reuse.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from controlplane.core import paths
from controlplane.core.errors import GovhostError
from controlplane.core.manifest import Hosts, Node

CONTROL_DIR = Path(os.environ.get("GOVHOST_SSH_CONTROL_DIR", "/tmp/govhost-ssh"))


def _control_dir() -> Path:
    """The directory of the shared connections' sockets, this account's alone: whoever could
    put a socket there would receive every command and release archive (database passwords,
    TLS keys) sent to the nodes."""
    CONTROL_DIR.mkdir(mode=0o700, exist_ok=True)
    st = CONTROL_DIR.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise GovhostError(f"{CONTROL_DIR} (the SSH connection sockets) is not a directory "
                           f"of this account's alone (owner uid {st.st_uid}, mode "
                           f"{stat.S_IMODE(st.st_mode):o}); remove it, or set "
                           "GOVHOST_SSH_CONTROL_DIR to a directory of mode 0700")
    return CONTROL_DIR


def ssh_options(hosts: Hosts, known_hosts: Path) -> list[str]:
    control = _control_dir()
    return [
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=2",
        "-o", "ControlMaster=auto",
        "-o", "ControlPersist=120s",
        "-o", f"ControlPath={control}/%C",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "LogLevel=ERROR",
    ]


@dataclass(frozen=True)
class NodeStatus:
    node: str
    reachable: bool
    release: str | None = None
    intact: bool = True           # the live release's files match its digest list
    nginx_running: bool = False
    agent_running: bool = False
    bootstrap: str | None = None
    error: str = ""
    php_running: bool | None = None   # None: the live release has no PHP sites
    boot_time: float | None = None    # when the node last booted (its PID 1 started)
    content: dict | None = None       # tenant -> its holdings on the node (when asked)
    # govhost's firewall there: ok, pending (waiting for confirmation), reverted (the last
    # change was not confirmed and was taken back), missing (rules lost), off (none)
    firewall: str = "off"
    # The floating addresses the node holds now (None: the node has none configured),
    # whether its keepalived runs, whether it keeps out of VRRP (drained, rebooting), and
    # whether that is by hand (`govhost-node vrrp release`: an upgrade, or one cut short).
    floating: tuple[str, ...] | None = None
    vrrp_running: bool = False
    vrrp_released: bool = False
    vrrp_by_hand: bool = False


def feed(data: bytes | str | None) -> dict:
    """subprocess.run's stdin for an ssh command: `data`, or /dev/null when there is none.
    ssh given our own stdin would read the operator's typing and set that descriptor
    non-blocking, which a process sharing it then meets (Python drops what a non-blocking
    pipe refuses)."""
    return {"stdin": subprocess.DEVNULL} if data is None else {"input": data}


def ssh_argv(hosts: Hosts, node: Node, known_hosts: Path, command: str) -> list[str]:
    """The argv that runs `command` on `node` as hosts.yaml's operator account, with the
    county's pinned host keys and a shared connection per node (ssh_options). Every room that
    talks to a node builds its command with this, so a change of how govhost reaches nodes
    (port, key, multiplexing) is made here once."""
    key = os.path.expanduser(hosts.ssh.key)
    return ["ssh", "-i", key, "-p", str(hosts.ssh.port), *ssh_options(hosts, known_hosts),
            f"{hosts.ssh.user}@{node.address}", command]


def node_status(hosts: Hosts, nodes: Sequence[Node], known_hosts: Path,
                content: bool = False, only: Sequence[str] = ()) -> dict[str, NodeStatus]:
    """Ask every node, in parallel, which release it runs (one SSH round trip each); with
    `content`, in the same round trip, what content each unit has there (`holdings`), or
    only the units `only` names (one unit's page: a node checks the files of the units it
    holds, 3,333 of them a node in a 5,000-unit county on 3 nodes)."""
    tenants_tool = paths.NODE_TENANTS_TOOL
    which = "".join(f" {shlex.quote(t)}" for t in only)
    # A bare node holds nothing ({}); one whose govhost predates `holdings` cannot say (null).
    extra = (f"; if [ -x {tenants_tool} ]; then {tenants_tool} holdings{which} 2>/dev/null "
             f"|| echo null; else echo '{{}}'; fi" if content else "")

    def ask(node: Node) -> NodeStatus:
        cmd = ssh_argv(hosts, node, known_hosts,
                       "if [ -x /usr/local/sbin/govhost-node ]; then /usr/local/sbin/govhost-node"
                       " status; else echo '{\"release\": \"none\", \"nginx_running\": false,"
                       " \"bootstrap\": \"none\"}'; fi" + extra)
        try:
            # Hashing content that changed since the last check may take a while.
            out = subprocess.run(cmd, capture_output=True, text=True,
                                 timeout=300 if content else 20, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return NodeStatus(node.name, False, error="ssh timed out")
        if out.returncode != 0:
            return NodeStatus(node.name, False, error=(out.stderr.strip() or
                                                       f"ssh exit {out.returncode}")[-300:])
        lines = out.stdout.strip().splitlines()
        held = None
        try:
            if content:
                held = json.loads(lines.pop())
            data = json.loads(lines[-1])
        except (ValueError, IndexError):
            return NodeStatus(node.name, False, error=f"unexpected answer {out.stdout[-200:]!r}")
        rel = data.get("release")
        boot = data.get("bootstrap")
        php = data.get("php_running")
        return NodeStatus(node.name, True, None if rel in (None, "none") else rel,
                          bool(data.get("intact", True)), bool(data.get("nginx_running")),
                          bool(data.get("agent_running")), None if boot == "none" else boot,
                          php_running=None if php is None else bool(php),
                          boot_time=float(data["boot_time"]) if data.get("boot_time") else None,
                          content=held, firewall=str(data.get("firewall", "off")),
                          floating=None if data.get("floating") is None
                          else tuple(str(a) for a in data["floating"]),
                          vrrp_running=bool(data.get("vrrp_running")),
                          vrrp_released=bool(data.get("vrrp_released")),
                          vrrp_by_hand=bool(data.get("vrrp_by_hand")))

    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return {s.node: s for s in pool.map(ask, nodes)}


def confirm_firewall(hosts: Hosts, nodes: Sequence[Node], known_hosts: Path,
                     seconds: float) -> dict[str, str]:
    """Tell each node its new firewall still lets the control machine in: a new SSH
    connection (never the shared ControlMaster one, which the firewall lets through as an
    established connection) runs `govhost-node firewall confirm`. Tried until `seconds` have
    passed; a node that cannot be reached puts its old rules back by itself. Returns the
    node's answer, or why it could not be reached."""
    key = os.path.expanduser(hosts.ssh.key)

    def confirm(node: Node) -> tuple[str, str]:
        deadline = time.monotonic() + seconds
        err = ""
        while time.monotonic() < deadline:
            # ssh takes the first value of an option: these go before the shared ones.
            cmd = ["ssh", "-i", key, "-p", str(hosts.ssh.port), "-o", "ControlMaster=no",
                   "-o", "ControlPath=none", "-o", "ConnectTimeout=3",
                   *ssh_options(hosts, known_hosts),
                   f"{hosts.ssh.user}@{node.address}", f"{paths.NODE_TOOL} firewall confirm"]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                                     stdin=subprocess.DEVNULL)
                if out.returncode == 0:
                    return node.name, out.stdout.strip() or "confirmed"
                err = out.stderr.strip()[-200:] or f"ssh exit {out.returncode}"
            except subprocess.TimeoutExpired:
                err = "ssh timed out"
            time.sleep(1)
        return node.name, f"unreachable: {err}"

    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return dict(pool.map(confirm, nodes))


@dataclass
class HostResult:
    host: str
    ok: bool = False
    unreachable: bool = False
    changed: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        if self.unreachable:
            return "unreachable: " + (self.errors[0] if self.errors else "")
        return "; ".join(self.errors)


def _event_error(res: Mapping[str, Any]) -> str:
    # raw tasks run on a tty: their stderr arrives inside stdout
    found = [str(res[k]).strip() for k in ("stderr", "module_stderr", "stdout")
             if str(res.get(k) or "").strip()]
    return "\n".join(found) or str(res.get("msg") or "failed").strip()


def run_playbook(
    playbook: str,
    hosts: Hosts,
    nodes: Sequence[Node],
    hostvars: Mapping[str, Mapping[str, Any]],
    work_dir: Path,
    known_hosts: Path,
    extravars: Mapping[str, Any] | None = None,
    on_task: Callable[[str, str, str], None] | None = None,
) -> dict[str, HostResult]:
    """Run one playbook from playbooks/ on the given nodes; return a result per node."""
    import ansible_runner  # imported here: it is slow to import and only apply needs it

    inventory = {"all": {"hosts": {
        n.name: {
            "ansible_host": n.address,
            "ansible_port": hosts.ssh.port,
            "ansible_user": hosts.ssh.user,
            "ansible_ssh_private_key_file": os.path.expanduser(hosts.ssh.key),
            "ansible_python_interpreter": "/usr/bin/python3",
            "govhost_address": n.address,
            "govhost_roles": list(n.roles),
            **hostvars.get(n.name, {}),
        } for n in nodes}}}
    results = {n.name: HostResult(n.name) for n in nodes}
    lock = threading.Lock()
    stats: dict[str, Any] = {}

    def handler(event: Mapping[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host")
        kind = event.get("event", "")
        if kind == "playbook_on_stats":
            stats.update(data)
        if host in results:
            with lock:
                r = results[host]
                res = data.get("res") or {}
                if kind == "runner_on_unreachable":
                    r.unreachable = True
                    r.errors.append(_event_error(res))
                elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                    r.errors.append(f"{data.get('task', '')}: {_event_error(res)}")
                elif kind == "runner_on_ok":
                    r.changed = r.changed or bool(res.get("changed"))
            if on_task and kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
                on_task(host, data.get("task", ""), kind[len("runner_on_"):])
        return False  # do not keep event files: thousands of them slow the run down

    work_dir.mkdir(parents=True, exist_ok=True)
    # ansible-playbook sits next to the Python running govhost (a venv's bin/).
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    ssh_args = " ".join(ssh_options(hosts, known_hosts))
    env = {
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_ROLES_PATH": str(paths.PLAYBOOKS / "roles"),
        "ANSIBLE_FORKS": str(max(5, len(nodes))),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    ansible_runner.run(
        private_data_dir=str(work_dir),
        playbook=str(paths.PLAYBOOKS / playbook),
        inventory=inventory,
        extravars=dict(extravars or {}),
        envvars=env,
        quiet=True,
        event_handler=handler,
        rotate_artifacts=3,
    )
    for name, r in results.items():
        failed = name in (stats.get("failures") or {})
        dark = name in (stats.get("dark") or {})
        r.unreachable = r.unreachable or dark
        ran = name in (stats.get("ok") or {}) or name in (stats.get("changed") or {})
        r.ok = ran and not failed and not dark
        if not r.ok and not r.errors:
            r.errors.append("did not run (play stopped after an earlier failure)"
                            if not failed and not dark else "failed")
    return results


def run_local_playbook(playbook: str, work_dir: Path, extravars: Mapping[str, Any],
                       tags: str | None = None) -> tuple[bool, str, bool]:
    """Run a playbook (only the tasks with `tags`, if given) on the control machine itself;
    returns (ok, error, changed)."""
    import ansible_runner

    work_dir.mkdir(parents=True, exist_ok=True)
    errors_seen: list[str] = []
    changed = []

    def handler(event: Mapping[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") == "runner_on_failed" and not data.get("ignore_errors"):
            errors_seen.append(f"{data.get('task', '')}: {_event_error(data.get('res') or {})}")
        if event.get("event") == "runner_on_ok" and (data.get("res") or {}).get("changed"):
            changed.append(data.get("task", ""))
        return False

    bindir = os.path.dirname(sys.executable)
    r = ansible_runner.run(
        private_data_dir=str(work_dir), playbook=str(paths.PLAYBOOKS / playbook),
        inventory={"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}},
        extravars=dict(extravars), quiet=True, event_handler=handler, tags=tags,
        envvars={"ANSIBLE_NOCOLOR": "True", "ANSIBLE_LOCALHOST_WARNING": "False",
                 "ANSIBLE_RETRY_FILES_ENABLED": "False",
                 "PATH": bindir + os.pathsep + os.environ.get("PATH", "")},
        rotate_artifacts=3)
    ok = r.rc == 0 and not errors_seen
    return ok, "; ".join(errors_seen) or ("" if ok else f"ansible exit {r.rc}"), bool(changed)


def has_ssh() -> bool:
    return shutil.which("ssh") is not None
