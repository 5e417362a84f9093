"""The county's messages, as the nodes hold them.

Each message lives on at least two nodes (the one that took it and a peer) before the citizen
has its number; the control machine keeps no copy of its own yet, so what it shows is read
from the nodes each time. One node down loses nothing from this view: every message has
another copy. A message whose copies differ is shown with `differs` (a node's disk, or a bug;
never silently one of them).
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from controlplane.core import paths
from controlplane.core.county import County
from controlplane.core.errors import GovhostError
from controlplane.messages.deadlines import COUNTY_TIME
from controlplane.sites.content_sync import Link, SyncError
from govhost_node.message_spool import HELD, NUMBER, UNIT, forget_limit, forgotten, number_day

# What a message is, without where it is kept and how (those differ between copies).
CONTENT = ("number", "unit", "node", "received", "subject", "text", "name", "contact",
           "token_hash", HELD)
PERSONAL = ("name", "contact")


class MessagesError(GovhostError):
    pass


@dataclass(frozen=True)
class Message:
    number: str
    unit: str
    received: str            # UTC, as the node wrote it
    subject: str
    text: str
    name: str
    contact: str             # never on a page; `show` audits who read it
    token_hash: str          # the reading link's key, hashed (the answer is shown by it)
    taken_by: str            # the node the citizen wrote through
    stored_on: tuple[str, ...]
    differs: bool
    # words of the county's `review` lists the node found in it: held for the unit
    review_words: tuple[str, ...] = ()
    # the record as the first node holds it (what a node is given back to keep a copy)
    record: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def received_local(self) -> str:
        """The county's time of day (UTC+8), as citizens and units read it."""
        t = datetime.strptime(self.received, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        return t.astimezone(COUNTY_TIME).strftime("%Y-%m-%d %H:%M")

    def public(self) -> dict[str, Any]:
        """Everything but the contact (lists, scripts that need no personal data)."""
        return {"number": self.number, "unit": self.unit, "received": self.received,
                "subject": self.subject, "text": self.text, "name": self.name,
                "taken_by": self.taken_by, "stored_on": list(self.stored_on),
                "copies": len(self.stored_on), "differs": self.differs,
                "review_words": list(self.review_words)}


def merge(dumps: Mapping[str, str]) -> list[Message]:
    """Every message in the nodes' `govhost-messages dump` output (node -> its lines), once,
    in number order, with the nodes that hold it."""
    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for node, text in sorted(dumps.items()):
        for line in text.splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            seen.setdefault(str(record["number"]), []).append((node, record))
    found = []
    for number, copies in sorted(seen.items()):
        # A copy whose name and contact are both forgotten (the county's retention; a node
        # that was down forgets at its next run) differs from a whole one only in those,
        # and only once the message is old enough to have been forgotten anywhere. Whole
        # copies are compared with each other in full, and one of them is shown.
        whole = [(n, r) for n, r in copies if not forgotten(r)]
        first = (whole or copies)[0][1]
        others = {tuple(str(r.get(k, "")) for k in CONTENT if k not in PERSONAL)
                  for _, r in copies}
        personal = {tuple(str(r.get(k, "")) for k in PERSONAL) for _, r in whole}
        early = len(whole) < len(copies) and str(first["received"]) > forget_limit()
        found.append(Message(
            number=number, unit=str(first["unit"]), received=str(first["received"]),
            subject=str(first["subject"]), text=str(first["text"]), name=str(first["name"]),
            contact=str(first["contact"]), token_hash=str(first["token_hash"]),
            taken_by=str(first["node"]),
            stored_on=tuple(sorted({n for n, _ in copies})),
            differs=len(others) > 1 or len(personal) > 1 or early,
            review_words=tuple(str(first[HELD]).split("\n")) if first.get(HELD) else (),
            record={k: v for k, v in first.items() if k != "held_as"}))
    return found


def link(county: County) -> Link:
    """How the control machine runs govhost-messages on the county's nodes."""
    inv = county.inv
    return Link(inv.hosts, county.known_hosts, {n.name: n for n in inv.hosts.nodes})


def collect(county: County, number: str | None = None, unit: str | None = None,
            placed: Iterable[tuple[str, str]] = (), since: str | None = None
            ) -> tuple[list[Message], dict[str, str]]:
    """The messages every reachable node holds, and the nodes that could not be read (with
    why). Raises only when no node answers. Or only: `number` (that message, every copy);
    `unit` (the messages written to it) and `placed` ((unit, number): those messages, in
    the folder of the unit each was written to); or `since` (YYYYMMDD: the messages of that
    day or later, by their numbers). A few files a node instead of every message of the
    county read, sent and merged (1.1 s and 23 MB a node at 40,000 messages, and 2.5 s to
    merge three nodes'). A node on an older govhost, which knows none of these, is read
    whole and narrowed here."""
    args, data, placed = ["dump"], None, list(placed)
    if since is not None:
        if not re.fullmatch(r"[0-9]{8}", since, re.ASCII) or number or unit or placed:
            raise ValueError(f"since is a day (YYYYMMDD) alone, not {since!r}")
        args += ["--since", since]
    if number is not None:
        if not NUMBER.fullmatch(number):
            raise MessagesError(f"no message {number!r}: a number is like "
                                "JY-20261205-1-000042 (`govhost messages list` shows them)")
        args += ["--number", number]
    if unit is not None and UNIT.fullmatch(unit):   # a name a node refuses has no folder
        args += ["--unit", unit]
    pairs = [(u, n) for u, n in placed if UNIT.fullmatch(u) and NUMBER.fullmatch(n)]
    if pairs:
        args.append("--placed")
        data = "".join(f"{u} {n}\n" for u, n in pairs).encode()
    if len(args) == 1 and (number is not None or unit is not None):
        return [], {}                  # nothing a node could hold
    names = [n.name for n in county.inv.hosts.nodes]
    got = link(county).run_each(names, *args, data=data, timeout=120,
                                tool=paths.NODE_MESSAGES_TOOL)
    older = [n for n, e in got.items() if isinstance(e, Exception) and OLDER in str(e)]
    if older and len(args) > 1:
        wanted = _wanted(number, unit, pairs, since)
        for n, t in link(county).run_each(older, "dump", timeout=120,
                                          tool=paths.NODE_MESSAGES_TOOL).items():
            got[n] = t if isinstance(t, Exception) else "".join(
                line + "\n" for line in t.splitlines() if line.strip() and
                wanted(json.loads(line)))
    failed = {n: str(e)[-300:] for n, e in got.items() if isinstance(e, Exception)}
    if len(failed) == len(names):
        raise MessagesError("no node could be read: " + "; ".join(
            f"{n}: {e}" for n, e in sorted(failed.items())))
    return merge({n: t for n, t in got.items() if isinstance(t, str)}), failed


# How a node on an older govhost refuses an option of `dump` it does not know (argparse).
OLDER = "unrecognized arguments"


def _wanted(number: str | None, unit: str | None, pairs: list[tuple[str, str]],
            since: str | None) -> Callable[[Any], bool]:
    """The records a narrowed `dump` gives, as a test on one record of a whole dump."""
    placed = set(pairs)

    def wanted(r: Any) -> bool:
        if not isinstance(r, dict):
            return False
        n, u = str(r.get("number", "")), str(r.get("unit", ""))
        if since is not None:
            return number_day(n) >= since
        return n == number or u == unit or (u, n) in placed
    return wanted


def find(messages: list[Message], number: str) -> Message:
    for m in messages:
        if m.number == number:
            return m
    raise MessagesError(f"no message {number!r} on the nodes that answered; "
                        "`govhost messages list` shows the numbers")


def restore_copies(county: County, node: str) -> dict[str, Any]:
    """Give `node` (a replaced or new node) a copy of every message the others hold only
    once, so each is on two machines again."""
    found, failed = collect(county)
    single = [m for m in found if len(m.stored_on) == 1 and node not in m.stored_on]
    if not single:
        return {"copied": 0, "unreadable_nodes": failed}
    data = "".join(json.dumps(dict(m.record), ensure_ascii=False) + "\n" for m in single)
    try:
        link(county).run(node, "keep", data=data.encode(), timeout=300,
                         tool=paths.NODE_MESSAGES_TOOL)
    except (SyncError, subprocess.TimeoutExpired, OSError) as exc:
        raise MessagesError(f"{node} did not keep the copies: {exc}") from None
    return {"copied": len(single), "unreadable_nodes": failed}
