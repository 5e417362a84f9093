"""The digest list of a release (`.digests`): every file's sha256, one line each, in
sha256sum's own format (`<64 hex>  <path>`), so that `sha256sum -c` on a node checks a
release without govhost, and a copied release carries its own proof.

Config releases (made on the control machine, sites/apply.py) and content releases (made on
the node, tenants.py) are written here; the tamper watcher, backups' verify and the control
machine read them through here. Paths are relative, normalized and hold no line break or
backslash (uploads and the renderer refuse such names), so no line needs sha256sum's
escaping.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from typing import Mapping

NAME = ".digests"
_LINE = re.compile(r"([0-9a-f]{64})  (.+)")


def format_list(digests: Mapping[str, str]) -> str:
    """The list's text, sorted by path (the same release gives the same bytes)."""
    return "".join(f"{digests[p]}  {p}\n" for p in sorted(digests))


def parse(text: str) -> dict[str, str]:
    """path -> sha256 hex. A line that is not `<64 hex>  <path>` raises ValueError naming
    it: a damaged list must not read as a shorter one."""
    out: dict[str, str] = {}
    # "\n" only: str.splitlines() would also break at U+2028, \x85 or \x0c, which a file
    # name put there over SFTP may hold, and the list the node wrote would not read back.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"{NAME} line {n} is not '<sha256>  <path>': {line[:80]!r}")
        out[m.group(2)] = m.group(1)
    return out


def file_sha256(path: str) -> str:
    """One file's digest as the list holds it (read in 1 MiB blocks)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd_sha256(fd)
    finally:
        os.close(fd)


def fd_sha256(fd: int) -> str:
    """The digest of what an open file holds from where it stands (1 MiB blocks)."""
    h = hashlib.sha256()
    for block in iter(lambda: os.read(fd, 1 << 20), b""):
        h.update(block)
    return h.hexdigest()


# A file hashed within this long of its last change is hashed again at the next check: it may
# change again within one tick of the clock and keep its ctime (git's "racily clean").
SETTLE_NS = 2_000_000_000


def now_ns() -> int:
    return time.time_ns()


def hashed(path: str, known: list | None) -> list | None:
    """`path`'s key: its inode, size, mtime, ctime and the digest of what it holds, read only
    when `known` (its key at the last check) has another stat; None when it is not a regular
    file. The ctime is in the key because nothing sets it back: a file written and its mtime
    put back still counts as changed. The file is opened once, without following a link or
    taking a terminal, and its key taken from what was opened: a link put in a file's place,
    or a file changed between a stat and the read, cannot be taken for the file that was
    hashed. OSError where it cannot be opened (FileNotFoundError: it is gone; ELOOP: a link
    is in its place).

    A file whose lstat is its key's is not opened at all: a check of a whole node every
    minute then costs one stat a file, as it did before the open (the open and its fstat
    doubled the time a file). That is as safe as the fstat: nothing changes a file's bytes,
    or puts another file or a link at its path, and keeps its inode, size, mtime and ctime."""
    if isinstance(known, list) and len(known) == 5:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and known[:4] == [st.st_ino, st.st_size, st.st_mtime_ns,
                                                      st.st_ctime_ns]:
            return known
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, fd_sha256(fd)]
    finally:
        os.close(fd)


def settled(key: list, now: int) -> bool:
    """Whether a key may be kept for the next check: its file last changed long enough ago
    that a second change within one tick of the clock would have moved its ctime."""
    return key[3] < now - SETTLE_NS


def read(release: str) -> dict[str, str]:
    """The list of the release directory `release` (OSError if it has none)."""
    with open(os.path.join(release, NAME), encoding="utf-8") as f:
        return parse(f.read())


def write(release: str, digests: Mapping[str, str]) -> None:
    with open(os.path.join(release, NAME), "w", encoding="utf-8") as f:
        f.write(format_list(digests))
