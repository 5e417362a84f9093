"""govhost-tenants: tenant accounts and content releases on a node (run by govhost as root).

  converge SPEC.json         users, groups, directories, SFTP keys and the sshd snippet for the
                             tenants this node holds (from the config release being activated)
  publish T ID ACTOR QUOTA [SOURCE]
                             build content release ID of tenant T from its upload area (or
                             from SOURCE, a tree govhost-backup restored under RESTORE):
                             regular files only, unchanged files hard-linked from the live
                             release; prints what changed (JSON). Refuses over QUOTA bytes.
  digests T [ID|current]     the digest list of a release ("" if none)
  live [T...]                the live release of each unit (all here when none named), JSON
  pack T ID                  tar of the files named on stdin from release ID (to stdout)
  pack-many                  releases of many units ("T ID" lines on stdin) in one tar
  receive-many               what pack-many sent (after a line of JSON naming the units, their
                             releases and live one), each release verified, each unit switched
                             to its live one; a result line (JSON) per unit
  receive T ID [BASE]        build release ID from a tar on stdin plus release BASE, verified
                             against the release's digest list
  switch T ID                make ID the live release (atomic symlink swap)
  releases T                 the releases with their metadata (JSON)
  drop T ID                  delete a release that is not live
  prune T KEEP [PROTECTED..] keep the KEEP newest releases, the live one and PROTECTED ones
  holdings [T...]            per tenant on this node: the live release, whether its files are
                             exactly its digest list (missing, changed and added files), and
                             the releases kept (JSON). Files whose inode, size, mtime and
                             ctime are as at their last check are not hashed again.
  remove T ARCHIVE_DIR       archive the tenant's tree to ARCHIVE_DIR, then remove its
                             accounts and files

Layout (the SFTP chroot is the tenant's home, root-owned as sshd requires). Group T holds
T's user and nginx's worker user, nobody else: another tenant (its SFTP account or its PHP
code) cannot enter T's releases, uploads or private files, whatever path it guesses.
  /srv/govhost/sites/T/            root:root 0755
  /srv/govhost/sites/T/upload/     T's user, group T 2750: the staging area (never served)
  /srv/govhost/sites/T/upload/S/   section S's user, group S 2770 (T's user is in group S)
  /srv/govhost/sites/T/releases/   root, group T 0750
  /srv/govhost/sites/T/releases/ID root-owned, files 0644: immutable content releases
  /srv/govhost/sites/T/current  -> releases/ID (what nginx serves)
PHP tenants also get (their pool runs as T's user):
  /srv/govhost/sites/T/var/        T's user 0700: tmp/, sessions/, log/php-error.log, and
                                   db.json (mode 0600: its MariaDB credentials, if any)
  /srv/govhost/sites/T/files/      T's user, group T 2750: what the site's PHP writes; nginx
                                   serves it under /files/ and never runs PHP from it
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time

from govhost_node import digests as digest_list
from govhost_node.accounts import AccountError, Accounts, converge_accounts
from govhost_node.files import write_if_changed, write_json_shared
from govhost_node.layout import NODE

SITES = NODE.sites
KEYS = f"{NODE.root}/sftp-keys"
SSHD_SNIPPET = "/etc/ssh/sshd_config.d/govhost-sftp.conf"
RESTORE = f"{NODE.srv}/restore"          # where govhost-backup restores snapshots (root only)
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
RELEASE = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")
EXIT_QUOTA = 5


def die(msg: str, code: int = 1) -> None:
    print(f"govhost-tenants: {msg}", file=sys.stderr)
    sys.exit(code)


def tenant_dir(t: str) -> str:
    if not NAME.match(t):
        die(f"bad tenant name {t!r}")
    return os.path.join(SITES, t)


def release_dir(t: str, rid: str) -> str:
    if not RELEASE.match(rid):
        die(f"bad release id {rid!r}")
    return os.path.join(tenant_dir(t), "releases", rid)


def current(t: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(tenant_dir(t), "current")))
    except OSError:
        return None


# ---------------------------------------------------------------- accounts

def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        die(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _dir(path: str, uid: int, gid: int, mode: int) -> None:
    """Create or correct a directory. Some live inside trees a tenant owns: a symlink planted
    there (even in a race) must never make root chown or chmod something else, so the
    change goes through a descriptor opened without following links."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, _NOFOLLOW_DIR)
    except OSError:
        die(f"{path} is not a directory")
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _write_private(path: str, text: str, uid: int, gid: int) -> None:
    """Write a 0600 file owned by uid:gid into a directory its owner can write to, without
    following any link the owner planted at the file or at its temporary name."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            same = (stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) == (uid, gid)
                    and stat.S_IMODE(st.st_mode) == 0o600 and os.read(fd, len(data) + 1) == data)
        finally:
            os.close(fd)
        if same:
            return
    except OSError:
        pass
    tmp = f"{path}.govhost-new"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchown(fd, uid, gid)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


SNIPPET = """# Written by govhost: tenant SFTP accounts only (members of {group}).
# Upload only: chrooted to the tenant's root-owned tree, no shell, no forwarding, keys only,
# and no links: a link in the upload area is a path someone else (root) might follow.
Match Group {group}
    ChrootDirectory %h
    ForceCommand internal-sftp -d /upload -P symlink,hardlink
    AuthorizedKeysFile {keys}/%u
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    PermitTTY no
    AllowTcpForwarding no
    AllowStreamLocalForwarding no
    AllowAgentForwarding no
    X11Forwarding no
    PermitTunnel no
