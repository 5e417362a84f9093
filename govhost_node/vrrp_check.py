"""keepalived's two probes of nginx on this node's own address (`govhost-node vrrp check
alive|prompt ADDRESS DELAY`; keepalived.conf names them, and the preempt delay).

keepalived runs each of them every second on every web node, so this module imports nothing
it can do without (no http.client, no subprocess: measured, they made one probe cost 170 ms
of CPU instead of 30): a raw HTTP/1.0 request over the C socket module.

`alive`: nginx is there and answers rightly; a stall or an overload (a timeout, an empty
reply, a reset: out of worker connections) passes here and is `prompt`'s business: a 200
within 2 s. Each passes only once it has passed for DELAY seconds in a row (the streak is
kept in /run: it starts again at boot and after any failure, not at a reload). Without
arguments: the check of releases before these two, kept so that an upgrade does not fault
every node while the new release is on its way."""
from __future__ import annotations

import _socket
import os
import time

from govhost_node.layout import Layout

USAGE = "usage: govhost-node vrrp check alive|prompt ADDRESS [DELAY]"
KINDS = ("alive", "prompt")
TIMEOUT = 2.0


class Usage(Exception):
    pass


def streak_file(lay: Layout, kind: str) -> str:
    return f"{lay.streaks}/{kind}-since"


def streak(lay: Layout, kind: str, passed: bool, delay: int) -> bool:
    """True once `kind` has passed for `delay` seconds in a row."""
    path = streak_file(lay, kind)
    if not passed:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return False
    now = int(time.time())
    if not os.path.isfile(path):
        os.makedirs(lay.streaks, exist_ok=True)
        tmp = f"{path}.new"
        with open(tmp, "w") as f:
            f.write(f"{now}\n")
        os.replace(tmp, path)
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        text = ""
    since = int(text) if text.isdigit() else now
    return now - since >= delay


def answer(address: str, timeout: float = TIMEOUT) -> tuple[int | None, bool]:
    """GET /health with Host govhost-probe from nginx on `address`, port 80: (status,
    stalled). `stalled` when the connection was made but no whole status line came back in
    time (a timeout, an empty reply, a reset: an overloaded or stuck nginx, not a dead one);
    a refused connection is neither (nothing listens)."""
    address = address.strip("[]")
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    deadline = time.monotonic() + timeout
    s = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect((address, 80))
        except TimeoutError:
            return None, True
        except OSError:
            return None, False
        got = b""
        try:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            s.sendall(b"GET /health HTTP/1.0\r\nHost: govhost-probe\r\nConnection: close\r\n\r\n")
            while b"\r\n" not in got and len(got) < 4096:
                left = deadline - time.monotonic()
                if left <= 0:                 # bytes trickling in: held to the deadline
                    return None, True
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:            # timed out, reset: stalled
            return None, True
        line = got.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
            return int(line[1]), False
        if not got:
            return None, True      # an empty reply (curl's 52): overloaded, not dead
        return None, False         # something that is not HTTP answers: not nginx
    finally:
        s.close()


def check(lay: Layout, kind: str | None, address: str | None, delay: str | None) -> bool:
    if not kind:
        import json
        try:
            with open(f"{lay.current}/vrrp.json", encoding="utf-8") as f:
                address = str(json.load(f)["probe"])
        except (OSError, ValueError, KeyError):
            return False
        kind, delay = "alive", "0"
    delay = delay or "0"
    if not address or not delay.isdigit() or kind not in KINDS:
        raise Usage(USAGE)
    code, stalled = answer(address)
    passed = code == 200 or (kind == "alive" and code is None and stalled)
    return streak(lay, kind, passed, int(delay))
