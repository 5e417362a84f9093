#!/usr/bin/env python3
"""How govhost should run commands on nodes: OpenSSH with connection sharing (what
core/remote.py does: ControlMaster, one connection per node kept 120 s) against fabric
(paramiko, one Connection kept open), side by side in one run, plus OpenSSH without sharing
as the floor nobody should pay.

Against a private sshd on loopback (its own host key, port and client key; nothing else on
the machine is touched), interleaved, COMMANDS times each:
  - a short command (`cat /etc/hostname`): what status, publish and the probes do most;
  - a 4 MiB stream through stdin (`cat >/dev/null`): a release or content sent to a node.
The first call of each way (connection setup) is timed apart. Needs root (sshd).

Usage: bench/remote.py [COMMANDS] [--json]
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

STREAM = os.urandom(4 << 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A throwaway sshd on 127.0.0.1 that lets in root with one key."""

    def __init__(self, work: Path) -> None:
        self.work, self.port = work, _free_port()
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(work / name)], check=True)
        shutil.copy(work / "client.pub", work / "authorized_keys")
        (work / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {work}/host\n"
            f"AuthorizedKeysFile {work}/authorized_keys\nPermitRootLogin prohibit-password\n"
            f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {work}/sshd.pid\nMaxSessions 50\nMaxStartups 50\n")
        os.makedirs("/run/sshd", 0o755, exist_ok=True)    # sshd's privilege separation
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f",
                                      str(work / "sshd_config")], stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the bench's sshd did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _openssh(sshd: Sshd, shared: bool) -> Callable[[str, bytes | None], bytes]:
    """argv as core/remote.ssh_argv builds it (shared) or the same without sharing."""
    opts = ["-i", str(sshd.work / "client"), "-p", str(sshd.port), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={sshd.work}/known_hosts", "-o", "LogLevel=ERROR"]
    if shared:
        opts += ["-o", "ControlMaster=auto", "-o", "ControlPersist=120s",
                 "-o", f"ControlPath={sshd.work}/%C"]

    def run(cmd: str, data: bytes | None) -> bytes:
        return subprocess.run(["ssh", *opts, "root@127.0.0.1", cmd], input=data,
                              capture_output=True, check=True, timeout=60).stdout
    return run


def _fabric(sshd: Sshd) -> tuple[Callable[[str, bytes | None], bytes], Callable[[], None]]:
    from fabric import Connection
    conn = Connection("127.0.0.1", user="root", port=sshd.port,
                      connect_kwargs={"key_filename": str(sshd.work / "client"),
                                      "look_for_keys": False, "allow_agent": False})

    def run(cmd: str, data: bytes | None) -> bytes:
        if data is None:
            return conn.run(cmd, hide=True, in_stream=False).stdout.encode()
        # invoke's in_stream never tells the remote side its input ended (the command
        # waits for EOF): the channel itself, as a fabric user sending data has to.
        conn.open()
        stdin, stdout, _ = conn.client.exec_command(cmd)
        stdin.write(data)
        stdin.channel.shutdown_write()
        out = stdout.read()
        if stdout.channel.recv_exit_status() != 0:
            raise RuntimeError(f"fabric: {cmd} failed")
        return out
    return run, conn.close


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": round(statistics.median(s) * 1000, 2),
            "p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))] * 1000, 2)}


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    n = int(args[0]) if args else 50
    if os.geteuid() != 0:
        raise SystemExit("bench/remote.py needs root (it starts its own sshd)")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-remote-"))
    sshd = Sshd(work)
    fab_run, fab_close = _fabric(sshd)
    ways = {"openssh_shared": _openssh(sshd, True), "fabric": fab_run,
            "openssh_unshared": _openssh(sshd, False)}
    first: dict[str, float] = {}
    short: dict[str, list[float]] = {w: [] for w in ways}
    stream: dict[str, list[float]] = {w: [] for w in ways}
    try:
        for w, run in ways.items():           # connection set-up, timed apart
            t0 = time.perf_counter()
            run("true", None)
            first[w] = time.perf_counter() - t0
        for _ in range(n):                    # interleaved: the machine's noise hits all
            for w, run in ways.items():
                t0 = time.perf_counter()
                out = run("cat /etc/hostname", None)
                short[w].append(time.perf_counter() - t0)
                assert out.strip(), w
            for w, run in ways.items():
                t0 = time.perf_counter()
                run("cat >/dev/null", STREAM)
                stream[w].append(time.perf_counter() - t0)
    finally:
        fab_close()
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={work}/%C", "-p",
                        str(sshd.port), "root@127.0.0.1"], capture_output=True)
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
    floor = statistics.median(short["openssh_shared"])
    floor_stream = statistics.median(stream["openssh_shared"])
    result = {
        "bench": "remote", "commands": n,
        "first_call_ms": {w: round(v * 1000, 1) for w, v in first.items()},
        "short": {w: {**_ms(v), "ratio_to_openssh_shared":
                      round(statistics.median(v) / floor, 2)} for w, v in short.items()},
        "stream_4mib": {w: {**_ms(v), "ratio_to_openssh_shared":
                            round(statistics.median(v) / floor_stream, 2)}
                        for w, v in stream.items()},
    }
    if not as_json:
        print(f"{n} commands each way, interleaved, on a loopback sshd")
        print(f"{'way':<18} {'first':>9} {'short med':>10} {'p95':>8} {'ratio':>6} "
              f"{'4MiB med':>10} {'p95':>8} {'ratio':>6}")
        for w in ways:
            s, t = result["short"][w], result["stream_4mib"][w]
            print(f"{w:<18} {result['first_call_ms'][w]:>7.1f}ms {s['median_ms']:>8.2f}ms "
                  f"{s['p95_ms']:>6.2f}ms {s['ratio_to_openssh_shared']:>5.2f}x "
                  f"{t['median_ms']:>8.2f}ms {t['p95_ms']:>6.2f}ms "
                  f"{t['ratio_to_openssh_shared']:>5.2f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
