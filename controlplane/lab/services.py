"""The county's services for the lab: an ACME CA (Pebble), its test DNS (pebble-challtestsrv)
and the county DNS server (BIND), each a real process on its own loopback address.

In production these are the public CA and the county's own DNS; in the lab they let
issuance, DNS-01 updates and renewal run for real. Pebble makes a new root at each start
(fetched from its management port into `root.pem`), so certificates from an earlier Pebble
do not verify against a later one: `govhost cert renew --force` issues again.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from controlplane.core.errors import LabError
from controlplane.lab.machines import LAB_ROOT
from controlplane.tls import certs as tls_certs

SERVICES = LAB_ROOT / "services"
PEBBLE_ADDRESS = "127.0.2.1"
# BIND listens only on addresses configured on an interface; lo has 127.0.0.1 alone.
BIND_ADDRESS = "127.0.0.1"
BIND_PORT = 1053
CHALLTEST_ADDRESS = "127.0.2.2"
TSIG_KEY = "govhost-acme"
DNS_KEY = "govhost-dns"


@dataclass(frozen=True)
class Service:
    name: str
    pid: int | None
    running: bool
    address: str
    directory: str


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid(d: Path) -> int | None:
    """The service's pid if it runs (a zombie does not: nothing may reap it here). The pid
    must still be the service's: each runs in its own directory, and a pid file left from a
    day ago can name another process now (Pebble was then taken as running, and `_stop`
    would have signalled a stranger)."""
    try:
        pid = int((d / "pid").read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError, IndexError):
        return None
    if cwd != str(d.resolve()):
        return None
    return None if state in ("Z", "X") else pid


def _spawn(d: Path, argv: list[str], env: dict[str, str], address: str, port: int,
           what: str) -> int:
    log = open(d / "log", "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env={**os.environ, **env}, start_new_session=True, cwd=d)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = (d / "log").read_text(errors="replace")[-800:]
            raise LabError(f"{what} did not start:\n{tail}")
        if _port_open(address, port):
            (d / "pid").write_text(f"{proc.pid}\n")
            return proc.pid
        time.sleep(0.1)
    proc.kill()
    raise LabError(f"{what} did not listen on {address}:{port} within 20 s")


def _stop(d: Path) -> bool:
    pid = _pid(d)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if _pid(d) is None:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    (d / "pid").unlink(missing_ok=True)
    return True


def bind_up(zone: str, web: list[str], d: Path = SERVICES / "bind",
            address: str = BIND_ADDRESS, port: int = BIND_PORT) -> Path:
    """An authoritative BIND for `zone` (every name -> `web`) that accepts RFC 2136 updates
    signed with two keys, each allowed only its own: govhost-acme the `_acme-challenge` TXT
    records, govhost-dns the sites' A and AAAA records (`govhost dns push`). Returns the
    govhost-acme secret file; govhost-dns's lies beside it."""
    d.mkdir(parents=True, exist_ok=True)
    for key in (TSIG_KEY, DNS_KEY):
        f = d / f"{key}.secret"
        if not f.exists():
            f.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        f.chmod(0o600)
    secret_file = d / f"{TSIG_KEY}.secret"
    conf = d / "named.conf"
    if _pid(d) and conf.exists() and DNS_KEY in conf.read_text():
        return secret_file
    _stop(d)                     # one started by an older govhost, without govhost-dns
    secret = secret_file.read_text().strip()
    dns_secret = (d / f"{DNS_KEY}.secret").read_text().strip()
    a = "".join(f"@ A {ip}\n* A {ip}\n" for ip in web)
    (d / "zone").write_text(
        f"$TTL 60\n@ SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n"
        f"@ NS ns.{zone}.\nns A {address}\n{a}")
    for stale in d.glob("zone.jnl"):
        stale.unlink()
    (d / "named.conf").write_text(f"""
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    listen-on port {port} {{ {address}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
key "{TSIG_KEY}" {{ algorithm hmac-sha256; secret "{secret}"; }};
key "{DNS_KEY}" {{ algorithm hmac-sha256; secret "{dns_secret}"; }};
zone "{zone}" {{
    type primary;
    file "{d}/zone";
    update-policy {{
        grant {TSIG_KEY} subdomain {zone}. TXT;
        grant {DNS_KEY} subdomain {zone}. A AAAA;
    }};
}};
""")
    _spawn(d, ["/usr/sbin/named", "-g", "-c", str(d / "named.conf")], {}, address, port,
           "BIND (named)")
    return secret_file


