"""Floating addresses (keepalived). keepalived runs the release's keepalived.conf; a node
`released` (by hand with `vrrp release`, for an upgrade, or by the release: a drained node)
keeps it stopped, so that its addresses stay with its peers, until `vrrp resume`. Which
addresses the node holds is read from the kernel (what the county's router sees), here for
`status` and for the agent's metrics alike."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from govhost_node import vrrp_check
from govhost_node.layout import NODE, Layout
from govhost_node.system import (
    active,
    alive,
    die,
    has,
    ok,
    read_pid,
    remove,
    run,
    say,
    signal_pidfile,
    under_systemd,
    write_atomic,
)

PIDFILE = "govhost-keepalived"
# keepalived's pid file: govhost-node's own start (no systemd), or the systemd unit's.
PIDFILES = (NODE.pidfile(PIDFILE), NODE.pidfile("keepalived"))
HEADER = "# govhost floating"


def released_marker(lay: Layout) -> str:
    return f"{lay.state}/vrrp-released"


def _spec_path(lay: Layout) -> str:
    return f"{lay.current}/vrrp.json"


def read_spec(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def addresses(spec: dict) -> list[str]:
    """Every floating address of the county, IPv4 and IPv6, in the release's order."""
    return [a for i in spec.get("addresses", []) for a in (i.get("address"), i.get("address6"))
            if a]


def kernel_addresses(interface: str) -> set[str]:
    """The addresses on `interface` now (OSError, ValueError or TimeoutExpired when `ip`
    cannot say)."""
    out = subprocess.run(["ip", "-j", "addr", "show", "dev", interface],
                         capture_output=True, text=True, timeout=5).stdout or "[]"
    return {a.get("local") for link in json.loads(out) for a in link.get("addr_info", [])}


def held(lay: Layout) -> list[str] | None:
    """This node's floating addresses now; None when the release has none."""
    spec = read_spec(_spec_path(lay))
    if spec is None:
        return None
    have = kernel_addresses(spec["interface"])
    return [a for a in addresses(spec) if a in have]


def running(lay: Layout) -> bool:
    return active("keepalived") if under_systemd(lay) else alive(lay.pidfile(PIDFILE))


def stop(lay: Layout) -> None:
    if under_systemd(lay):   # disabled too: a released node must not take addresses at boot
        ok(["systemctl", "disable", "--now", "-q", "keepalived"])
        return
    pidfile = lay.pidfile(PIDFILE)
    if alive(pidfile):
        pid = read_pid(pidfile)
        signal_pidfile(pidfile)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)


def is_released(lay: Layout) -> bool:
    """Released by hand (`vrrp release`) or by the release (a drained node)."""
    if os.path.isfile(released_marker(lay)):
        return True
    spec = read_spec(_spec_path(lay))
    return bool(spec and spec.get("released") is True)


def seed_streaks(lay: Layout) -> None:
    """keepalived started by govhost (an apply, a resume), not by a boot: nginx has just been
    probed, so the preempt delay's streak counts as served; after a boot (systemd starts
    keepalived by itself) or a failed probe it is waited out."""
    os.makedirs(lay.streaks, exist_ok=True)
    for kind in ("alive", "prompt"):
        if not os.path.isfile(vrrp_check.streak_file(lay, kind)):
            write_atomic(vrrp_check.streak_file(lay, kind), "0\n")


