"""ACME HTTP-01 answers on the node: written where every vhost serves
/.well-known/acme-challenge/ (render.py's ACME location), so that any node the CA reaches
answers for the county."""
from __future__ import annotations

import os
import re
import time
from typing import Iterable

from govhost_node.layout import Layout
from govhost_node.system import die, remove

# Tokens and key authorizations are base64url (RFC 8555), with one dot in the latter.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_-]{1,128}\.[A-Za-z0-9_-]{1,128}")
STALE_SECONDS = 24 * 3600
USAGE = "usage: govhost-node challenge put|remove"


def apply(lay: Layout, action: str, lines: Iterable[str]) -> None:
    """`put`: lines "TOKEN KEYAUTH"; `remove`: lines "TOKEN". A bad line stops the run
    before anything after it is written."""
    if action not in ("put", "remove"):
        raise die(USAGE)
    where = lay.challenges
    os.makedirs(where, mode=0o755, exist_ok=True)
    for line in lines:
        token, _, value = line.rstrip("\n").strip().partition(" ")
        value = value.strip()
        if not TOKEN.fullmatch(token):
            raise die(f"bad challenge token '{token}'")
        if action == "put":
            if not KEY_AUTHORIZATION.fullmatch(value):
                raise die(f"bad key authorization for {token}")
            tmp = f"{where}/.{token}.tmp"
            with open(tmp, "w") as f:
                f.write(value)
            os.chmod(tmp, 0o644)
            os.replace(tmp, f"{where}/{token}")
        else:
            remove(f"{where}/{token}")
    # Answers of runs that died before cleaning up are of no use after a day.
    cutoff = time.time() - STALE_SECONDS
    for name in os.listdir(where):
        path = f"{where}/{name}"
        if os.path.isfile(path) and os.path.getmtime(path) < cutoff:
            remove(path)
