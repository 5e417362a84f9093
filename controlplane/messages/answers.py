"""A unit's answers: recorded in the state store, then sent to every node (the new answer,
with a digest of the unit's whole list; the whole list to a node whose list differs), which
shows the published ones on the unit's page (`list`) and each to its citizen by the reading
link (`reply`). A node that was down gets them at the next answer or `govhost messages
sync`."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Iterator

from controlplane.core import paths
from controlplane.core.county import County
from controlplane.core.state.messages import MessagesStateError
from controlplane.messages.collect import Message, MessagesError, collect, find, link
from controlplane.sites.content_sync import Link
from govhost_node import messages as rules
from govhost_node.files import held_lock
from govhost_node.message_spool import answers_digest

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
    with _sending(county):
        return _push_read(county, unit, only)


def _push_read(county: County, unit: str, only: str | None) -> dict[str, str]:
    """`push`, with the sending lock held by the caller."""
    with county.state() as st:
        data = _node_doc(st.message_answers(unit))
    names = [n.name for n in county.inv.hosts.nodes if only is None or n.name == only]
    got = link(county).run_each(names, "answers", unit, data=data, timeout=120,
                                tool=paths.NODE_MESSAGES_TOOL)
    return {n: str(r)[-300:] if isinstance(r, Exception) else "ok" for n, r in got.items()}


@contextmanager
def _sending(county: County) -> Iterator[None]:
    """One sender of answers at a time on this control machine, from its read of the state
    to the nodes' replies: a list or answer read earlier can then never reach a node after
    one read later (a console answer and a `sync` batch, or two answers, at once)."""
    county.state_dir.mkdir(parents=True, exist_ok=True)
    with held_lock(county.state_dir / "answers-send.lock"):
        yield


def add(county: County, unit: str, number: str) -> dict[str, str]:
    """Send one answer (of message `number`) to every node: node -> "ok" or why it failed.
    A node adds it only when its list then is the state store's to the byte (a digest of
    it goes along); one that differs (it missed an answer, or a changed one, while it was
    down) is sent the unit's whole list, and so is a node on an older govhost without
    `answers-add`. Before stop 66 every answer sent the whole list, which each node checked
    whole: 85 ms of each node's CPU at 1,000 earlier answers, 336 ms at 4,000."""
    with _sending(county):
        with county.state() as st:
            rows = st.message_answers(unit)
        mine = [r for r in rows if r["number"] == number]
        if not mine:
            return _push_read(county, unit, None)    # the lock is held here
        doc = [_node_answer(r) for r in rows]
        data = json.dumps({"answer": _node_answer(mine[0]), "digest": answers_digest(doc)},
                          ensure_ascii=False).encode()
        names = [n.name for n in county.inv.hosts.nodes]
        got = link(county).run_each(names, "answers-add", unit, data=data, timeout=120,
                                    tool=paths.NODE_MESSAGES_TOOL)
        out: dict[str, str] = {}
        whole: list[str] = []
        for node, r in got.items():
            if isinstance(r, Exception):
                if "invalid choice: 'answers-add'" in str(r):     # not applied since
                    whole.append(node)
                else:
                    out[node] = str(r)[-300:]
                continue
            try:
                said = json.loads(r)
            except ValueError:
                said = None
            if isinstance(said, dict) and said.get("unit") == unit and \
                    said.get("answers") == len(rows) and "stale" not in said:
                out[node] = "ok"
            elif isinstance(said, dict) and said.get("stale") is True:
                whole.append(node)
            else:
                out[node] = f"answers-add on {node} said {r[-200:]!r}"
        for node in whole:
            out.update(_push_read(county, unit, node))
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
    are read just before it is sent, and no answer is sent between (`_sending`): an answer
    given meanwhile is not overwritten on the node by a list read before it."""
    names = [n.name for n in county.inv.hosts.nodes if only is None or n.name == only]
    todo = sorted(_by_unit(county))
    out: dict[str, dict[str, str]] = {u: {} for u in todo}
    ln = link(county)
    i = 0
    while i < len(todo):
        with _sending(county):
            i, sent, got = _send_batch(county, ln, names, todo, i)
        for node, r in got.items():
            if isinstance(r, Exception):
                for u in sent:
                    out[u][node] = str(r)[-300:]
                continue
            taken, refused, why = _said(node, r)
            for u in sent:
                ok = taken.get(u) == sent[u]
                out[u][node] = "ok" if ok else str(refused.get(u, why))[-300:]
    return out


def _send_batch(county: County, ln: Link, names: list[str], todo: list[str], i: int
                ) -> tuple[int, dict[str, int], dict[str, str | Exception]]:
    """One batch from `todo[i]` on: units in order while their lines come to BATCH_BYTES
    (a unit's own line may be larger: the node says if it is too large), read as it is
    made. Returns where the next batch begins, unit -> answers sent, and the replies."""
    now = _by_unit(county)
    lines: list[bytes] = []
    sent: dict[str, int] = {}
    size = 0
    while i < len(todo):
        line = _line(todo[i], now.get(todo[i], []))
        if sent and size + len(line) > BATCH_BYTES:
            break
        sent[todo[i]] = len(now.get(todo[i], []))
        lines.append(line)
        size += len(line)
        i += 1
    got = ln.run_each(names, "answers-many", data=b"".join(lines), timeout=600,
                      tool=paths.NODE_MESSAGES_TOOL)
    return i, sent, got
