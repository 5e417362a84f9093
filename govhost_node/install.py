"""Bring a node to one version of this package: the package itself, its commands, govhost's
systemd units and services, and the distro's default services out of the way.

Bootstrap sends the package, with this program in it, as one file and runs it here
(`controlplane/sites/bootstrap.py` makes the file, one Ansible task runs it). Before, these
steps were some twenty Ansible tasks with loops over thirty items: about two minutes a
bootstrap on the lab's two cores, most of it Ansible's round trips. Here they take about a
second. Every step is idempotent and prints `changed: WHAT` when it changed something, so a
second bootstrap reports nothing changed.

The switch to a new version is safe for a command started meanwhile (keepalived runs its
probe every second): the new version's directory is complete and compiled before any
command names it, each command is replaced by one rename, and the version before stays.
"""
from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from govhost_node.files import write_if_changed
from govhost_node.layout import NODE, Layout

# The node commands and the module each one runs (its `main`).
COMMANDS = {
    "govhost-node": "node",
    "govhost-tenants": "tenants",
    "govhost-db": "db",
    "govhost-backup": "backup",
    "govhost-agent": "agent",
    "govhost-search": "search",
    "govhost-tamper": "tamper",
    "govhost-updates": "updates",
    "govhost-secaudit": "secaudit",
    "govhost-visits": "visits",
    "govhost-unpack": "unpack",
    "govhost-messages": "message_server",
}
# Enabled, not started: nginx and PHP-FPM start when a release is live, the firewall at boot.
ENABLED = ("govhost-nginx", "govhost-php-fpm", "govhost-firewall", "logrotate.timer")
# Enabled and running from the first bootstrap on.
STARTED = ("govhost-agent", "govhost-node-exporter", "govhost-search", "govhost-tamper",
           "govhost-messages")
# What a change of the commands, the units or the listen address restarts (the commands are
# long-running programs of the package; the node exporter is Debian's, it only listens).
RESTART_ON_COMMANDS = ("govhost-agent", "govhost-search", "govhost-tamper", "govhost-messages")
RESTART_ON_SETTINGS = STARTED
DIRECTORIES = ("releases", "tenant_logs", "sites")
HERE = os.path.dirname(os.path.abspath(__file__))

Run = Callable[..., subprocess.CompletedProcess]


def files_of(package: str) -> list[str]:
    """The package's files, relative and sorted: what a version is made of."""
    found = []
    for top, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.relpath(os.path.join(top, n), package) for n in names
                  if not n.endswith((".pyc", ".pyo"))]
    return sorted(found)


def version_of(package: str) -> str:
    """A hash of the package's file names and contents; the control machine computes the
    same value from its own copy."""
    h = hashlib.sha256()
    for rel in files_of(package):
        with open(os.path.join(package, rel), "rb") as f:
            h.update(rel.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()[:16]


def install_version(source: str, lay: Layout) -> tuple[str, bool]:
    """The package in `source` as versions/<version>/govhost_node, compiled; a directory left
    half made by an interrupted run is made again. Returns (version, whether it changed)."""
    version = version_of(source)
    versions = f"{lay.lib}/versions"
    dest = f"{versions}/{version}"
    if os.path.isdir(f"{dest}/govhost_node") and version_of(f"{dest}/govhost_node") == version:
        return version, False
    os.makedirs(versions, mode=0o755, exist_ok=True)
    tmp = f"{versions}/.{version}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, f"{tmp}/govhost_node",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for top, dirs, names in os.walk(tmp):
        os.chmod(top, 0o755)
        for n in names:
            os.chmod(os.path.join(top, n), 0o644)
    # compiled before any command names it: the first runs do not each compile it (named
    # by the directory they will be in, so that a traceback names the real file)
    if not compileall.compile_dir(tmp, quiet=1, ddir=dest):
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"the node package {version} does not compile on this node")
    if os.path.lexists(dest):
        shutil.rmtree(dest)
    os.rename(tmp, dest)
    return version, True


def command_text(lay: Layout, name: str, module: str, version: str) -> str:
    # -I: neither the environment (PYTHONPATH, PYTHONSTARTUP, …) nor the current or the
    # script's directory can put a module of someone else's in front of the package's own
    return (f"#!/usr/bin/python3 -I\n"
            f"# {name}: govhost's node package, installed by bootstrap (do not edit here).\n"
            f"import sys\n"
            f'sys.path.insert(0, "{lay.lib}/versions/{version}")\n'
            f"from govhost_node.{module} import main\n"
            f"main()\n")