def start_or_reload(lay: Layout, changed: bool) -> None:
    if is_released(lay):
        stop(lay)
        return
    if not running(lay):
        seed_streaks(lay)
    pidfile = lay.pidfile(PIDFILE)
    if under_systemd(lay):
        if not active("keepalived"):
            run(["systemctl", "enable", "--now", "-q", "keepalived"])
        elif changed:
            run(["systemctl", "reload", "keepalived"])
    elif not alive(pidfile):
        log = f"{lay.logs}/keepalived.log"
        os.makedirs(lay.logs, exist_ok=True)
        with open(log, "ab") as out:
            r = subprocess.run(["keepalived", "-f", lay.keepalived_conf, "-p", pidfile,
                                "-r", lay.pidfile("govhost-vrrp"),
                                "-c", lay.pidfile("govhost-vrrp-checker"), "-l", "-D"],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        if r.returncode != 0:
            raise die(f"keepalived did not start (exit {r.returncode}; see {log})")
    elif changed:
        signal_pidfile(pidfile, signal.SIGHUP)


def local(lay: Layout) -> None:
    """Every floating address of the county also sits on lo (never answered for in ARP or
    NDP there: arp_ignore, and NDP answers per interface). A node that has just handed an
    address over can still send the answers to requests it took in while it held the address
    (without it, those answers cannot leave and the citizen waits out its timeout), and a
    packet that reaches a node which does not hold the address gets a reset, not silence."""
    spec = read_spec(_spec_path(lay))
    want = addresses(spec) if spec is not None and \
        os.path.isfile(f"{lay.current}/keepalived.conf") else []
    record = f"{lay.state}/vrrp-local"
    try:
        with open(record) as f:
            before = [a for a in f.read().split("\n") if a]
    except OSError:
        before = []
    for a in before:                       # those of an earlier release that are gone
        if a not in want:
            ok(["ip", "addr", "del", f"{a}/{128 if ':' in a else 32}", "dev", "lo"])
    for a in want:
        if ":" in a:
            run(["ip", "-6", "addr", "replace", f"{a}/128", "dev", "lo", "nodad"])
        else:
            run(["ip", "addr", "replace", f"{a}/32", "dev", "lo"])
    os.makedirs(lay.state, exist_ok=True)
    write_atomic(record, "".join(f"{a}\n" for a in want))


DROPIN_TEXT = ("# Written by govhost: every floating address on lo before keepalived starts.\n"
               "[Service]\n"
               "ExecStartPre=/usr/local/sbin/govhost-node vrrp local\n")


def boot_dropin(lay: Layout) -> None:
    """Under systemd keepalived also starts at boot, before any apply: the lo addresses with
    it."""
    if not under_systemd(lay):
        return
    path = f"{lay.systemd_units}/keepalived.service.d/govhost.conf"
    try:
        with open(path) as f:
            if f.read() == DROPIN_TEXT:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, DROPIN_TEXT)
    run(["systemctl", "daemon-reload"])


def sync(lay: Layout) -> None:
    """keepalived follows `current` (at activate)."""
    want, conf = f"{lay.current}/keepalived.conf", lay.keepalived_conf
    local(lay)
    try:
        with open(conf, encoding="utf-8", errors="replace") as f:
            have = f.read()
    except OSError:
        have = None
    if not os.path.isfile(want):
        if have is not None and re.search(f"^{HEADER}", have, re.M):
            stop(lay)
            remove(conf)
        return
    if not has("keepalived"):
        raise die("keepalived is not installed (bootstrap installs it)")
    boot_dropin(lay)
    with open(want, encoding="utf-8", errors="replace") as f:
        text = f.read()
    changed = False
    if text != have:
        # From a release whose probe had no streak: its nodes have been serving all along.
        if have is not None and 'vrrp check"' in have:
            seed_streaks(lay)
        os.makedirs(os.path.dirname(conf), exist_ok=True)
        write_atomic(conf, text)
        changed = True
    start_or_reload(lay, changed)


def release(lay: Layout) -> None:
    os.makedirs(lay.state, exist_ok=True)
    with open(released_marker(lay), "a"):
        pass
    stop(lay)
    say("vrrp: released; this node's floating addresses stay with its peers")


def resume(lay: Layout) -> None:
    remove(released_marker(lay))
    if os.path.isfile(lay.keepalived_conf):
        start_or_reload(lay, False)
    say("vrrp: resumed")
