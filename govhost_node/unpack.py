"""govhost-unpack: a unit's upload (a tar on stdin, made by the console) into its upload area,
as the unit's own account, following no link (run by govhost as root over SSH).

  unpack T [replace]   read the tar from stdin and write its regular files and folders into
                       /srv/govhost/sites/T/upload; with `replace`, what was there goes first

Why it is careful: the upload area is the unit's to shape. Its SFTP account (or whoever holds
its key) may have made `docs -> /etc/cron.d` or `docs -> ../../othertown/upload` there before
an editor uploads `docs/x` in the console. A root `tar -x` follows such a link and writes a
root-owned file wherever it points. So the work is done by a child process that has become
the unit's user (it can write nothing the unit's SFTP account cannot), and every path is
walked one component at a time from the area's descriptor with O_NOFOLLOW: a link anywhere in
the path is refused with its name (exit 6), never followed. Files are written to a new name
and renamed into place, so a planted hard link to someone else's file is replaced, not
written through.
"""
from __future__ import annotations

import errno
import json
import os
import pwd
import re
import stat
import sys
import tarfile

from govhost_node.layout import NODE

SITES = NODE.sites
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
EXIT_LINK = 6           # a link in the way: the control plane names it to the editor
EXIT_REFUSED = 7        # anything else wrong with the upload (a bad member, a full disk)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_PREFIX = ".govhost-upload-"


class Refused(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def _parts(name: str) -> list[str]:
    """The member's path as components; refused if it could leave the area (the control plane
    checked it already: this is the second look, on the side that writes)."""
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise Refused(f"{name!r}: not a relative path inside the upload area")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused(f"{name!r}: '..' would leave the upload area")
    return parts


def _open_dir(parent: int, part: str, shown: str, create: bool) -> int:
    """The folder `part` under `parent`, never through a link: a link (to anything) is
    refused by name, a missing folder is made when `create`."""
    try:
        return os.open(part, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(part, 0o2775, dir_fd=parent)
        except FileExistsError:
            pass        # made meanwhile (or a dangling link: the open below says which)
        return _open_dir(parent, part, shown, create=False)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            if stat.S_ISLNK(os.lstat(part, dir_fd=parent).st_mode):
                raise Refused(f"{shown}: is a link in the upload area; links are not "
                              "followed. Remove it (over SFTP) and upload again", EXIT_LINK)
            raise Refused(f"{shown}: is a file, not a folder") from exc
        raise


def _write_file(parent: int, part: str, shown: str, src, mode: int) -> int:
    """Write the file under a new name and rename it over `part`: what was there (a file, a
    link, a second name of another file) is replaced, never written through."""
    try:
        old = os.lstat(part, dir_fd=parent)
        if stat.S_ISDIR(old.st_mode):
            raise Refused(f"{shown}: a folder of that name is in the upload area")
    except FileNotFoundError:
        pass
    # Not the file's own name: a long CJK name is 3 bytes a character, past NAME_MAX.
    tmp = f"{TMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=parent)
    size = 0
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            while chunk := src.read(1 << 16):
                out.write(chunk)
                size += len(chunk)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=parent)
        raise
    os.close(fd)
    os.replace(tmp, part, src_dir_fd=parent, dst_dir_fd=parent)
    return size


def _clear(area: int) -> None:
    """Everything in the area goes, links themselves (not what they point at)."""
    import shutil
    for entry in os.listdir(area):
        st = os.lstat(entry, dir_fd=area)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(entry, dir_fd=area)       # fd-based: follows no link
        else:
            os.unlink(entry, dir_fd=area)


def extract(area: int, stream, replace: bool) -> dict[str, int]:
    """Unpack the tar `stream` into the folder open as `area` (the caller is the unit's
    user). Regular files and folders only; Refused on anything else."""
    if replace:
        _clear(area)
    files = size = 0
    opened: dict[tuple[str, ...], int] = {(): area}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = _parts(member.name)
                if not parts:
                    continue
                if not (member.isfile() or member.isdir()):
                    raise Refused(f"{member.name!r}: only files and folders can be uploaded")
                folders = parts if member.isdir() else parts[:-1]
                fd = area
                for i, part in enumerate(folders):
                    key = tuple(folders[:i + 1])
                    if key not in opened:
                        opened[key] = _open_dir(fd, part, "/".join(key), create=True)
                    fd = opened[key]
                if member.isfile():
                    src = tar.extractfile(member)
                    size += _write_file(fd, parts[-1], "/".join(parts), src,
                                        0o664 if member.mode & 0o020 else 0o644)
                    files += 1
    except tarfile.TarError as exc:
        raise Refused(f"the upload is not a readable archive: {exc}") from exc
    finally:
        for key, fd in opened.items():
            if key:
                os.close(fd)
    return {"files": files, "bytes": size}


def _become(user: str) -> None:
    """Drop to the unit's account for good: its groups (its sections' too), its uid."""
    pw = pwd.getpwnam(user)
    os.setgroups(os.getgrouplist(user, pw.pw_gid))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise Refused("could not leave root")
    os.umask(0o022)


def unpack(tenant: str, how: str = "") -> None:
    if not NAME.match(tenant):
        die(f"bad tenant name {tenant!r}", 2)
    if how not in ("", "replace"):
        die(f"unknown mode {how!r} (replace, or nothing)", 2)
    upload = os.path.join(SITES, tenant, "upload")
    try:
        st = os.lstat(upload)
        owner = pwd.getpwuid(st.st_uid).pw_name
    except (OSError, KeyError):
        die(f"{tenant} has no upload area on this node")
    # The area belongs to the unit's account (gh-<unit>, made by govhost-tenants converge).
    if not stat.S_ISDIR(st.st_mode) or st.st_uid == 0 or not owner.startswith("gh-"):
        die(f"{upload} is not the unit's own folder (owner {owner}): run `govhost apply`")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _become(owner)
            area = os.open(upload, DIR_FLAGS)
            print(json.dumps(extract(area, sys.stdin.buffer, how == "replace")))
        except Refused as exc:
            print(f"govhost-unpack: {exc}", file=sys.stderr)
            code = exc.code
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"govhost-unpack: {exc.strerror}{where}", file=sys.stderr)
            code = EXIT_REFUSED
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


def die(msg: str, code: int = 1) -> None:
    print(f"govhost-unpack: {msg}", file=sys.stderr)
    sys.exit(code)


COMMANDS = {"unpack": unpack}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        die("usage: govhost-unpack " + "|".join(COMMANDS) + " ...", 2)
    COMMANDS[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
