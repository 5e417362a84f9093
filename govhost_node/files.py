"""Writing the node's own settings files: only when their content changes (so a caller knows
whether to reload something), and atomically (a reader never sees half a file)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import time
from typing import Iterator


@contextlib.contextmanager
def held_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made, 0600, if missing) until the block
    ends: one writer at a time, across processes, for what reads and then writes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_if_changed(path: str, text: str, mode: int = 0o644,
                     owner: tuple[int, int] | None = None) -> bool:
    """Write `text` to `path` unless it holds that already; True when it was written. The
    mode is set either way (a file found with a wrong mode is put right)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                os.chmod(path, mode)
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    if owner is not None:
        os.chown(tmp, *owner)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def write_json_shared(path: str, doc: object) -> None:
    """Write `doc` as JSON to `path` atomically, where two processes may write it at once
    (the status caches: apply and the exporter ask together): each writes its own temporary
    file, named by its pid, so neither renames the other's half-written one; the last rename
    stands."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sweep(folder: str | os.PathLike, older_than: float, prefix: str = "") -> list[str]:
    """Remove what a killed process left in `folder`: each entry whose name starts with
    `prefix` and that was last changed more than `older_than` seconds ago (a file, a link or
    a whole directory; a link is removed, never followed). Another process's sweep may take
    an entry first. Returns the names removed."""
    removed = []
    now = time.time()
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:           # another process's sweep took it
            continue
        if now - st.st_mtime <= older_than:
            continue
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # only tidying: never a reason to fail
                os.unlink(path)
        if not os.path.lexists(path):
            removed.append(name)
    return removed
