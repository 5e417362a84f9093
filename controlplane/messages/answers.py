"""A unit's answers: recorded in the state store, then sent whole to every node, which shows
the published ones on the unit's page (`list`) and each to its citizen by the reading link
(`reply`). A node that was down gets them at the next answer or `govhost messages sync`."""
from __future__ import annotations

import json
import time
from typing import Any

from controlplane.core import paths
from controlplane.core.county import County
from controlplane.core.state.messages import MessagesStateError
from controlplane.messages.collect import Message, MessagesError, collect, find, link
from govhost_node import messages as rules

MAX_ANSWER = 10_000          # characters


def checked(text: str) -> str:
    """An answer as it will be shown: the citizens' own rules for a message's text."""
    try:
        clean = rules.clean(text, multiline=True)
    except ValueError as exc:
        raise MessagesError(f"the answer {exc}; write it as plain text") from None
    if not clean or len(clean) > MAX_ANSWER:
        raise MessagesError(f"an answer has 1 to {MAX_ANSWER} characters, not {len(clean)}")
    return clean


def _node_answer(r: dict[str, Any]) -> dict[str, Any]:
    return {"number": r["number"], "received": r["received"], "subject": r["subject"],
            "text": r["text"], "answer": r["answer"], "publish": r["publish"],
            "token_hash": r["token_hash"],
            "answered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["answered_at"]))}


def _node_doc(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps([_node_answer(r) for r in rows], ensure_ascii=False).encode()


def push(county: County, unit: str, only: str | None = None) -> dict[str, str]:
    """Send the unit's answers to every node (or `only` that one): node -> "ok" or why it
    failed."""
    with county.state() as st:
        data = _node_doc(st.message_answers(unit))
    names = [n.name for n in county.inv.hosts.nodes if only is None or n.name == only]
    got = link(county).run_each(names, "answers", unit, data=data, timeout=120,
                                tool=paths.NODE_MESSAGES_TOOL)
    return {n: str(r)[-300:] if isinstance(r, Exception) else "ok" for n, r in got.items()}


def add(county: County, unit: str, number: str) -> dict[str, str]:
    """Send one answer (of message `number`) to every node: node -> "ok" or why it failed.
    A node adds it to what it holds only when it then holds as many as the state store;
    one that does not (it missed an answer while down) is sent the unit's whole list.
    Before stop 66 every answer sent the whole list, which each node checked whole: 0.22 s
    at 1,000 earlier answers, 0.88 s at 4,000."""
    with county.state() as st:
        row = st.message_answers(number=number)
        count = st.answer_count(unit)
    if not row or row[0]["unit"] != unit:
        return push(county, unit)
    data = json.dumps({"answer": _node_answer(row[0]), "count": count},
                      ensure_ascii=False).encode()
    names = [n.name for n in county.inv.hosts.nodes]
    got = link(county).run_each(names, "answers-add", unit, data=data, timeout=120,
                                tool=paths.NODE_MESSAGES_TOOL)
    out: dict[str, str] = {}
    for node, r in got.items():
        if isinstance(r, Exception):
            out[node] = str(r)[-300:]
            continue
        try:
            said = json.loads(r)
        except ValueError:
            said = None
        if isinstance(said, dict) and said.get("unit") == unit and \
                said.get("answers") == count and said.get("stale") is None:
            out[node] = "ok"
        elif isinstance(said, dict) and said.get("stale") is True:
            out.update(push(county, unit, only=node))
        else:
            out[node] = f"answers-add on {node} said {r[-200:]!r}"
    return out


def answer(county: County, number: str, text: str, publish: bool, by: str,
           publish_held: bool = False) -> dict[str, Any]:
    """Record the unit's answer to message `number` and show it on every node. A message
    held for the unit (words of the county's `review` lists) is published only when the
    person answering says so (`publish_held`): from the command line they may not have
    read it (the console shows the words beside the answer)."""
    body = checked(text)
    found, _ = collect(county, number)
    m = find(found, number)
    if publish and m.review_words and not publish_held:
        raise MessagesError(
            f"{number} holds words of the county's review lists ({'、'.join(m.review_words)})"
            f": read it (`govhost messages show {number}`), then answer with --not-public, "
            "or with --publish-held to publish it with its answer")
    return record(county, m, body, publish, by)


def record(county: County, m: Message, text: str, publish: bool, by: str,
           owner: str | None = None, draft: int | None = None) -> dict[str, Any]:
    """Record an answer (checked already) to `m` and send the unit's answers to every node.
    The answer is shown where the citizen wrote (`m.unit`), whichever unit gave it.
    `owner`/`draft`: given by that unit in the console (State.record_answer checks it is
    still theirs and unanswered in the same transaction)."""
    try:
        with county.state() as st:
            st.record_answer({"number": m.number, "unit": m.unit, "received": m.received,
                              "subject": m.subject, "text": m.text,
                              "token_hash": m.token_hash}, text, publish, by, owner, draft)
    except MessagesStateError as exc:
        raise MessagesError(str(exc)) from None
    nodes = add(county, m.unit, m.number)
    return {"number": m.number, "unit": m.unit, "publish": publish, "nodes": nodes}


# What one `answers-many` command carries at most: a county's answers go in a few commands
# (the control machine holds a batch in memory; the node reads it a unit at a time).
BATCH_BYTES = 16 * 1024 * 1024


def _line(unit: str, rows: list[dict[str, Any]]) -> bytes:
    return b'{"unit": ' + json.dumps(unit).encode() + b', "answers": ' + _node_doc(rows) + \
        b"}\n"


def _by_unit(county: County) -> dict[str, list[dict[str, Any]]]:
    with county.state() as st:
        rows = st.message_answers()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["unit"], []).append(r)
    return out


def _said(node: str, reply: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """What `answers-many` on `node` took and refused; a reply not of its shape takes
    nothing (a unit is "ok" only when the node named it with its count)."""
    try:
        said = json.loads(reply)
        taken, refused = said["answers"], said["refused"]
        if isinstance(taken, dict) and isinstance(refused, dict):
            return taken, refused, "not taken"
    except (ValueError, KeyError, TypeError):
        pass
    return {}, {}, f"answers-many on {node} said {reply[-200:]!r}"


def sync(county: County, only: str | None = None) -> dict[str, dict[str, str]]:
    """Every unit's answers to every node (or `only` that one) again (after a node was down
    or replaced): unit -> node -> "ok" or why not. One command a node for a batch of units,
    not one a unit (129 s at 1,000 units, some 11 minutes at 5,000). Each batch's answers
    are read just before it is sent: an answer given meanwhile is not overwritten on the
    node by a list read before it, beyond the time of one command."""
    names = [n.name for n in county.inv.hosts.nodes if only is None or n.name == only]
    todo = sorted(_by_unit(county))
    out: dict[str, dict[str, str]] = {u: {} for u in todo}
    ln = link(county)
    i = 0
    while i < len(todo):
        # A batch: units in order while their lines come to BATCH_BYTES (a unit's own line
        # may be larger: the node says if it is too large), read as it is made.
        now = _by_unit(county)
        units: list[str] = []
        lines: list[bytes] = []
        size = 0
        while i < len(todo):
            line = _line(todo[i], now.get(todo[i], []))
            if units and size + len(line) > BATCH_BYTES:
                break
            units.append(todo[i])
            lines.append(line)
            size += len(line)
            i += 1
        sent = {u: len(now.get(u, [])) for u in units}
        got = ln.run_each(names, "answers-many", data=b"".join(lines), timeout=600,
                          tool=paths.NODE_MESSAGES_TOOL)
        for node, r in got.items():
            if isinstance(r, Exception):
                for u in units:
                    out[u][node] = str(r)[-300:]
                continue
            taken, refused, why = _said(node, r)
            for u in units:
                ok = taken.get(u) == sent[u]
                out[u][node] = "ok" if ok else str(refused.get(u, why))[-300:]
    return out