def install_commands(lay: Layout, version: str) -> list[str]:
    """Each command names this version; returns the commands replaced."""
    os.makedirs(lay.sbin, mode=0o755, exist_ok=True)
    return [name for name, module in COMMANDS.items()
            if write_if_changed(f"{lay.sbin}/{name}", command_text(lay, name, module, version),
                                0o755)]


def point_current(lay: Layout, version: str) -> str:
    """`current` names this version (for scripts the control machine runs on the node);
    returns what it named before ("" if nothing)."""
    link, want = f"{lay.lib}/current", f"versions/{version}"
    before = os.readlink(link) if os.path.islink(link) else ""
    if before != want:
        tmp = f"{link}.govhost-new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(want, tmp)
        os.replace(tmp, link)
    return before


def prune(lay: Layout, version: str, before: str) -> list[str]:
    """At an upgrade, the versions before the last go: this one and the one before stay (a
    command started before the switch may still import it). Also the single-directory
    install of older govhost, and what interrupted runs left."""
    removed = []
    legacy = f"{lay.lib}/govhost_node"
    if os.path.isdir(legacy):
        shutil.rmtree(legacy)
        removed.append("the single-directory install")
    if before == f"versions/{version}":
        return removed
    versions = f"{lay.lib}/versions"
    keep = {version, before.removeprefix("versions/")}
    for name in sorted(os.listdir(versions)):
        if name not in keep:
            shutil.rmtree(f"{versions}/{name}", ignore_errors=True)
            removed.append(f"versions/{name}")
    return removed


def directories(lay: Layout) -> list[str]:
    made = []
    for path in (lay.releases, f"{lay.logs}/tenants", lay.sites):
        if not os.path.isdir(path):
            made.append(path)
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)
    return made


def listen_line(address: str) -> str:
    return f"GOVHOST_LISTEN={'[' + address + ']' if ':' in address else address}\n"