Match all
"""

# With a port of their own for units (hosts.yaml ssh.sftp_port), the operators' port admits
# no tenant account and the units' port admits nothing else; the firewall then opens the
# operators' port only to the management addresses.
PORTS = """# Written by govhost: operators' SSH on {ssh}, units' SFTP on {sftp}.
Port {ssh}
Port {sftp}
Match LocalPort {sftp}
    AllowGroups {group}
Match LocalPort {ssh} Group {group}
    DenyGroups {group}
"""


def _reload_sshd() -> None:
    if os.path.isdir("/run/systemd/system"):
        subprocess.run(["systemctl", "reload", "ssh"], check=False)
        return
    try:
        with open("/run/sshd.pid") as f:
            os.kill(int(f.read().strip()), 1)
    except (OSError, ValueError):
        pass


# Keys only, for everyone: a node's address is public. sshd takes the first value it reads
# and Debian's sshd_config includes sshd_config.d/ first, so these win over its defaults
# (X11Forwarding yes, passwords allowed). `govhost security check` holds nodes to them.
HARDEN = """# Written by govhost: keys only on a server facing the internet.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
X11Forwarding no
MaxAuthTries 6
"""


def _sshd_snippet(group: str, ssh_port: int | None = None, sftp_port: int | None = None) -> None:
    ports = (PORTS.format(ssh=int(ssh_port), sftp=int(sftp_port), group=group)
             if ssh_port and sftp_port and ssh_port != sftp_port else "")
    text = HARDEN + ports + SNIPPET.format(group=group, keys=KEYS)
    old = None
    if os.path.exists(SSHD_SNIPPET):
        with open(SSHD_SNIPPET, encoding="utf-8") as f:
            old = f.read()
    if old == text:
        return
    os.makedirs(os.path.dirname(SSHD_SNIPPET), exist_ok=True)
    write_if_changed(SSHD_SNIPPET, text, 0o644)
    test = subprocess.run(["sshd", "-t"], capture_output=True, text=True)
    if test.returncode != 0:   # never leave sshd with a config it refuses: operators need it
        if old is None:
            os.unlink(SSHD_SNIPPET)
        else:
            write_if_changed(SSHD_SNIPPET, old, 0o644)
        die(f"sshd -t refused the SFTP settings, kept the old ones: {test.stderr.strip()}")
    _reload_sshd()


def _php_dirs(home: str, uid: int, gid: int, db: dict | None) -> None:
    """The private and public writable places of a PHP tenant, and its DB credentials."""
    var = os.path.join(home, "var")
    _dir(var, uid, gid, 0o700)
    for sub in ("tmp", "sessions", "log"):
        _dir(os.path.join(var, sub), uid, gid, 0o700)
    _dir(os.path.join(home, "files"), uid, gid, 0o2750)
    creds = os.path.join(var, "db.json")
    if db:
        _write_private(creds, json.dumps(db, indent=1, sort_keys=True) + "\n", uid, gid)
    elif os.path.lexists(creds):
        os.unlink(creds)


class FsQuota:
    """Filesystem quotas, where the filesystem under /srv/govhost/sites has user quotas on:
    each of a tenant's accounts is capped at the tenant's quota, so an SFTP upload (or a PHP
    site writing files) stops at the limit, not only a publish. Releases are root-owned and
    not counted. Where quotas are off or unsupported nothing is set and `state` says so."""

    def __init__(self) -> None:
        self.mount = ""
        self.state = "unsupported"
        if not shutil.which("setquota") or not shutil.which("quotaon"):
            return
        found = subprocess.run(["findmnt", "-n", "-o", "TARGET", "-T", SITES],
                               capture_output=True, text=True)
        self.mount = found.stdout.strip()
        on = subprocess.run(["quotaon", "-p", "-u", self.mount], capture_output=True, text=True)
        if " is on" not in on.stdout:
            self.state = "off"
            return
        self.state = "on"

    def cap(self, user: str, quota_bytes: int) -> None:
        if self.state != "on":
            return
        kib = max(quota_bytes // 1024, 1)         # setquota is idempotent: set it every time
        _run("setquota", "-u", user, str(kib), str(kib), "0", "0", self.mount)


def converge(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    group = spec["sftp_group"]
    web_user = spec.get("web_user", "www-data")
    try:
        acc = Accounts()
        _converge(spec, acc, group, web_user)
    except AccountError as exc:
        die(str(exc))


def _converge(spec: dict, acc: Accounts, group: str, web_user: str) -> None:
    os.makedirs(KEYS, exist_ok=True)
    os.chmod(KEYS, 0o755)
    quota = FsQuota()
    wanted_users: set[str] = set()
    # every account first (the commands batched), then each unit's directories; a bad
    # name stops the converge before any account is made
    for t in spec["tenants"]:
        tenant_dir(t["name"])
    users = converge_accounts(acc, spec["tenants"], group, web_user)
    for t in spec["tenants"]:
        home = tenant_dir(t["name"])
        _dir(SITES, 0, 0, 0o755)
        _dir(home, 0, 0, 0o755)
        pw, tgid = users[t["user"]], acc.groups[t["user"]]
        _dir(os.path.join(home, "releases"), 0, tgid, 0o750)
        _dir(os.path.join(home, "upload"), pw.uid, tgid, 0o2750)
        if t.get("php"):
            _php_dirs(home, pw.uid, tgid, t.get("db"))
        keyed = [(t["user"], t["keys"])]
        for sec in t["sections"]:
            _dir(os.path.join(home, "upload", sec["name"]), users[sec["user"]].uid,
                 acc.groups[sec["user"]], 0o2770)
            keyed.append((sec["user"], sec["keys"]))
        for user, keys in keyed:
            quota.cap(user, int(t.get("quota_bytes", 0)) or 1 << 40)
            wanted_users.add(user)
            write_if_changed(os.path.join(KEYS, user), "".join(k + "\n" for k in keys), 0o644)
    # Accounts of tenants this node no longer holds: no key, no login; data stays until
    # `govhost unit remove`.
    for name in os.listdir(KEYS):
        if name not in wanted_users and not name.endswith(".tmp"):
            os.unlink(os.path.join(KEYS, name))
    _sshd_snippet(group, spec.get("ssh_port"), spec.get("sftp_port"))
    print(json.dumps({"tenants": len(spec["tenants"]), "accounts": len(wanted_users),
                      "filesystem_quota": quota.state, **acc.done}))


# ---------------------------------------------------------------- content releases

def _digests_of(path: str) -> dict[str, str]:
    """The release's list, or nothing when it has none. A damaged list raises ValueError
    (receive must refuse it, not take an empty release)."""
    try:
        return digest_list.read(path)
    except OSError:
        return {}


def _sha256_of(f) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _sha256(path: str) -> str:
    return digest_list.file_sha256(path)


def _write_meta(path: str, meta: dict) -> None:
    with open(os.path.join(path, ".meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, sort_keys=True)
    digest_list.write(path, meta["digests"])


def _link(src: str, dest: str) -> bool:
    """Hard-link an unchanged file from the live release; False if that copy is gone or not
    a regular file any more (a damaged release is never trusted: the file is copied)."""
    try:
        if not stat.S_ISREG(os.lstat(src).st_mode):
            return False
        os.link(src, dest)
        return True
    except OSError:
        return False


def publish(t: str, rid: str, actor: str, quota: str, source: str | None = None) -> None:
    home = tenant_dir(t)
    upload = os.path.join(home, "upload")
    if source is not None:
        real = os.path.realpath(source)
        if not real.startswith(RESTORE + os.sep) or os.stat(RESTORE).st_uid != 0:
            die(f"{source!r} is not a restored tree under {RESTORE}")
        upload = real
    dest = release_dir(t, rid)
    if os.path.exists(dest):
        die(f"release {rid} exists already")
    cur = current(t)
    prev_dir = os.path.join(home, "releases", cur) if cur else None
    prev = _digests_of(prev_dir) if prev_dir else {}
    # The upload area belongs to the tenant, who may change it while we read: walk it by
    # directory descriptors and open every file without following links, so no symlink (to
    # /etc/shadow, or to another tenant), however it was planted or swapped in, is ever read.
    tmp = os.path.join(home, "releases", f".{rid}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    skipped: list[str] = []
    linked = total = 0

    def over_quota() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        die(f"the upload area is over the quota of {quota} bytes; delete files or ask the "
            "county team for a bigger quota", EXIT_QUOTA)

    try:
        for root, dirs, names, rootfd in os.fwalk(upload):
            dirs.sort()
            rel_root = os.path.relpath(root, upload)
            for name in sorted(names) + [d for d in dirs
                                         if stat.S_ISLNK(os.lstat(d, dir_fd=rootfd).st_mode)]:
                rel = os.path.normpath(os.path.join(rel_root, name))
                hidden = any(part.startswith(".") for part in rel.split(os.sep))
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                                 dir_fd=rootfd)
                except OSError:
                    skipped.append(rel)       # a symlink (ELOOP) or gone: never published
                    continue
                with os.fdopen(fd, "rb") as src:
                    if not stat.S_ISREG(os.fstat(fd).st_mode) or "\n" in rel or hidden:
                        skipped.append(rel)   # devices, fifos, hidden files: never published
                        continue
                    digest, size = _sha256_of(src)
                    total += size
                    if total > int(quota):
                        over_quota()
                    digests[rel], sizes[rel] = digest, size
                    target = os.path.join(tmp, rel)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    if prev.get(rel) == digest and _link(os.path.join(prev_dir, rel), target):
                        linked += 1                     # unchanged: no cost
                        continue
                    src.seek(0)
                    with open(target, "xb") as dst:
                        h = hashlib.sha256()
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                            dst.write(chunk)
                    os.chmod(target, 0o644)
                    if h.hexdigest() != digest:   # changed while we read: publish it again
                        shutil.rmtree(tmp, ignore_errors=True)
                        die(f"{rel} changed during publish; wait for the upload to finish "
                            "and publish again")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        die(f"cannot read the upload area: {exc}")
    for root, dirs, _ in os.walk(tmp):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    added = sorted(set(digests) - set(prev))
    removed = sorted(set(prev) - set(digests))
    changed = sorted(r for r in digests if r in prev and prev[r] != digests[r])
    meta = {"id": rid, "tenant": t, "published_by": actor, "published_at": time.time(),
            "source": "upload" if source is None else "restore",
            "files": len(digests), "bytes": total, "linked": linked, "digests": digests,
            "added": [[r, sizes[r]] for r in added], "changed": [[r, sizes[r]] for r in changed],
            "removed": removed, "skipped": skipped, "base": cur}
    _write_meta(tmp, meta)
    os.chmod(tmp, 0o755)
    os.rename(tmp, dest)
    print(json.dumps({k: v for k, v in meta.items() if k != "digests"}, ensure_ascii=False))


def digests(t: str, rid: str = "current") -> None:
    rid = current(t) if rid == "current" else rid
    if not rid:
        return
    with open(os.path.join(release_dir(t, rid), digest_list.NAME), encoding="utf-8") as f:
        sys.stdout.write(rid + "\n" + f.read())


def live(*names: str) -> None:
    """The live release of each named unit (of every unit here when none is named), one
    JSON object: what the search sync asks a node once, where it asked for each unit's
    digest list (an SSH session and this program started per unit: a replaced node's
    search step took 32.5 s for 300 units, 10 s since, most of it sending the node its
    index)."""
    names = names or tuple(sorted(os.listdir(SITES)) if os.path.isdir(SITES) else ())
    print(json.dumps({t: current(t) for t in names if NAME.match(t)}, sort_keys=True))


def pack(t: str, rid: str) -> None:
    src = release_dir(t, rid)
    wanted = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|gz") as tar:
        for name in [".meta.json", ".digests", *wanted]:
            path = os.path.realpath(os.path.join(src, name))
            if not path.startswith(src + os.sep):
                die(f"{name!r} is outside release {rid}")
            info = tar.gettarinfo(path, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as f:
                tar.addfile(info, f)


def pack_many() -> None:
    """Releases of many units in one gzip tar (to stdout), for a node that holds none of
    them (a replaced or added node): stdin names them, a line "T ID" each, a unit's oldest
    first. Members are "T/ID/path", each release's `.meta.json` and `.digests` first; of a
    unit's next release only the files that differ from the one before travel (the
    receiver links the rest). A release not here is left out (the receiver reports it). A
    release that cannot be sent whole (its digest list names a path outside it or something
    that is not a file, or a file gone) ends what travels of its unit, named on stderr: the
    receiver finds that unit incomplete and fails it alone, and the others go on (before,
    the whole stream ended and every unit after it went the slow way, one by one). Only a
    file that changes while it is read ends the stream, as its tar member cannot be taken
    back."""
    asked = []
    for line in sys.stdin:
        t, _, rid = line.strip().partition(" ")
        if t or rid:
            release_dir(t, rid)                       # refuses a bad name or id
            asked.append((t, rid))
    before: dict[str, dict[str, str]] = {}
    broken: set[str] = set()
    # gzip's fastest level: on text, 1.18x the bytes of level 9 for a fifth of the CPU
    # (GNU headers: the default PAX ones took a third of packing, profiled, for nothing here)
    with gzip.GzipFile(fileobj=sys.stdout.buffer, mode="wb", compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for t, rid in asked:
            if t in broken:
                continue
            src = release_dir(t, rid)
            try:
                listed = digest_list.read(src)
            except (OSError, ValueError):
                continue
            prev = before.get(t, {})
            for name in [".meta.json", ".digests",
                         *sorted(p for p, d in listed.items() if prev.get(p) != d)]:
                why = _unsendable(src, name, tar, f"{t}/{rid}/{name}")
                if why:
                    print(f"govhost-tenants pack-many: {t} {rid}: {why}; its unit is left "
                          "out", file=sys.stderr)
                    broken.add(t)
                    break
            before[t] = listed


def _unsendable(src: str, name: str, tar: tarfile.TarFile, member: str) -> str | None:
    """Add release file `name` to `tar` as `member`; or why it cannot be, before anything of
    it was written."""
    if not _plain(name):
        return f"{name!r} is outside the release"
    try:
        fd = os.open(os.path.join(src, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"{name!r}: {exc.strerror}"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return f"{name!r} is not a file"
    with os.fdopen(fd, "rb") as f:
        info = tarfile.TarInfo(member)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        tar.addfile(info, f)
    return None


def receive_many() -> None:
    """What `pack-many` sent, for units this node holds nothing of yet: stdin is one line
    of JSON ({"units": {T: {"releases": [ID, ...], "live": ID}}}), then the gzip tar. Each
    release is checked against its digest list and put in place as `receive` does; a unit
    whose releases all arrived whole is switched to its live one. One result line (JSON) a
    unit: a unit that failed is its own line, the others go on. One program and two SSH
    sessions for a hundred units' content, where `receive` took four sessions and programs
    a release: a replaced node's 207 units of 200 files took 55.5 s, 21.9 s this way."""
    head = json.loads(sys.stdin.buffer.readline() or b"{}")
    units: dict[str, dict] = {}
    for t, u in (head.get("units") or {}).items():
        rids = [str(r) for r in u.get("releases") or ()]
        live = str(u.get("live"))
        for rid in rids:
            release_dir(t, rid)                       # refuses a bad name or id
        if live not in rids:
            die(f"{t}: live release {live!r} is not among those sent")
        units[t] = {"releases": rids, "live": live}
    done: dict[str, list[str]] = {t: [] for t in units}
    failed: dict[str, str] = {}
    raw: dict[str, int] = dict.fromkeys(units, 0)
    at: tuple[str, str] | None = None                 # the release being received
    tmp = ""

    def settle() -> None:
        if at is None:
            return
        t, rid = at
        if t in failed:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        try:
            _settle(t, rid, tmp)
            done[t].append(rid)
        except (OSError, ValueError) as exc:
            failed.setdefault(t, str(exc))
            shutil.rmtree(tmp, ignore_errors=True)

    try:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as tar:
            for m in tar:
                t, _, rest = m.name.partition("/")
                rid, _, rel = rest.partition("/")
                if t not in units or rid not in units[t]["releases"] or not rel:
                    die(f"refusing archive member {m.name!r}: not a release that was asked")
                if (t, rid) != at:
                    settle()
                    at = None
                    if t in failed:                   # its other releases are passed over
                        continue
                    prev = done[t][-1] if done[t] else None
                    try:
                        tmp = _receiving(t, rid, release_dir(t, prev) if prev else None)
                    except (OSError, subprocess.CalledProcessError) as exc:
                        failed[t] = f"release {rid}: {exc}"
                        continue
                    at = (t, rid)
                    made: set[str] = set()
                elif t in failed:
                    continue
                try:
                    if not _put_member(tar, m, rel, tmp, made):
                        failed[t] = f"refusing archive member {m.name!r}"
                except OSError as exc:                # this unit's, not the stream's
                    failed[t] = f"writing {m.name!r}: {exc}"
                raw[t] += m.size
            settle()
            at = None
    except Exception as exc:                          # noqa: BLE001 - the stream's end
        # A damaged or cut stream (tarfile and gzip raise several kinds): what arrived
        # whole and verified stands; the release cut short is removed.
        if at is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            failed.setdefault(at[0], f"the stream ended early: {exc}")
    for t, u in sorted(units.items()):
        missing = [r for r in u["releases"] if r not in done[t]]
        if t not in failed and missing:
            failed[t] = f"release(s) {', '.join(missing)} not sent"
        if t not in failed:
            try:
                _switch(t, u["live"])
            except OSError as exc:
                failed[t] = f"switching to {u['live']}: {exc}"
        print(json.dumps({"tenant": t, "ok": t not in failed, "received": done[t],
                          "raw_bytes": raw[t], **({"error": failed[t]} if t in failed else {})},
                         ensure_ascii=False), flush=True)


