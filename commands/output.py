"""What every command shares: the loaded county, and printing for people and for scripts.

Formatting (tables, progress, colours) and `--json` live in `commands/` only; the control
plane returns data and raises `GovhostError`s, and these helpers turn them into output and
exit codes.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from controlplane.core import errors
from controlplane.core.county import County

# Control characters but line breaks and tabs: an error may quote what a node or a unit sent.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for logs and grep


class Ctx:
    inventory: Path = Path("inventory")
    debug: bool = False
    loaded: County | None = None


CTX = Ctx()


def county() -> County:
    """The county of this run, made once from `--inventory` (its manifests load on first use)."""
    if CTX.loaded is None or CTX.loaded.root != CTX.inventory:
        CTX.loaded = County(CTX.inventory)
    return CTX.loaded


def emit(data: Any) -> None:
    """One JSON document on stdout, whole. A pipe left non-blocking by a process that shares
    it (ssh sets O_NONBLOCK on the descriptors it is given, and one killed on a timeout never
    puts them back) makes Python drop what the reader has not yet taken, silently and with
    exit 0: CI read `messages list --json` cut in the middle of a character after a node's
    power cut. So stdout is made blocking before anything buffered is flushed, and left so
    (what else this process writes there is as exposed)."""
    text = json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"
    try:
        os.set_blocking(sys.stdout.fileno(), True)
    except (AttributeError, OSError, ValueError):   # not a file (a test's capture)
        pass
    sys.stdout.write(text)
    sys.stdout.flush()


def fail(exc: Exception, as_json: bool = False) -> None:
    if CTX.debug:
        raise exc
    if as_json:
        payload: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, errors.ManifestError):
            payload["problems"] = [vars(p) for p in exc.problems]
        emit(payload)
    elif isinstance(exc, errors.ManifestError):
        err.print(f"[bold red]inventory refused[/]: {len(exc.problems)} problem(s); "
                  "nothing was changed", highlight=False)
        for p in exc.problems:
            err.print(f"  {p}", highlight=False, markup=False)
    else:
        # an error's text may hold what a citizen, a unit or a node wrote: text, never markup
        text = _CONTROLS.sub("?", str(exc))          # no terminal escape either
        err.print(f"[bold red]error[/]: {escape(text)}", highlight=False, emoji=False)
    raise typer.Exit(1)


T = TypeVar("T")


def call(fn: Callable[..., T], *args: Any, as_json: bool = False) -> T:
    """One call into the control plane: its GovhostError becomes the CLI's error and exit 1."""
    try:
        return fn(*args)
    except errors.GovhostError as exc:
        fail(exc, as_json)
        raise   # not reached: fail exits


def table(title: str, *columns: str) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    return t


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def note(msg: str) -> None:
    """A progress line of a long command, on stderr so --json output stays clean."""
    err.print(f"  {msg}", highlight=False)


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def at_option(at: str | None, as_json: bool = False) -> float | None:
    """An `--at` option (2026-11-22T14:30, 2026-11-22 14:30:00+08:00; local time when no zone
    is given) as a timestamp; a time that does not parse is the command's error."""
    if not at:
        return None
    from controlplane.backup.plan import parse_time
    try:
        return parse_time(at)
    except ValueError as exc:
        fail(errors.GovhostError(f"--at: {exc}"), as_json)
        raise   # not reached: fail exits
