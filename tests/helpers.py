"""Builders shared by the tests: minimal manifests and generated counties."""
from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import yaml

from controlplane.lab import machines as lab

REPO = Path(__file__).resolve().parents[1]

CLUSTER = {
    "domain": "qingshui.gov.cn",
    "name": "青水县人民政府",
    "portal": {"title": "青水县人民政府门户网站"},
}


def hosts(n: int = 3, capacity: int = 5000) -> dict:
    return {
        "ssh": {"user": "root", "key": "/var/lib/govhost/lab/id_ed25519"},
        "nodes": [{"name": f"n{i}", "address": f"10.77.0.{10 + i}", "capacity": capacity}
                  for i in range(1, n + 1)],
    }


def tenant(name: str, **extra) -> dict:
    doc = {
        "name": name,
        "title": f"测试单位 {name}",
        "kind": "department",
        "contact": {"name": "王芳", "email": f"web@{name}.qingshui.gov.cn", "phone": "0571-1234"},
    }
    doc.update(extra)
    return doc


def write_inventory(root: Path, tenants: list[dict], nodes: int = 3, cluster: dict | None = None,
                    host_doc: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tenants").mkdir(exist_ok=True)
    (root / "cluster.yaml").write_text(yaml.safe_dump(cluster or CLUSTER, allow_unicode=True))
    (root / "hosts.yaml").write_text(yaml.safe_dump(host_doc or hosts(nodes)))
    for t in tenants:
        (root / "tenants" / f"{t['name']}.yaml").write_text(yaml.safe_dump(t, allow_unicode=True))
    return root


def generated_county(root: Path, count: int, nodes: int = 3) -> Path:
    """A county with ``count`` units, some townships with sections, for scale tests."""
    docs = []
    for i in range(count):
        extra = {}
        if i % 10 == 0:
            extra = {"kind": "township", "sections": [{"name": f"cun{j}", "title": f"第{j}村"}
                                                      for j in range(3)]}
        docs.append(tenant(f"unit{i:04d}", **extra))
    return write_inventory(root, docs, nodes)


def nginx_test(release_files: dict[str, bytes], dest: Path) -> subprocess.CompletedProcess:
    """Write a release like govhost-node stage does and run the real `nginx -t` on it."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel, data in release_files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (dest / "release-id.conf").write_text(
        'location = /release {\n    return 200 "0000000000000000";\n}\n')
    for t in release_files["tenants.txt"].decode().split():
        os.makedirs(f"/var/log/govhost/tenants/{t}", exist_ok=True)
    if "waf/main.conf" in release_files:
        from controlplane.sites import waf
        main = Path(waf.main_path(release_files["waf/main.conf"]))
        main.parent.mkdir(parents=True, exist_ok=True)
        main.write_bytes(release_files["waf/main.conf"])
    # In a network namespace of its own that may bind any address, as a lab node may
    # (ip_nonlocal_bind): `nginx -t` binds every listener, and the nodes' addresses (own and
    # floating) live on the lab's network, not on this machine.
    return subprocess.run(["unshare", "--net", "sh", "-c",
                           "ip link set lo up && sysctl -qw net.ipv4.ip_nonlocal_bind=1 "
                           "net.ipv6.ip_nonlocal_bind=1 && exec nginx -t -c \"$1\"", "sh",
                           str(dest / "nginx.conf")], capture_output=True, text=True)


def bench_json(name: str, *args: str, timeout: float = 300) -> dict:
    """Run bench/`name`.py with `args` and `--json` in this Python; its figures (the JSON
    object on its last line)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *args, "--json"],
                         capture_output=True, text=True, timeout=timeout, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def can_run_nginx() -> bool:
    return os.geteuid() == 0 and shutil.which("nginx") is not None


def lab_ssh(address: str, command: str, data: bytes | None = None) -> str:
    """Run `command` as root on a lab node; its output (raises if it fails)."""
    out = subprocess.run([*lab.ssh_argv(address, shared=True), command], input=data, capture_output=True,
                         check=True, timeout=600)
    return out.stdout.decode()


