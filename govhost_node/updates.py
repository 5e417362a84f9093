"""govhost-updates: security updates on the node, one node at a time (run by govhost as root).

  sync SPEC.json   unattended-upgrades set up from the release's updates.json: which
                   archives (Debian's security archive and any the county adds), and this
                   node's own slot in the cluster's window (apt-daily-upgrade.timer moved
                   there, so nodes never update all at once); no automatic reboot
                   (`govhost node reboot NAME` drains first)
  ok [SPEC.json]   exit 0 if every peer answers its health probe, 1 if not: the timer's
                   upgrade is skipped while another node is down (or being updated and
                   restarted), so that the cluster never loses two nodes to updates
  run              unattended-upgrade now (what the timer does), then one line of JSON:
                   packages upgraded, whether a reboot is required
  hand-over        before the timer's upgrade (packages restart nginx): this node's
                   floating addresses go to its peers, unless it keeps out of VRRP already
  take-back        after it: VRRP resumes, if hand-over released it (keepalived takes the
                   node's address back once its nginx has served for the preempt delay)

Files written only when their content changes; systemd reloaded only then.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from govhost_node import vrrp
from govhost_node.files import write_if_changed
from govhost_node.layout import NODE

SPEC = f"{NODE.current}/updates.json"
APT_CONF = "/etc/apt/apt.conf.d/52govhost-unattended-upgrades"
TIMER_DROPIN = "/etc/systemd/system/apt-daily-upgrade.timer.d/govhost.conf"
SERVICE_DROPIN = "/etc/systemd/system/apt-daily-upgrade.service.d/govhost.conf"
DPKG_LOG = "/var/log/dpkg.log"
REBOOT_REQUIRED = "/run/reboot-required"
NODE_TOOL = NODE.tool
VRRP_SPEC = f"{NODE.current}/vrrp.json"
VRRP_RELEASED = vrrp.released_marker(NODE)           # by hand (govhost-node vrrp release)
# Written before the release (and kept over a reboot): take-back resumes what hand-over
# released even when the release call failed half-way or the power went in between.
RELEASED_HERE = f"{NODE.state}/vrrp-released-by-updates"
ORIGIN = re.compile(r'^[A-Za-z0-9=,._:${} /-]{1,200}$')
AT = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def die(msg: str, code: int = 1) -> None:
    print(f"govhost-updates: {msg}", file=sys.stderr)
    sys.exit(code)


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    if not AT.match(spec.get("at", "")):
        die(f"bad time {spec.get('at')!r} in {path}")
    for o in spec.get("origins", []):
        if not ORIGIN.match(o) or '"' in o:
            die(f"bad origin pattern {o!r} in {path}")
    return spec


def apt_conf(spec: dict) -> str:
    origins = ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
               "origin=Debian,codename=${distro_codename},label=Debian-Security",
               *spec.get("origins", [])]
    lines = "".join(f'    "{o}";\n' for o in origins)
    return ("// Written by govhost: security updates only, no automatic reboot (govhost node\n"
            "// reboot drains the node first).\n"
            "#clear Unattended-Upgrade::Origins-Pattern;\n"
            f"Unattended-Upgrade::Origins-Pattern {{\n{lines}}};\n"
            'Unattended-Upgrade::Automatic-Reboot "false";\n'
            'Unattended-Upgrade::Remove-Unused-Dependencies "false";\n'
            'APT::Periodic::Update-Package-Lists "1";\n'
            'APT::Periodic::Unattended-Upgrade "1";\n')


def sync(path: str) -> None:
    spec = _load(path)
    changed = write_if_changed(APT_CONF, apt_conf(spec))
    units = write_if_changed(TIMER_DROPIN, "# Written by govhost: this node's slot in the cluster's "
                   "update window.\n[Timer]\nOnCalendar=\n"
                   f"OnCalendar=*-*-* {spec['at']}:00\nRandomizedDelaySec=0\n")
    units |= write_if_changed(SERVICE_DROPIN, SERVICE_TEXT)
    if units and os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "enable", "--now", "apt-daily-upgrade.timer"],
                       check=False, capture_output=True)
    print(json.dumps({"changed": changed or units, "at": spec["at"]}))


SERVICE_TEXT = ("# Written by govhost: no update while a peer is down; the node's floating\n"
                "# addresses with its peers while packages restart nginx (a failed hand-over\n"
                "# does not hold back security updates).\n"
                "[Service]\nExecCondition=/usr/local/sbin/govhost-updates ok\n"
                "ExecStartPre=-/usr/local/sbin/govhost-updates hand-over\n"
                "ExecStopPost=/usr/local/sbin/govhost-updates take-back\n")


def hand_over(spec: str = VRRP_SPEC, by_hand: str = VRRP_RELEASED,
              mine: str = RELEASED_HERE, tool: str = NODE_TOOL) -> str:
    """Release this node's floating addresses for the update; left alone when the node has
    none, or keeps out of VRRP already (drained, or by an operator's hand: take-back must
    not end what it did not start)."""
    if not os.path.exists(spec):
        return "no floating addresses"
    try:
        with open(spec, encoding="utf-8") as f:
            doc = json.load(f)
        released = bool(doc.get("released"))
        peers = {a["home"] for a in doc.get("addresses", [])} - {doc.get("node")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        released, peers = False, set()
    if os.path.exists(by_hand) or released:
        return "already out of VRRP"
    if not peers:       # nobody would take the addresses: keep them through the update
        return "no peer to take the addresses"
    write_if_changed(mine, "released by govhost-updates hand-over\n")
    subprocess.run([tool, "vrrp", "release"], check=True, capture_output=True, timeout=60)
    time.sleep(2)     # keepalived left with a priority-0 advert: a peer has taken over
    return "released"


def take_back(mine: str = RELEASED_HERE, tool: str = NODE_TOOL) -> str:
    if not os.path.exists(mine):
        return "nothing to take back"
    subprocess.run([tool, "vrrp", "resume"], check=True, capture_output=True, timeout=60)
    os.unlink(mine)
    return "resumed"


def peers_healthy(spec: dict, timeout: float = 5.0) -> list[str]:
    """The peers that do not answer their health probe."""
    down = []
    for addr in spec.get("peers", []):
        host = f"[{addr}]" if ":" in addr else addr
        req = urllib.request.Request(f"http://{host}/health",
                                     headers={"Host": "govhost-probe"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                if r.status == 200:
                    continue
        except OSError:
            pass
        down.append(addr)
    return down


def ok(path: str) -> None:
    down = peers_healthy(_load(path))
    if down:
        print(f"govhost-updates: not now: {', '.join(down)} not answering; a second node "
              "must not go down for updates", file=sys.stderr)
        sys.exit(1)


def _upgraded_since(offset: int) -> list[str]:
    try:
        with open(DPKG_LOG, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return sorted({line.split()[3].split(":")[0] for line in text.splitlines()
                   if len(line.split()) > 4 and line.split()[2] == "upgrade"})


def run() -> None:
    offset = os.path.getsize(DPKG_LOG) if os.path.exists(DPKG_LOG) else 0
    t0 = time.monotonic()
    subprocess.run(["apt-get", "-q", "update"], capture_output=True, check=False)
    proc = subprocess.run(["unattended-upgrade", "-v"], capture_output=True, text=True)
    print(json.dumps({"ok": proc.returncode == 0, "upgraded": _upgraded_since(offset),
                      "reboot_required": os.path.exists(REBOOT_REQUIRED),
                      "seconds": round(time.monotonic() - t0, 1),
                      "log": proc.stdout[-2000:] + proc.stderr[-1000:]}))
    if proc.returncode != 0:
        sys.exit(1)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["sync"] and len(args) == 2:
        sync(args[1])
    elif args[:1] == ["ok"] and len(args) <= 2:
        ok(args[1] if len(args) == 2 else SPEC)
    elif args == ["run"]:
        run()
    elif args == ["hand-over"]:
        print(f"govhost-updates: {hand_over()}")
    elif args == ["take-back"]:
        print(f"govhost-updates: {take_back()}")
    else:
        die("usage: govhost-updates sync SPEC.json | ok [SPEC.json] | run | hand-over | "
            "take-back", 2)


if __name__ == "__main__":
    main()
