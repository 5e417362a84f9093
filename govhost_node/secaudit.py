"""govhost-secaudit: what `govhost security check` needs to know from inside a node, as one
line of JSON (run by govhost as root over SSH; changes nothing).

  sshd      the effective sshd settings (`sshd -T -C`) that decide who may log in and
            how, for an operator and for a unit's SFTP account on each port
  files     every secret on the node with its mode and owner: TLS and metrics keys, the
            release's credentials, units' database credentials (db.json), the SSH host keys
  reboot    whether an installed update asks for a reboot
  links     links found in units' upload areas (symbolic links, and files with a second
            name): SFTP refuses to make them, so one found there was planted some other way
            or before that rule, and root must never follow it

Only the facts: the control plane judges them (controlplane.security.findings), so a node
with an older govhost still answers and the rules live in one place.
"""
from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import stat
import subprocess

from govhost_node.layout import NODE

SSHD_KEYS = ("port", "passwordauthentication", "kbdinteractiveauthentication",
             "permitrootlogin", "permitemptypasswords", "pubkeyauthentication",
             "x11forwarding", "maxauthtries", "allowtcpforwarding", "forcecommand",
             "chrootdirectory", "allowgroups", "denygroups")
SFTP_GROUP = "govhost-sftp"
# Secrets and who should own them ("root", or "dir": the owner of the directory they sit in,
# the unit's own account for a unit's db.json).
SECRETS = ((f"{NODE.metrics}/node.key", "root"),
           (f"{NODE.metrics}/agent.json", "root"),
           (f"{NODE.metrics}/web.yml", "root"),
           (f"{NODE.current}/tenants.json", "root"),
           (f"{NODE.current}/databases.json", "root"),
           (f"{NODE.current}/backup.json", "root"),
           (f"{NODE.current}/backup.key", "root"),
           (f"{NODE.current}/metrics/node.key", "root"),
           (f"{NODE.current}/metrics/agent.json", "root"),
           (f"{NODE.current}/tls/*.key", "root"),
           (f"{NODE.current}/snippets/console-proxy.conf", "root"),
           (f"{NODE.current}/messages.json", "root"),
           (f"{NODE.current}/snippets/preview-key.conf", "root"),
           ("/etc/ssh/ssh_host_*_key", "root"),
           (f"{NODE.sites}/*/var/db.json", "dir"))
REBOOT_REQUIRED = "/run/reboot-required"
SITES = NODE.sites
MAX_LINKS = 200          # per node: enough to act on, bounded for a hostile unit


def _sshd_t(lport: int, user: str) -> dict[str, list[str]]:
    """sshd's settings for one kind of connection: the config has Match blocks per local
    port and group, so `sshd -T` must be told which connection it is judging."""
    spec = f"lport={lport},user={user},host=govhost-check,addr=192.0.2.1,laddr=192.0.2.2"
    try:
        out = subprocess.run(["sshd", "-T", "-C", spec], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": [str(exc)]}
    if out.returncode != 0:
        return {"error": [out.stderr.strip()[-300:]]}
    found: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in SSHD_KEYS:
            found.setdefault(key, []).append(value.strip())
    return found


def sshd() -> dict[str, dict[str, list[str]]]:
    """The settings an operator (root) and a unit's SFTP account get on each port sshd
    listens on, as `who@port`."""
    ports = _sshd_t(1, "root").get("port", ["22"])
    try:
        members = grp.getgrnam(SFTP_GROUP).gr_mem
    except KeyError:
        members = []
    out = {}
    for port in ports:
        if not port.isdigit():
            continue
        out[f"operator@{port}"] = _sshd_t(int(port), "root")
        if members:
            out[f"unit@{port}"] = _sshd_t(int(port), members[0])
    return out


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def files() -> list[dict]:
    out = []
    for pattern, owner in SECRETS:
        for path in sorted(glob.glob(pattern)):
            try:
                st = os.stat(path)
                want = (_name(os.stat(os.path.dirname(path)).st_uid) if owner == "dir"
                        else owner)
            except OSError:
                continue
            out.append({"path": path, "mode": f"{st.st_mode & 0o7777:04o}",
                        "owner": _name(st.st_uid), "want_owner": want})
    return out


def upload_links() -> list[dict]:
    """Every link in every unit's upload area, walked without following any."""
    out: list[dict] = []
    try:
        units = sorted(os.listdir(SITES))
    except OSError:
        return out
    for unit in units:
        top = os.path.join(SITES, unit, "upload")
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        for root, dirs, names, _ in os.fwalk(top):       # never descends through a link
            for n in dirs + names:
                p = os.path.join(root, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    kind, target = "symlink", os.readlink(p)
                elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    kind, target = "hardlink", ""
                else:
                    continue
                out.append({"unit": unit, "path": os.path.relpath(p, top), "kind": kind,
                            "target": target[:200]})
                if len(out) >= MAX_LINKS:
                    return out
    return out


def main() -> None:
    print(json.dumps({"sshd": sshd(), "files": files(), "links": upload_links(),
                      "reboot_required": os.path.exists(REBOOT_REQUIRED)}, sort_keys=True))


if __name__ == "__main__":
    main()