def receive(t: str, rid: str, base: str | None = None) -> None:
    base_dir = release_dir(t, base) if base else None
    if base_dir and not os.path.isdir(base_dir):
        die(f"base release {base} is not here", 4)
    tmp = _receiving(t, rid, base_dir)
    data = io.BytesIO(sys.stdin.buffer.read())
    with tarfile.open(fileobj=data, mode="r:gz") as tar:
        for m in tar.getmembers():
            if not _put_member(tar, m, m.name, tmp):
                die(f"refusing archive member {m.name!r}")
    try:
        files = _settle(t, rid, tmp)
    except ValueError as exc:
        die(str(exc), 4 if base else 1)
    print(json.dumps({"received": rid, "files": files}))


def _receiving(t: str, rid: str, base_dir: str | None) -> str:
    """The directory release `rid` of `t` is received into: empty, or the files of the
    release at `base_dir` hard-linked (the files that did not change do not travel)."""
    tmp = os.path.join(tenant_dir(t), "releases", f".{rid}.recv")
    release_dir(t, rid)                               # a bad id is refused here
    shutil.rmtree(tmp, ignore_errors=True)
    if base_dir:
        subprocess.run(["cp", "-al", base_dir, tmp], check=True)
        for extra in (".meta.json", ".digests"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(tmp, extra))
    else:
        os.makedirs(tmp)
    return tmp


