"""govhost-db: tenant databases on the node with the `db` role (run by govhost as root).

  converge SPEC.json     start MariaDB on the node's address if it is not running, then one
                         database and one user per PHP tenant with `database: true`; the user
                         may connect only from the nodes that hold the tenant's replicas.
                         Users of tenants no longer listed are dropped (no more access);
                         their databases are kept until `remove`.
  remove T DB ARCHIVE_DIR  dump tenant T's database DB into ARCHIVE_DIR (gzip, 0600), then
                         drop the database and its users
  status                 one line of JSON: running, databases, users

Every name and password is checked against a strict pattern before it reaches SQL, and
addresses must be IP literals, so a manifest can never inject SQL here.
"""
from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import subprocess
import sys
import time

from govhost_node.files import write_if_changed
from govhost_node.layout import NODE

CNF = "/etc/mysql/mariadb.conf.d/90-govhost.cnf"
RUN = "/run/mysqld"
SOCKET = f"{RUN}/mysqld.sock"
PIDFILE = f"{RUN}/mysqld.pid"
LOG = f"{NODE.logs}/mariadb.log"
NAME = re.compile(r"^gh_[a-z0-9_]{1,61}$")
PASSWORD = re.compile(r"^[a-z2-7]{16,64}$")
TENANT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def die(msg: str, code: int = 1) -> None:
    print(f"govhost-db: {msg}", file=sys.stderr)
    sys.exit(code)


def sql(statements: str, check: bool = True) -> str:
    """Run SQL as MariaDB's root through the local socket (unix_socket authentication)."""
    proc = subprocess.run(["mariadb", f"--socket={SOCKET}", "--batch", "--skip-column-names",
                           "--user=root"], input=statements, capture_output=True, text=True)
    if check and proc.returncode != 0:
        die(f"MariaDB refused: {proc.stderr.strip()}")
    return proc.stdout


def alive() -> bool:
    return subprocess.run(["mariadb-admin", f"--socket={SOCKET}", "--user=root", "ping"],
                          capture_output=True).returncode == 0


def _config(bind: str) -> bool:
    text = ("# Written by govhost: listen on this node's address for the web nodes' PHP.\n"
            f"[mysqld]\nbind-address = {bind}\nskip-name-resolve\n"
            "character-set-server = utf8mb4\ncollation-server = utf8mb4_unicode_ci\n")
    return write_if_changed(CNF, text, 0o644)


def _stop() -> None:
    if os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", "stop", "mariadb"], check=False)
        return
    try:
        with open(PIDFILE) as f:
            pid = int(f.read().strip())
        os.kill(pid, 15)
    except (OSError, ValueError):
        return
    for _ in range(300):
        if not alive():
            return
        time.sleep(0.1)