class Systemd:
    """systemctl, as the steps below need it; `run` is subprocess.run (a test hands in its
    own)."""

    def __init__(self, run: Run = subprocess.run) -> None:
        self._run = run

    def ok(self, *args: str) -> bool:
        return self._run(["systemctl", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).returncode == 0

    def do(self, *args: str) -> None:
        proc = self._run(["systemctl", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"systemctl {' '.join(args)} failed: {proc.stdout.strip()}")

    def unit_files(self, pattern: str) -> list[str]:
        proc = self._run(["systemctl", "list-unit-files", pattern, "--no-legend"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return [line.split()[0] for line in proc.stdout.splitlines() if line.split()]


MARIADB_DATA = "/var/lib/mysql"


def holds_databases(data: str = MARIADB_DATA) -> bool:
    """Whether this node's MariaDB holds a unit's database (govhost names them `gh_*`)."""
    try:
        return any(e.name.startswith("gh_") and e.is_dir(follow_symlinks=False)
                   for e in os.scandir(data))
    except OSError:
        return False


def disable_defaults(sd: Systemd, lay: Layout, db: bool) -> list[str]:
    """The services Debian starts with its packages that would hold wildcard ports (the lab's
    nodes share one network stack; a real server would expose them) or compete with
    govhost's own: nginx's default server, the default PHP-FPM pool, Debian's node exporter
    on *:9100 and, unless this is the db node, MariaDB. Not a MariaDB that holds govhost's
    databases (`gh_*` in its data directory): a node that left `db` in hosts.yaml still
    serves them, as apply does not move databases; stopping it at a later bootstrap (a new
    node package) would take every PHP site's data offline. The operator stops it once the
    databases live elsewhere."""
    units = ["nginx.service", "prometheus-node-exporter.service",
             *sd.unit_files("php*-fpm.service")]
    if not db and not holds_databases():
        units.append("mariadb.service")
    changed = []
    for unit in units:
        if not sd.unit_files(unit):
            continue
        if sd.ok("is-enabled", "-q", unit) or sd.ok("is-active", "-q", unit):
            if not sd.ok("disable", "--now", "-q", unit):
                sd.do("stop", unit)
            changed.append(unit)
        # one that failed to start before (a port taken) would stay listed as failed
        if sd.ok("is-failed", "-q", unit):
            sd.do("reset-failed", unit)
            changed.append(unit)
    # nginx's default site would answer on *:80 if anything ever started the stock nginx
    default_site = "/etc/nginx/sites-enabled/default"
    if os.path.lexists(default_site):
        os.unlink(default_site)
        changed.append("nginx's default site")
    return changed


def services(lay: Layout, address: str, db: bool, sd: Systemd, commands_changed: bool
             ) -> list[str]:
    """Units, the agent's listen address, enabled and started services, restarts of what
    changed. Returns what it changed."""
    changed = []
    settings = write_if_changed(f"{lay.etc_default}/govhost-agent", listen_line(address))
    if settings:
        changed.append("the agent's listen address")
    units_dir = os.path.join(HERE, "units")
    new_units = [u for u in sorted(os.listdir(units_dir))
                 if write_if_changed(f"{lay.systemd_units}/{u}",
                                     open(os.path.join(units_dir, u), encoding="utf-8").read())]
    if new_units:
        changed.append("units " + " ".join(new_units))
        sd.do("daemon-reload")
    changed += [f"disabled {u}" for u in disable_defaults(sd, lay, db)]
    for unit in ENABLED + (("mariadb",) if db else ()):
        if not sd.ok("is-enabled", "-q", unit):
            sd.do("enable", "-q", unit)
            changed.append(f"enabled {unit}")
    started = set()
    for unit in STARTED:
        if not (sd.ok("is-enabled", "-q", unit) and sd.ok("is-active", "-q", unit)):
            sd.do("enable", "--now", "-q", unit)
            started.add(unit)
            changed.append(f"started {unit}")
    restart = set(RESTART_ON_COMMANDS if commands_changed else ())
    if settings or new_units:
        restart |= set(RESTART_ON_SETTINGS)
    for unit in sorted(restart - started):
        sd.do("restart", unit)
        changed.append(f"restarted {unit}")
    return changed


def converge_tenants(lay: Layout, run: Run = subprocess.run) -> bool:
    """A new node package may write the tenant accounts' system settings differently (sshd's
    drop-in, say): converge them now, not at the next release that changes tenants."""
    spec = f"{lay.current}/tenants.json"
    if not os.path.isfile(spec):
        return False
    proc = run([f"{lay.sbin}/govhost-tenants", "converge", spec], stdout=subprocess.PIPE,
               stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"govhost-tenants converge failed: {proc.stdout.strip()[-2000:]}")
    return True


def install(source: str, lay: Layout, address: str, roles: list[str], boot_version: str,
            sd: Systemd | None) -> list[str]:
    """Every step, in order; `sd` is None where the node runs no systemd (the lab's overlay
    nodes). Returns what changed; the bootstrap version is recorded last, so a run that
    failed half way is run again by the next apply."""
    changed = [f"made {d}" for d in directories(lay)]
    version, new = install_version(source, lay)
    if new:
        changed.append(f"installed version {version}")
    commands = install_commands(lay, version)
    if commands:
        changed.append("commands " + " ".join(commands))
    before = point_current(lay, version)
    if before != f"versions/{version}":
        changed.append(f"current: {before or 'none'} -> versions/{version}")
    changed += [f"removed {r}" for r in prune(lay, version, before)]
    if sd is not None:
        changed += services(lay, address, "db" in roles, sd, bool(commands))
    if commands and converge_tenants(lay):
        changed.append("tenant accounts converged")
    if write_if_changed(lay.bootstrap_version, f"{boot_version}\n"):
        changed.append(f"bootstrap version {boot_version}")
    return changed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="govhost node package installer",
                                description="Install this node package on this node.")
    p.add_argument("--address", required=True, help="the node's own address")
    p.add_argument("--roles", default="web", help="comma-separated: web, db")
    p.add_argument("--bootstrap-version", required=True)
    p.add_argument("--under", help="a test's directory standing for / (no systemd there)")
    a = p.parse_args(argv)
    lay = Layout.under(a.under) if a.under else NODE
    systemd = a.under is None and os.path.isdir("/run/systemd/system")
    for line in install(HERE, lay, a.address, a.roles.split(","), a.bootstrap_version,
                        Systemd() if systemd else None):
        print(f"changed: {line}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