def _plain(rel: str) -> bool:
    """`rel` names a path inside the directory it is joined to: no component empty, `.` or
    `..`, not absolute. (A release directory holds only directories and regular files,
    which govhost made, so no link inside can lead out either; comparing real paths took
    a fifth of receiving a hundred units' content, profiled.)"""
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _put_member(tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str, tmp: str,
                made: set[str] | None = None) -> bool:
    """Write archive member `m` as `rel` under `tmp`; False (nothing written) for anything
    but a regular file inside `tmp`. `made`: directories known to exist already."""
    if not m.isreg() or not _plain(rel):
        return False
    target = os.path.join(tmp, rel)
    parent = os.path.dirname(target)
    if made is None or parent not in made:
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # a file of the base release where this release has a directory: it goes (the
            # digest list decides what the release holds)
            at = tmp
            for part in os.path.relpath(parent, tmp).split(os.sep):
                at = os.path.join(at, part)
                if os.path.lexists(at) and not os.path.isdir(at):
                    os.unlink(at)
            os.makedirs(parent, exist_ok=True)
        if made is not None:
            made.add(parent)
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)          # a directory of the base where this has a file
    elif os.path.lexists(target):
        os.unlink(target)              # never write through a hard link
    src = tar.extractfile(m)
    assert src is not None
    with src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(target, 0o644)
    return True