def ensure_running(bind: str) -> None:
    changed = _config(bind)
    if alive() and not changed:
        return
    if alive():
        _stop()                    # a new bind address needs a restart
    if os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", "enable", "--now", "mariadb"], check=False)
        subprocess.run(["systemctl", "restart", "mariadb"], check=False)
    else:
        # No init system (the lab): start the server the way its unit would.
        os.makedirs(RUN, exist_ok=True)
        subprocess.run(["chown", "mysql:mysql", RUN], check=True)
        if not os.path.isdir("/var/lib/mysql/mysql"):
            subprocess.run(["mariadb-install-db", "--user=mysql", "--skip-test-db"],
                           check=True, stdout=subprocess.DEVNULL)
        os.makedirs(os.path.dirname(LOG), exist_ok=True)
        with open(LOG, "ab") as log:
            subprocess.Popen(["mariadbd", "--user=mysql", f"--socket={SOCKET}",
                              f"--pid-file={PIDFILE}"], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        if alive():
            return
        time.sleep(0.1)
    die(f"MariaDB did not start on {bind}; see {LOG} or `journalctl -u mariadb`")


def _q(value: str) -> str:
    return "'" + value + "'"       # only ever called on values checked against the patterns


def converge(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    bind = str(ipaddress.ip_address(spec["bind"]))
    wanted: dict[tuple[str, str], tuple[str, str]] = {}   # (user, host) -> (db, password)
    for d in spec["databases"]:
        db, user, pw = d["database"], d["user"], d["password"]
        if not (NAME.match(db) and NAME.match(user) and PASSWORD.match(pw)):
            die(f"refusing database entry for tenant {d.get('tenant')!r}: bad name or password")
        for host in d["hosts"]:
            wanted[(user, str(ipaddress.ip_address(host)))] = (db, pw)
    ensure_running(bind)
    out = []
    for db in sorted({db for db, _ in wanted.values()}):
        out.append(f"CREATE DATABASE IF NOT EXISTS `{db}` "
                   "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    for (user, host), (db, pw) in sorted(wanted.items()):
        out += [f"CREATE USER IF NOT EXISTS {_q(user)}@{_q(host)} IDENTIFIED BY {_q(pw)};",
                f"ALTER USER {_q(user)}@{_q(host)} IDENTIFIED BY {_q(pw)};",
                f"GRANT ALL PRIVILEGES ON `{db}`.* TO {_q(user)}@{_q(host)};"]
    have = [tuple(line.split("\t")) for line in sql(
        "SELECT User, Host FROM mysql.user WHERE User LIKE 'gh\\_%';").splitlines() if line]
    dropped = [(u, h) for u, h in have if (u, h) not in wanted and NAME.match(u)]
    for user, host in dropped:
        host = str(ipaddress.ip_address(host))
        out.append(f"DROP USER IF EXISTS {_q(user)}@{_q(host)};")
    out += _lockdown()
    sql("\n".join(out) + "\nFLUSH PRIVILEGES;\n")
    print(json.dumps({"databases": len({db for db, _ in wanted.values()}),
                      "users": len(wanted), "dropped": len(dropped)}))


def _lockdown() -> list[str]:
    """Accounts nobody should have: anonymous users, and root (or any account with global
    privileges other than MariaDB's own local ones) reachable from anywhere but this machine.
    Root stays on the local socket (unix_socket authentication), which govhost uses."""
    local = ("localhost", "127.0.0.1", "::1")
    rows = [tuple(line.split("\t")) for line in sql(
        "SELECT User, Host FROM mysql.user WHERE User = '' OR User = 'root' OR "
        "(Super_priv = 'Y' AND User NOT LIKE 'gh\\_%');").splitlines() if line]
    out = []
    for user, host in rows:
        if (user == "root" or user in ("mariadb.sys", "mysql")) and host in local:
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.%:-]{0,80}", user + host):
            continue        # nothing govhost or Debian would have made; reported, not dropped
        out.append(f"DROP USER IF EXISTS '{user}'@'{host}';")
    return out


def remove(tenant: str, db: str, archive_dir: str) -> None:
    if not TENANT.match(tenant) or not NAME.match(db):
        die(f"bad tenant or database name {tenant!r} {db!r}")
    if not alive():
        print(json.dumps({"removed": None}))
        return
    exists = sql(f"SHOW DATABASES LIKE '{db}';").strip()
    archive = None
    if exists:
        os.makedirs(archive_dir, mode=0o700, exist_ok=True)
        archive = os.path.join(archive_dir, f"{tenant}-{time.strftime('%Y%m%dT%H%M%S')}.sql.gz")
        dump = subprocess.run(["mariadb-dump", f"--socket={SOCKET}", "--user=root",
                               "--single-transaction", "--databases", db],
                              capture_output=True)
        if dump.returncode != 0:
            die(f"dump of {db} failed, nothing dropped: {dump.stderr.decode().strip()}")
        fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb") as gz:
            gz.write(dump.stdout)
    users = [line.split("\t") for line in sql(
        f"SELECT User, Host FROM mysql.user WHERE User = '{db}';").splitlines() if line]
    stmts = [f"DROP USER IF EXISTS {_q(u)}@{_q(str(ipaddress.ip_address(h)))};"
             for u, h in users]
    sql("\n".join(stmts + [f"DROP DATABASE IF EXISTS `{db}`;"]) + "\n")
    print(json.dumps({"removed": db, "archive": archive}))


def status() -> None:
    if not alive():
        print(json.dumps({"running": False}))
        return
    dbs = sql("SELECT COUNT(*) FROM information_schema.SCHEMATA "
              "WHERE SCHEMA_NAME LIKE 'gh\\_%';").strip()
    users = sql("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'gh\\_%';").strip()
    print(json.dumps({"running": True, "databases": int(dbs or 0), "users": int(users or 0)}))


COMMANDS = {"converge": converge, "remove": remove, "status": status}

def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        die("usage: govhost-db " + "|".join(COMMANDS) + " ...", 2)
    os.umask(0o022)
    COMMANDS[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
