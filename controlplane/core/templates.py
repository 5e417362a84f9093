"""The Jinja environments of govhost's templates, with their compiled code kept between runs.

Every `govhost` run is a new process, and Jinja compiles each template it uses from source:
for the twenty-odd templates of a county's configuration that was 0.1–0.3 s of every plan,
apply and status (Python code generated, then compiled by Python). Jinja can keep the
compiled code in files instead; a template whose source changed is compiled again (each file
holds the checksum of the source it came from, and Python's and Jinja's versions).

Loading that code runs it, so it is kept only where nobody else can write: under the home
directory of the account govhost runs as (from the password database, not $HOME, which `sudo`
may carry over from another user), in a directory of mode 0700 owned by that account, whose
every parent is owned by it or by root and writable by nobody else. Where there is none (the
console's account has no home), templates are compiled as before. A file's name holds
Jinja's version and the environment's options: the same template compiles to different code
under different options.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import jinja2

from controlplane.core import paths


def _safe(path: Path, uid: int) -> bool:
    """`path` and every parent: a real directory owned by `uid` or root, that no group or
    other account can write to (nobody else can put or swap a file in it)."""
    for d in (path, *path.parents):
        try:
            st = d.lstat()
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, 0):
            return False
        # writable by others only with the sticky bit (/tmp): nobody renames what is not theirs
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return False
    return True


def cache_dir(kind: str = "templates") -> Path | None:
    """This account's own directory for what govhost keeps between runs (compiled templates,
    OpenCC's tables), made on first use; None where no such directory can be had safely."""
    uid = os.geteuid()
    try:
        home = Path(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return None
    d = home / ".cache" / "govhost" / kind
    try:
        for part in (home / ".cache", home / ".cache" / "govhost", d):
            part.mkdir(mode=0o700, exist_ok=True)
        st = d.lstat()
    except OSError:
        return None
    if st.st_uid != uid or st.st_mode & 0o077 or not _safe(d, uid):
        return None
    return d


def _options_key(tag: str, options: dict[str, Any]) -> str:
    """What the compiled code depends on besides the source: Jinja's version and the
    options, a function by its code."""
    def part(v: Any) -> str:
        code = getattr(v, "__code__", None)
        if code is not None:
            return f"{v.__module__}.{v.__qualname__}:{code.co_code.hex()}:{code.co_consts!r}"
        return repr(v)
    text = jinja2.__version__ + "".join(f"|{k}={part(v)}" for k, v in sorted(options.items()))
    return f"{tag}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class _Cache(jinja2.FileSystemBytecodeCache):
    """A cache that never fails a render: a full disk or a file removed under it only
    means compiling again."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def environment(tag: str, **options: Any) -> jinja2.Environment:
    """An environment over govhost's templates. `tag` names its options (autoescape,
    finalize, whitespace control): the same template compiles to different code under
    different options, so each set keeps its own files."""
    d = cache_dir()
    cache = _Cache(str(d), _options_key(tag, options) + "-%s.cache") if d else None
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.TEMPLATES)),
                              bytecode_cache=cache, **options)
