"""A config release reaches the nodes: staged on every node at once, then activated on one
canary node and, only once it serves, on the rest. Plain OpenSSH on the shared connection
of each node (remote.ssh_argv), one command per node and step.

This was a playbook run. Ansible's start-up, its `script` module's upload and its per-batch
bookkeeping cost about 4 s of every apply that changed anything (5.7 s of a one-unit change
on three nodes, against about 1.5 s here; bench/apply_scale.py measures both sides); the
steps themselves are one `govhost-node` command each, with nothing for Ansible to converge.
"""
from __future__ import annotations

import dataclasses
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from controlplane.core import paths, remote
from controlplane.core.manifest import Hosts, Node

# ssh's own exit status when it could not run the command or lost the connection
# (govhost-node never exits with it: node.py)
SSH_FAILED = 255
# Printed first by every step: a step that printed it ran on the node, whatever ssh says next.
STARTED = "govhost-step-started"
# A stage receives and checks a whole release (nginx -t of every unit): minutes at the
# largest sizes; an activation reloads nginx and probes it (at most 60 s of probing).
STAGE_SECONDS = 900
ACTIVATE_SECONDS = 600

Progress = Callable[[str, str, str], None]   # (node, step, ok | failed | unreachable)


@dataclass(frozen=True)
class Payload:
    """What one node is sent: the `govhost-node` command line that stages its release, and
    the archive it reads on standard input (None: the node already holds the release)."""
    command: str
    archive: Path | None


@dataclass(frozen=True)
class Step:
    """One node's answer to one step: its exit status (None: ssh did not reach it) and what
    it printed, errors first."""
    node: str
    rc: int | None
    output: str
    # the step began on the node but its end is unknown (timed out, or the connection broke)
    cut_short: bool = False
    seconds: float = 0.0          # wall time of the step, as the control machine saw it

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def unreachable(self) -> bool:
        """ssh never ran the step: the node is as it was."""
        return self.rc is None and not self.cut_short


def _run(hosts: Hosts, node: Node, known_hosts: Path, command: str, archive: Path | None,
         timeout: float) -> Step:
    started = time.monotonic()
    step = _ssh_step(hosts, node, known_hosts, command, archive, timeout)
    return dataclasses.replace(step, seconds=round(time.monotonic() - started, 3))


def _ssh_step(hosts: Hosts, node: Node, known_hosts: Path, command: str,
               archive: Path | None, timeout: float) -> Step:
    try:
        argv = remote.ssh_argv(hosts, node, known_hosts, f"echo {STARTED}; {command}")
        with (open(archive, "rb") if archive else open("/dev/null", "rb")) as stdin:
            r = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        began = STARTED.encode() in (exc.stdout or b"")
        return Step(node.name, None, f"no answer within {timeout:.0f} s", cut_short=began)
    except OSError as exc:
        return Step(node.name, None, str(exc))
    stdout = r.stdout.decode(errors="replace")
    began = stdout.startswith(STARTED)
    stdout = stdout.removeprefix(STARTED).strip()
    out = "\n".join(t for t in (r.stderr.decode(errors="replace").strip(), stdout) if t)
    if r.returncode == SSH_FAILED:
        return Step(node.name, None, out or "ssh failed", cut_short=began)
    return Step(node.name, r.returncode, out)


def _each(nodes: Sequence[Node], one: Callable[[Node], Step]) -> dict[str, Step]:
    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return {s.node: s for s in pool.map(one, nodes)}


def _said(say: Progress | None, step: str, s: Step) -> Step:
    if say:
        say(s.node, step, "ok" if s.ok else "unreachable" if s.unreachable else "failed")
    return s


def stage(hosts: Hosts, nodes: Sequence[Node], known_hosts: Path,
          payloads: Mapping[str, Payload], say: Progress | None = None) -> dict[str, Step]:
    """Send each node its release and stage it there (`nginx -t` beside the live release),
    all nodes at once. Nothing live changes."""
    def one(n: Node) -> Step:
        p = payloads[n.name]
        return _said(say, "stage", _run(hosts, n, known_hosts, p.command, p.archive,
                                        STAGE_SECONDS))
    return _each(nodes, one)


def _activate(hosts: Hosts, node: Node, known_hosts: Path, release: str, keep: int) -> Step:
    """Activate, and roll back an activation that failed or whose end is unknown (it timed
    out, or the connection broke after it began: the node may have switched and not been
    probed). Such a step is a failure, never "unreachable": the rollout stops there."""
    tool = paths.NODE_TOOL
    args = " ".join(shlex.quote(str(a)) for a in (release, node.address, keep))
    s = _run(hosts, node, known_hosts, f"{tool} activate {args}", None, ACTIVATE_SECONDS)
    if s.ok or s.unreachable:
        return s
    back = _run(hosts, node, known_hosts, f"{tool} rollback", None, ACTIVATE_SECONDS)
    how = "rolled back" if back.ok else f"rollback failed too: {back.output}"
    what = "did not finish" if s.cut_short else "failed"
    return Step(s.node, s.rc if s.rc is not None else -1,
                f"activation of release {release} {what} ({how}): {s.output}",
                seconds=round(s.seconds + back.seconds, 3))


def activate(hosts: Hosts, nodes: Sequence[Node], known_hosts: Path,
             releases: Mapping[str, str], keep: int, say: Progress | None = None
             ) -> tuple[str | None, dict[str, Step | None]]:
    """Activate each node's staged release, probe it and keep `keep` releases; a node whose
    activation fails is rolled back. The first node that can be reached is the canary: the
    others follow only once it serves its new release (a canary that cannot be reached hands
    the part on to the next node). Returns the canary and each node's step (None: not
    activated because the canary failed)."""
    done: dict[str, Step | None] = {}
    rest = list(nodes)
    while rest:
        canary = rest.pop(0)
        s = _said(say, "activate", _activate(hosts, canary, known_hosts,
                                             releases[canary.name], keep))
        done[canary.name] = s
        if s.unreachable:
            continue
        if not s.ok:
            done.update({n.name: None for n in rest})
            return canary.name, done
        done.update(_each(rest, lambda n: _said(say, "activate", _activate(
            hosts, n, known_hosts, releases[n.name], keep))))
        return canary.name, done
    return None, done
