"""Bootstrap: take nodes to this govhost's node software (playbooks/bootstrap.yml).

Two Ansible tasks per node: the Debian packages (a shell script, as a bare server may have
no Python yet), then the node package, which installs itself (govhost_node/install.py). The
package travels as one self-extracting file made here, the way a release does: one transfer
and one round trip, where a task per file and per step cost about two minutes a bootstrap.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from controlplane.core import paths, remote
from controlplane.core.inventory import Hosts, Node
from govhost_node import install as node_install

ROLE = paths.PLAYBOOKS / "roles" / "node"


def version(package: Path = paths.NODE_PACKAGE, roles: Sequence[str] = ()) -> str:
    """A hash of the node role, the node package and what of the node's own roles changes
    what bootstrap puts on it: a node bootstrapped by another govhost (or with another
    package), or one that became a database node (`db` in hosts.yaml: MariaDB's server and
    its service), is bootstrapped again at the next apply. Without the role in it, a node
    bootstrapped as a web node never got MariaDB when hosts.yaml later gave it `db`, and
    every activation there failed (found by a bench applying another county to the same
    machines)."""
    h = hashlib.sha256()
    for p in sorted(ROLE.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(ROLE).as_posix().encode() + b"\0" + p.read_bytes())
    h.update(node_install.version_of(str(package)).encode())
    if "db" in roles:
        h.update(b"\0role db")
    return h.hexdigest()[:12]


def current(bootstrapped: str | None, roles: Sequence[str],
            package: Path = paths.NODE_PACKAGE) -> bool:
    """Whether a node bootstrapped at version `bootstrapped` needs no bootstrap for `roles`.
    A node that left `db` in hosts.yaml keeps its database node's version: bootstrap would
    stop its MariaDB at once, before the new release (and the databases' new home) has been
    proven, and a rollback would then point PHP at a stopped database. Moving the databases
    is not done by apply; MariaDB stays there until an operator stops it (and a bootstrap
    that comes later, for a new node package, leaves a MariaDB holding govhost's databases
    running: govhost_node/install.py)."""
    wanted = {version(package, roles)}
    if "db" not in roles:
        wanted.add(version(package, [*roles, "db"]))
    return bootstrapped in wanted


def _archive(package: Path) -> bytes:
    """The package's files as a gzipped tar under govhost_node/, the same bytes for the same
    files (no times, owners or order of the disk in it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in node_install.files_of(str(package)):
            info = tarfile.TarInfo(f"govhost_node/{rel}")
            data = (package / rel).read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)   # no time in the header


def installer(dest: Path, package: Path = paths.NODE_PACKAGE) -> Path:
    """Write the self-extracting installer of `package` to `dest` (a file): a few lines of
    shell, then the archive. On the node it unpacks into a private temporary directory and
    runs the package's installer from there with the arguments it was given."""
    data = _archive(package)
    head = (f"#!/bin/sh\n# govhost node package {node_install.version_of(str(package))}: "
            "installs itself (made by govhost bootstrap)\nset -e\n"
            'tmp=$(mktemp -d /tmp/govhost-node-package.XXXXXX)\n'
            "trap 'rm -rf \"$tmp\"' EXIT\n")
    # the archive starts right after the shell lines; 10 digits keep their length fixed
    lines = ('tail -c +%010d "$0" | tar -xzf - -C "$tmp"\n'
             'cd "$tmp"\npython3 -m govhost_node.install "$@"\nexit 0\n')
    offset = len((head + lines % 0).encode()) + 1
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes((head + lines % offset).encode() + data)
    os.chmod(tmp, 0o700)
    os.replace(tmp, dest)
    return dest


def run(hosts: Hosts, nodes: Sequence[Node], work_dir: Path, known_hosts: Path,
        on_task: Callable[[str, str, str], None] | None = None,
        package: Path = paths.NODE_PACKAGE) -> dict[str, remote.HostResult]:
    """Bootstrap `nodes` (in parallel); a result per node. `package`: the node package to
    install (a test hands in a changed copy to try an upgrade)."""
    script = installer(work_dir / "node-package.sh", package)
    return remote.run_playbook(
        "bootstrap.yml", hosts, nodes,
        {n.name: {"govhost_bootstrap_version": version(package, n.roles)} for n in nodes},
        work_dir, known_hosts, {"govhost_node_installer": str(script)}, on_task=on_task)