def _settle(t: str, rid: str, tmp: str) -> int:
    """Release `rid` of `t` received into `tmp`: every file checked against its digest list
    (files it does not list removed), then put in place. Raises ValueError (and removes
    `tmp`) when they differ; returns the files."""
    home = tenant_dir(t)
    dest = release_dir(t, rid)
    # A release is its digest list and its metadata too: without them (a stream cut short
    # before they came) nothing would be checked, and every file linked in would go.
    missing = [n for n in (".digests", ".meta.json") if not os.path.isfile(os.path.join(tmp, n))]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"release {rid} came without its {' and '.join(missing)}")
    try:
        want = _digests_of(tmp)
    except ValueError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    have = {}
    for root, dirs, names in os.walk(tmp):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), tmp)
            if rel in (".meta.json", ".digests"):
                continue
            if rel not in want:
                os.unlink(os.path.join(root, name))
                continue
            have[rel] = _sha256(os.path.join(root, name))
    if have != want:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"release {rid} does not match its digest list")
    os.chmod(tmp, 0o755)
    # Replacing a damaged copy that may be live: two renames, never a moment without it.
    old = os.path.join(home, "releases", f".{rid}.old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.lexists(dest):
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return len(want)


def switch(t: str, rid: str) -> None:
    if not os.path.isfile(os.path.join(release_dir(t, rid), ".meta.json")):
        die(f"release {rid} of {t} is not on this node")
    _switch(t, rid)
    print(json.dumps({"live": rid}))


def _switch(t: str, rid: str) -> None:
    home = tenant_dir(t)
    try:        # what the tamper watcher puts back from, from the first second live
        from govhost_node.tamper import keep_pristine
        keep_pristine(t, release_dir(t, rid))
    except (OSError, ValueError) as exc:
        print(f"govhost-tenants: no pristine copies of {t}/{rid}: {exc}", file=sys.stderr)
    tmp = os.path.join(home, ".current.new")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(f"releases/{rid}", tmp)
    os.rename(tmp, os.path.join(home, "current"))


def releases(t: str) -> None:
    home = tenant_dir(t)
    out = []
    cur = current(t)
    rdir = os.path.join(home, "releases")
    for rid in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
        if not RELEASE.match(rid):
            continue
        try:
            with open(os.path.join(rdir, rid, ".meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        meta.pop("digests", None)
        meta["live"] = rid == cur
        out.append(meta)
    print(json.dumps(out, ensure_ascii=False))


def drop(t: str, rid: str) -> None:
    if rid == current(t):
        die(f"release {rid} is live; switch to another one first")
    shutil.rmtree(release_dir(t, rid), ignore_errors=True)


def prune(t: str, keep: str, *protected: str) -> None:
    rdir = os.path.join(tenant_dir(t), "releases")
    ids = sorted((r for r in os.listdir(rdir) if RELEASE.match(r)), reverse=True)
    cur = current(t)
    for rid in ids[int(keep):]:
        if rid != cur and rid not in protected:
            shutil.rmtree(os.path.join(rdir, rid), ignore_errors=True)
    for name in os.listdir(rdir):
        if name.startswith(".") and name.endswith((".tmp", ".recv", ".old")):
            shutil.rmtree(os.path.join(rdir, name), ignore_errors=True)


# One file a unit, {"release": its live release, "keys": {file: key}}: a unit's check reads
# and writes its own keys only. One file for the node before stop 67 was read whole for a
# one-unit check (0.42 s at 1,000 units of 100 files, 20 MB) and rewritten whole when one
# key changed; at 3,333 units of 200 files, 136 MB.
VERIFIED = f"{NODE.state}/verified"
OLD_VERIFIED = f"{NODE.state}/verified.json"


def _verify(rel_dir: str, cache: dict) -> dict:
    """Compare a release's files with its digest list. `cache` maps a file (relative to the
    release) to its key at the last check (digests.hashed: inode, size, mtime, ctime and the
    digest it held); only files whose stat differs are hashed again, so checking a whole
    node every minute costs stats, not reads, a file that stays changed included. A key
    taken within two seconds of the file's last change is not kept (one tick of the clock
    could hide a second change). The same test as the config release's
    (`releases.intact`). A directory of the release replaced by a link is changed, whatever
    it leads to; a damaged digest list makes the release not intact, and the unit is
    reported like any other."""
    try:
        want = _digests_of(rel_dir)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"files": 0, "missing": [], "changed": [], "added": [], "intact": False,
                "error": f"{digest_list.NAME}: {exc}"[:200]}
    missing, changed = [], []
    now = digest_list.now_ns()
    base = rel_dir.rstrip("/") + "/"
    for rel, digest in want.items():
        try:
            key = digest_list.hashed(base + rel, cache.get(rel))
        except (FileNotFoundError, NotADirectoryError):
            missing.append(rel)
            cache.pop(rel, None)
            continue
        except OSError:                 # a link in the file's place (ELOOP), unreadable
            key = None
        if key is None:                 # not a regular file
            changed.append(rel)
            cache.pop(rel, None)
            continue
        if key[4] != digest:
            changed.append(rel)
        if digest_list.settled(key, now):
            cache[rel] = key
        else:
            cache.pop(rel, None)
    for rel in [r for r in cache if r not in want]:
        del cache[rel]
    added = []
    # The tree listed by names put together, not os.walk and relpath: those were half of a
    # whole node's check (3.5 of 9 profiled seconds at 1,000 units of 100 files). Each
    # folder is opened without following a link and must be the folder that was listed
    # (its inode): one swapped for a link meanwhile is changed, not walked (as root, it
    # could lead anywhere). A folder that cannot be opened or listed (a path past the
    # system's limit, planted to hide a file) is changed too, not skipped.
    folders: list[tuple[str, str, tuple[int, int] | None]] = [("", rel_dir, None)]
    while folders:
        prefix, folder, seen = folders.pop()
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            changed.append(prefix.rstrip("/") or ".")
            continue
        try:
            st = os.fstat(fd)
            if seen is not None and (st.st_dev, st.st_ino) != seen:
                changed.append(prefix.rstrip("/"))
                continue
            entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink(),
                        e.inode()) for e in os.scandir(fd)]
        except OSError:
            changed.append(prefix.rstrip("/") or ".")
            continue
        finally:
            os.close(fd)
        for name, is_dir, is_link, ino in entries:
            rel = prefix + name
            path = f"{folder}/{name}"
            if is_dir:
                folders.append((rel + "/", path, (st.st_dev, ino)))
            elif is_link and os.path.isdir(path):
                changed.append(rel)     # a folder's link: changed, whatever it leads to
            elif rel not in want and rel not in (".meta.json", ".digests"):
                added.append(rel)
    return {"files": len(want), "missing": sorted(missing)[:20], "changed": sorted(changed)[:20],
            "added": sorted(added)[:20],
            "intact": bool(want) and not (missing or changed or added)}


