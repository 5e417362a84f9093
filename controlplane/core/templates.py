"""The Jinja environments of govhost's templates, with their compiled code kept between runs.

Every `govhost` run is a new process, and Jinja compiles each template it uses from source:
for the twenty-odd templates of a county's configuration that was about 0.3 s of every plan,
apply and status (Python code generated, then compiled by Python). Jinja can keep the
compiled code in files instead; a template whose source changed is compiled again (each file
holds the checksum of the source it came from, and Python's and Jinja's versions).

Loading that code runs it, so it is kept only where nobody else can write: a directory of the
user's own cache, mode 0700, owned by the user. Where there is none (the console's account
has no home), templates are compiled as before.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import jinja2

from controlplane.core import paths


def cache_dir() -> Path | None:
    """This user's own directory for compiled templates, made on first use; None where no
    such directory can be had safely."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    d = Path(base) / "govhost" / "templates"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = d.lstat()
    except (OSError, RuntimeError):
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return d


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
    cache = _Cache(str(d), f"{tag}-%s.cache") if d else None
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(paths.TEMPLATES)),
                              bytecode_cache=cache, **options)