def upload(address: str, tenant: str, files: dict[str, bytes], replace: bool = False) -> None:
    """Write files into a tenant's upload area on a lab node as its SFTP upload would leave
    them (owned by the tenant); with `replace`, what was there goes first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    up = f"/srv/govhost/sites/{tenant}/upload"
    clear = f"find {up} -mindepth 1 -delete && " if replace else ""
    lab_ssh(address, f"{clear}tar -x -C {up} && chown -R gh-{tenant}:gh-{tenant} {up}",
            buf.getvalue())


@contextlib.contextmanager
def node_program_stopped(address: str, name: str):
    """One of the node's long-running programs (govhost-tamper, govhost-messages, …) stopped
    for the block, by systemd on a machine node or by its pid on an overlay node; started
    again afterwards as the node starts it (`govhost-node agents`)."""
    lab_ssh(address, f"if [ -d /run/systemd/system ] && [ -f /etc/systemd/system/{name}"
                     f".service ]; then systemctl stop {name}; else "
                     f"kill $(cat /run/{name}.pid) 2>/dev/null; sleep 0.3; fi; true")
    try:
        yield
    finally:
        lab_ssh(address, f"/usr/local/sbin/govhost-node agents {address}")


@contextlib.contextmanager
def tamper_watcher_stopped(address: str):
    """The node's tamper watcher stopped for the block (a change it missed, as when it is down),
    so a test can plant a change that other mechanisms (status drift, apply, restore) must
    catch; started again afterwards (it then checks every live file)."""
    with node_program_stopped(address, "govhost-tamper"):
        yield


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def noise_png(width: int = 1200, height: int = 1150) -> bytes:
    """A real PNG of random pixels, stored uncompressed (4 MB at the default size): a browser
    must fetch and decode all of it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))


class Sink:
    """aiosmtpd on loopback keeping every message with its envelope recipients."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        self.mails: list[tuple[list[str], email.message.EmailMessage]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                sink.mails.append((list(envelope.rcpt_tos), msg))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list[str]:
        return [m.get_body(("plain",)).get_content() + m["Subject"]
                for rcpt, m in self.mails if address in rcpt]

    def stop(self) -> None:
        self.controller.stop()


# -- floating addresses on the lab (the front-door test and bench/frontdoor.py) -----------

FLOATING_HOME = {"n1": ("10.77.0.101", "fd00:77::101"), "n2": ("10.77.0.102", "fd00:77::102"),
                 "n3": ("10.77.0.103", "fd00:77::103")}


def example_inventory(dest: Path) -> Path:
    """A private copy of the example inventory at `dest`, without its state store."""
    shutil.copytree(REPO / "inventory", dest, ignore=shutil.ignore_patterns(".govhost"))
    return dest


def floating_county(dest: Path, preempt_seconds: int = 5) -> Path:
    """The example inventory at `dest` with a short preempt delay, so that a node that is
    back takes its address back within a test."""
    example_inventory(dest)
    hosts = (dest / "hosts.yaml").read_text()
    (dest / "hosts.yaml").write_text(hosts.replace(
        "  interface: eth0\n", f"  interface: eth0\n  preempt_delay_seconds: {preempt_seconds}\n"))
    return dest


def floating_held() -> dict[str, list[str]]:
    """Floating address -> the lab nodes holding it now, read from each node's interface."""
    from controlplane.lab import network
    out: dict[str, list[str]] = {a: [] for pair in FLOATING_HOME.values() for a in pair}
    for name in FLOATING_HOME:
        r = subprocess.run(["ip", "-n", network.node_ns(name), "-j", "addr", "show", "dev",
                            "eth0"], capture_output=True, text=True)
        for link in json.loads(r.stdout or "[]"):
            for a in link.get("addr_info", []):
                if a.get("local") in out:
                    out[a["local"]].append(name)
    return out


def wait_held(address: str, want: list[str], seconds: float = 30, poll: float = 0.5) -> None:
    """Until `address` is held by exactly the nodes `want`."""
    deadline = time.time() + seconds
    while floating_held()[address] != want:
        if time.time() > deadline:
            raise AssertionError(f"{address} not held by {want} after {seconds:.0f} s: "
                                 f"{floating_held()}")
        time.sleep(poll)


def wait_floating_home(seconds: float = 60) -> None:
    """Until every floating address is on its home node alone."""
    want = {a: [home] for home, pair in FLOATING_HOME.items() for a in pair}
    deadline = time.time() + seconds
    while time.time() < deadline:
        if floating_held() == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"floating addresses not home after {seconds:.0f} s: "
                         f"{floating_held()}")
