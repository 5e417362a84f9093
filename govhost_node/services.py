"""The services that follow the live release (`current`): nginx, PHP-FPM, the db node's
databases, backups, security updates, the metrics credentials, the node's own agents.
Each is started, reloaded or stopped after a switch; under systemd through its units, on the
overlay lab nodes (no init system) by govhost-node itself."""
from __future__ import annotations

import glob
import os
import re
import resource
import shutil
import signal
import time

from govhost_node.layout import Layout
from govhost_node.system import (
    active,
    alive,
    die,
    has,
    install_copy,
    ok,
    read_pid,
    run,
    same_file,
    signal_pidfile,
    start_detached,
    under_systemd,
    warn,
)

NGINX_PIDFILE = "govhost-nginx"
FPM_PIDFILE = "govhost-php-fpm"
FPM_SOCKETS = "govhost/php"
METRICS_FILES = ("node.crt", "node.key", "web.yml", "agent.json")


def open_files_limit() -> int:
    """nginx opens two log files per tenant in the master (and in `nginx -t`): thousands of
    tenants need far more than the usual 1024 descriptors. The hard limit, for this process
    and what it starts."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1_048_576 if hard == resource.RLIM_INFINITY else hard


def raise_open_files() -> int:
    n = open_files_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return n


def nginx_running(lay: Layout) -> bool:
    return alive(lay.pidfile(NGINX_PIDFILE))


def reload_or_start_nginx(lay: Layout) -> None:
    pid = read_pid(lay.pidfile(NGINX_PIDFILE)) if nginx_running(lay) else None
    if pid is not None:
        # A master started with a low descriptor limit could not open the logs of a bigger
        # release; raise its limit in place so the reload does not fail.
        n = open_files_limit()
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (n, n))
        except (OSError, ValueError):
            pass
        # HUP is what `nginx -s reload` sends, without parsing the whole config first to
        # find the pid file (a fifth of a second at 1,000 tenants).
        os.kill(pid, signal.SIGHUP)
    elif under_systemd(lay):
        run(["systemctl", "start", "govhost-nginx"])
    else:
        run(["nginx", "-c", f"{lay.current}/nginx.conf"])


def _version_key(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def php_fpm() -> str | None:
    """The newest php-fpm the node has (php-fpm8.2, …)."""
    found = sorted(glob.glob("/usr/sbin/php-fpm*"), key=_version_key)
    return found[-1] if found else None


def php_sync(lay: Layout) -> None:
    """PHP-FPM follows `current`: started with its prefix at /etc/govhost/current, a USR2
    makes the master re-read the pools of whatever release `current` points to now."""
    pidfile = lay.pidfile(FPM_PIDFILE)
    if os.path.isfile(f"{lay.current}/php-fpm.conf"):
        sockets = os.path.join(lay.run, FPM_SOCKETS)
        os.makedirs(sockets, exist_ok=True)
        os.chmod(sockets, 0o755)
        if alive(pidfile):
            signal_pidfile(pidfile, signal.SIGUSR2)
        elif under_systemd(lay):
            run(["systemctl", "start", "govhost-php-fpm"])
        else:
            fpm = php_fpm()
            if fpm is None:
                raise die("the release has PHP sites but php-fpm is not installed")
            run([fpm, "-p", lay.current, "-y", f"{lay.current}/php-fpm.conf"])
    elif under_systemd(lay) and active("govhost-php-fpm"):
        run(["systemctl", "stop", "govhost-php-fpm"])         # no PHP site here any more
    elif alive(pidfile):
        signal_pidfile(pidfile, signal.SIGQUIT)               # no PHP site here any more


def db_sync(lay: Layout) -> None:
    """The db node: tenant databases and users follow `current` too."""
    spec = f"{lay.current}/databases.json"
    if os.path.isfile(spec):
        run([f"{lay.sbin}/govhost-db", "converge", spec], quiet=True)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def backup_sync(lay: Layout) -> None:
    """The repository account (backup node) and the timers follow `current`. A problem here
    must not take the sites down; it shows in the next backup run, which fails loudly."""
    tool = f"{lay.sbin}/govhost-backup"
    if os.path.isfile(f"{lay.current}/backup.json") and _executable(tool):
        if not ok([tool, "install"], keep_stderr=True):
            warn("backup set-up failed (sites are unaffected)")


def updates_sync(lay: Layout) -> None:
    """unattended-upgrades and this node's slot follow `current` (a problem here must not
    take the sites down)."""
    tool = f"{lay.sbin}/govhost-updates"
    spec = f"{lay.current}/updates.json"
    if os.path.isfile(spec) and _executable(tool) and has("unattended-upgrade"):
        if not ok([tool, "sync", spec], keep_stderr=True):
            warn("update set-up failed (sites are unaffected)")


def metrics_sync(lay: Layout) -> bool:
    """TLS and basic auth of the metrics: the release's metrics/ files are kept in a place of
    their own (the exporters read them there, whatever release is live); a change restarts
    the node exporter and the agent. True when they changed."""
    src, dst = f"{lay.current}/metrics", lay.metrics
    changed = False
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
        os.chmod(dst, 0o755)
        for name in METRICS_FILES:
            if same_file(f"{src}/{name}", f"{dst}/{name}"):
                continue
            install_copy(f"{src}/{name}", f"{dst}/{name}", 0o644 if name == "node.crt" else 0o600)
            changed = True
    elif os.path.isdir(dst):
        shutil.rmtree(dst)
        changed = True
    if not changed:
        return False
    if under_systemd(lay):
        ok(["systemctl", "try-restart", "govhost-agent", "govhost-node-exporter"])
    else:
        for name in ("govhost-agent", "govhost-node-exporter"):
            pidfile = lay.pidfile(name)
            if alive(pidfile):
                signal_pidfile(pidfile)
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass
        time.sleep(0.2)
    print("metrics: credentials changed", flush=True)
    return True


def install_logrotate(lay: Layout) -> None:
    src = f"{lay.current}/logrotate.conf"
    if os.path.isfile(src) and os.path.isdir(lay.logrotate_dir):
        install_copy(src, f"{lay.logrotate_dir}/govhost-tenants", 0o644)


def exporter(lay: Layout, host: str) -> None:
    """Become the node exporter on `host`, with TLS and basic auth once a release has given
    them."""
    argv = ["prometheus-node-exporter", f"--web.listen-address={host}:9100"]
    if os.path.isfile(f"{lay.metrics}/web.yml"):
        argv.append(f"--web.config.file={lay.metrics}/web.yml")
    os.execvp(argv[0], argv)


def daemon(lay: Layout, name: str, *args: str) -> None:
    """(Re)start a node program without systemd (the overlay lab nodes)."""
    program, pidfile = f"{lay.sbin}/{name}", lay.pidfile(name)
    if not _executable(program):
        return
    # A program older than its installed script (a new bootstrap) is restarted.
    if alive(pidfile) and os.path.getmtime(program) > os.path.getmtime(pidfile):
        signal_pidfile(pidfile)
        time.sleep(0.2)
    if not alive(pidfile):
        log = f"{lay.logs}/{name.removeprefix('govhost-')}.log"
        start_detached([program, *args], log, pidfile)


_ADDRESS = re.compile(r"[0-9a-fA-F.:]+")


def agents(lay: Layout, address: str) -> None:
    """The node's agent, search server, message service, tamper watcher and node exporter,
    unless they run."""
    if not _ADDRESS.fullmatch(address):
        raise die(f"bad address '{address}'")
    host = f"[{address}]" if ":" in address else address
    os.makedirs(lay.logs, exist_ok=True)
    units = lay.systemd_units
    if under_systemd(lay) and os.path.isfile(f"{units}/govhost-agent.service"):
        run(["systemctl", "start", "govhost-agent", "govhost-node-exporter"])
        for unit in ("govhost-search", "govhost-tamper", "govhost-messages"):
            if os.path.isfile(f"{units}/{unit}.service"):
                run(["systemctl", "start", unit])
        return
    metrics = lay.metrics
    daemon(lay, "govhost-agent", "--listen", f"{host}:9273", "--web-config",
           f"{metrics}/agent.json")
    daemon(lay, "govhost-search", "serve", "--listen", f"{host}:9275")
    daemon(lay, "govhost-messages", "serve", "--listen", f"{host}:9276")
    daemon(lay, "govhost-tamper", "watch")
    exporter_pid = lay.pidfile("govhost-node-exporter")
    if has("prometheus-node-exporter") and not alive(exporter_pid):
        start_detached([lay.tool, "exporter", host], f"{lay.logs}/node-exporter.log",
                       exporter_pid)
