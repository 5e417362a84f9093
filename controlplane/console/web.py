"""The console's web process: forked by `govhost console` before anything secret is loaded,
then run as the console's own account (commands/console.py, docs/console.md "Two
processes").

The child is a copy of a process that has not yet read the inventory, the cluster secret or
the state, so there is nothing secret in its memory to find. While still root it connects to
the broker, loads every module, template and catalogue it will need (the account that runs
it may not be able to read the interpreter's or the repository's files afterwards: a
pyenv under /root, a checkout in a home directory) and binds its listening socket; then it
drops to the account (no supplementary groups), asks the kernel to end it with its parent,
and serves. Everything it does from then on goes through the broker's socket.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from controlplane.core import paths

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
# Imported lazily by the libraries the web process uses: loaded while the files are readable.
_LATER = ("uvicorn.loops.auto", "uvicorn.loops.asyncio", "uvicorn.protocols.http.auto",
          "uvicorn.protocols.http.h11_impl", "uvicorn.protocols.websockets.auto",
          "uvicorn.lifespan.on", "uvicorn.lifespan.off", "uvicorn.middleware.proxy_headers",
          "concurrent.futures.thread", "encodings.idna", "encodings.ascii",
          "encodings.latin_1", "encodings.utf_8", "email.parser", "email.feedparser",
          "http.cookies", "multipart", "python_multipart", "anyio._backends._asyncio",
          "starlette.formparsers", "starlette.middleware.errors",
          "starlette.middleware.exceptions")


def _wait_for(client: Any, seconds: float = 60.0) -> dict[str, Any]:
    from controlplane.console.transport import BrokerDown
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.call("facts")
        except BrokerDown:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _preload() -> None:
    """Everything the web process reads from disk after it starts, read now."""
    for name in _LATER:
        try:
            importlib.import_module(name)
        except ImportError:
            pass                               # optional (uvloop, httptools, websockets)
    from controlplane.console import i18n, pages
    for template in pages._env.list_templates(filter_func=lambda n: n.startswith("console/")):
        pages._env.get_template(template)
    pages._env.auto_reload = False             # never look at the files again
    for lang in i18n.LANGUAGES:
        i18n.translations(lang)
    for accept in ("zh-CN,zh;q=0.9", "en-US,en;q=0.9", "fr", "x"):
        i18n.pick(None, None, accept)


def _drop(uid: int, gid: int, parent: int) -> None:
    """To the console's account for good, ended with its parent, never gaining privileges."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or (uid != 0 and _can_regain()):
        os._exit(70)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, paths.CONSOLE_WEB_NAME.encode(), 0, 0, 0)   # security check
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:                 # it ended before the setting took
        os._exit(1)


def _can_regain() -> bool:
    try:
        os.setuid(0)
        return True
    except PermissionError:
        return False


def run(socket_path: Path, uid: int | None, gid: int | None, parent: int, secure: bool,
        behind_nginx: bool, listen: str | None) -> None:
    """The child's whole life (never returns)."""
    code = 1
    os.closerange(3, 1 << 16)          # nothing of the parent's but stdin, stdout, stderr
    try:
        import uvicorn

        from controlplane.console.app import build
        from controlplane.console.transport import Client
        client = Client(socket_path)
        facts = _wait_for(client)
        listen = listen or facts["listen"]
        host, _, port = listen.rpartition(":")
        _preload()
        web_app = build(client, secure=secure, behind_nginx=behind_nginx)
        # Only the nodes' nginx, which holds the proxy secret, reaches the console and says
        # who the visitor is (guard.py); uvicorn's own X-Forwarded-For trust by address
        # would believe units' PHP on the same nodes.
        config = uvicorn.Config(web_app, host=host.strip("[]"), port=int(port),
                                proxy_headers=False, log_level="warning",
                                server_header=False)
        config.load()
        # the event loop's module too (uvicorn 0.36 names it get_loop_factory)
        getattr(config, "get_loop_factory", getattr(config, "setup_event_loop", None))()
        sock = config.bind_socket()
        if uid is not None and gid is not None:
            _drop(uid, gid, parent)
        uvicorn.Server(config).run(sockets=[sock])
        code = 0
    except BaseException as exc:        # noqa: BLE001  (the child must never return)
        if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            import traceback
            traceback.print_exc(file=sys.stderr)
    finally:
        sys.stderr.flush()
        os._exit(code)