def _pebble_tls(d: Path, address: str) -> Path:
    """A CA and certificate for Pebble's own HTTPS (the ACME API)."""
    ca = d / "tls-ca.pem"
    if not ca.exists():
        now = time.time()
        root, root_key = tls_certs.make_root("govhost lab Pebble API CA", now)
        key = tls_certs.new_key()
        leaf = tls_certs.sign_leaf(root, root_key, key, ["localhost"], now, 3650, ips=[address])
        (d / "tls-key.pem").write_bytes(key)
        (d / "tls-cert.pem").write_bytes(leaf)
        ca.write_bytes(root)
    return ca


def pebble_up(d: Path = SERVICES / "pebble", address: str = PEBBLE_ADDRESS, port: int = 14000,
              dns: str = f"{BIND_ADDRESS}:{BIND_PORT}", validity_seconds: int | None = 90 * 86400,
              env: dict[str, str] | None = None) -> Path:
    """Pebble with its default chaos (5 % of good nonces refused, 0-15 s validation delay),
    checking challenges on port 80 and resolving through `dns`, issuing certificates valid
    90 days as Let's Encrypt does. Returns its root file."""
    d.mkdir(parents=True, exist_ok=True)
    ca = _pebble_tls(d, address)
    if not _pid(d):
        cfg = {"pebble": {
            "listenAddress": f"{address}:{port}",
            "managementListenAddress": f"{address}:{port + 1000}",
            "certificate": str(d / "tls-cert.pem"), "privateKey": str(d / "tls-key.pem"),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}
        if validity_seconds:
            cfg["pebble"]["certificateValidityPeriod"] = validity_seconds
        (d / "pebble.json").write_text(json.dumps(cfg, indent=2))
        _spawn(d, ["pebble", "-config", str(d / "pebble.json"), "-dnsserver", dns], env or {},
               address, port, "Pebble")
        (d / "root.pem").unlink(missing_ok=True)
    root = d / "root.pem"
    if not root.exists():
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://{address}:{port + 1000}/roots/0", context=ctx,
                                    timeout=10) as r:
            root.write_bytes(r.read())
    return root


def challtestsrv_up(d: Path = SERVICES / "challtestsrv", address: str = CHALLTEST_ADDRESS,
                    default_ipv4: str = "10.77.0.101") -> str:
    """pebble-challtestsrv as a DNS server answering every name with `default_ipv4` (names
    are pointed elsewhere through its management API). Returns DNS address:port."""
    d.mkdir(parents=True, exist_ok=True)
    if not _pid(d):
        _spawn(d, ["pebble-challtestsrv", "-dns01", f"{address}:8053", "-http01", "",
                   "-https01", "", "-tlsalpn01", "", "-management", f"{address}:8055",
                   "-defaultIPv4", default_ipv4, "-defaultIPv6", ""], {}, address, 8055,
               "pebble-challtestsrv")
    return f"{address}:8053"


def point(name: str, addresses: list[str], mgmt: str = f"{CHALLTEST_ADDRESS}:8055") -> None:
    """Make challtestsrv answer `name` with `addresses` only (its add-a appends to what the
    name had, so the old answers are cleared first)."""
    for path, body in (("clear-a", {"host": name}),
                       ("add-a", {"host": name, "addresses": addresses})):
        req = urllib.request.Request(f"http://{mgmt}/{path}", method="POST",
                                     data=json.dumps(body).encode())
        urllib.request.urlopen(req, timeout=5).read()


def up(zone: str, web: list[str]) -> list[Service]:
    bind_up(zone, web)
    pebble_up()
    return status()


def status() -> list[Service]:
    out = []
    for name, address in (("bind", BIND_ADDRESS), ("pebble", PEBBLE_ADDRESS),
                          ("challtestsrv", CHALLTEST_ADDRESS)):
        d = SERVICES / name
        pid = _pid(d)
        out.append(Service(name, pid, pid is not None, address, str(d)))
    return out


def down() -> int:
    return sum(_stop(SERVICES / name) for name in ("pebble", "challtestsrv", "bind"))


def stop_dir(d: Path) -> bool:
    """Stop the service whose state is in `d` (tests start their own)."""
    return _stop(d)