def _keys_of(t: str, rid: str) -> dict:
    """The unit's keys at its last check, if they are of release `rid` (a release switched
    since starts afresh); {} when there are none or the file is damaged."""
    try:
        with open(os.path.join(VERIFIED, f"{t}.json"), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    keys = doc.get("keys") if isinstance(doc, dict) and doc.get("release") == rid else None
    return {k: v for k, v in keys.items() if isinstance(k, str)} \
        if isinstance(keys, dict) else {}


def holdings(*only: str) -> None:
    names = list(dict.fromkeys(only)) or (sorted(os.listdir(SITES)) if os.path.isdir(SITES)
                                          else [])
    out = {}
    for t in names:
        if not NAME.match(t) or not os.path.isdir(os.path.join(SITES, t)):
            continue
        rdir = os.path.join(SITES, t, "releases")
        kept = sorted(r for r in os.listdir(rdir) if RELEASE.match(r)
                      and os.path.isfile(os.path.join(rdir, r, ".digests"))) \
            if os.path.isdir(rdir) else []
        cur = current(t)
        entry = {"current": cur, "releases": kept}
        if cur:
            keys = _keys_of(t, cur)
            was = dict(keys)
            entry.update(_verify(release_dir(t, cur), keys))
            # Written only when a key changed: a check where nothing changed (most of them)
            # reads the unit's file and writes nothing.
            if keys != was:             # apply and the exporter may write it at once
                os.makedirs(VERIFIED, mode=0o700, exist_ok=True)   # names, digests: root's
                write_json_shared(os.path.join(VERIFIED, f"{t}.json"),
                                  {"release": cur, "keys": keys})
        out[t] = entry
    if not only:    # a full pass: forget the keys of units with nothing live, or gone
        _forget_keys({t for t, e in out.items() if e["current"]})
    print(json.dumps(out, sort_keys=True))


def _forget_keys(live: set[str]) -> None:
    """Remove the key files of units not live here, the one file of an older govhost, and
    the half-written files a killed check left (an hour old)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(OLD_VERIFIED)
    try:
        names = os.listdir(VERIFIED)
    except FileNotFoundError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(VERIFIED, name)
        with contextlib.suppress(FileNotFoundError):
            if name.endswith(".json") and name[:-5] not in live or \
                    name.endswith(".tmp") and now - os.lstat(path).st_mtime > 3600:
                os.unlink(path)


def remove(t: str, archive_dir: str) -> None:
    home = tenant_dir(t)
    os.makedirs(archive_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    archive = os.path.join(archive_dir, f"{t}-{stamp}.tar.gz")
    if os.path.isdir(home):
        with tarfile.open(archive, "w:gz") as tar:
            for part in ("upload", "current", "files", "var"):
                path = os.path.join(home, part)
                if os.path.exists(path):
                    tar.add(os.path.realpath(path), arcname=part)
        os.chmod(archive, 0o600)
    for name in list(os.listdir(KEYS)) if os.path.isdir(KEYS) else []:
        if name == f"gh-{t}" or name.startswith(f"gh-{t}."):
            os.unlink(os.path.join(KEYS, name))
    users = [p.pw_name for p in pwd.getpwall()
             if p.pw_dir == home and (p.pw_name == f"gh-{t}" or p.pw_name.startswith("gh-"))]
    for user in users:
        subprocess.run(["pkill", "-KILL", "-u", user], check=False)
        subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", user], check=False, stderr=subprocess.DEVNULL)
    shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"removed": t, "archive": archive if os.path.exists(archive) else None,
                      "accounts": users}))


COMMANDS = {"converge": converge, "publish": publish, "digests": digests, "live": live,
            "pack": pack, "pack-many": pack_many, "receive-many": receive_many,
            "receive": receive, "switch": switch, "releases": releases, "drop": drop,
            "prune": prune, "holdings": holdings, "remove": remove}

def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        die("usage: govhost-tenants " + "|".join(COMMANDS) + " ...", 2)
    os.umask(0o022)
    COMMANDS[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
