"""One answer goes to the nodes alone (`govhost-messages answers-add`), not the unit's whole
answered list (stop 66: each node checked the whole list for every answer, 0.22 s at 1,000
earlier answers, 0.88 s at 4,000). A node that missed an answer while it was down is found
by the count and sent the whole list. Real state store; each node's command is the node's
own code on a spool of its own, fed the bytes SSH would carry (SSH stands in here;
tests/integration/test_messages_lab.py answers on the lab)."""
from __future__ import annotations

import fcntl
import json
import os
import threading
from datetime import date

import pytest

from controlplane.core.county import County
from controlplane.messages import answers
from controlplane.messages.collect import Message
from controlplane.sites.content_sync import Link, SyncError
from govhost_node import message_server as ms
from govhost_node import messages as rules
from govhost_node.layout import Layout
from govhost_node.message_spool import Spool, answers_digest
from tests.helpers import example_inventory


def message(i: int, unit: str = "jiaoyu") -> Message:
    m = rules.accept("JY", 1, i, date(2026, 12, 5))
    return Message(number=m.number, unit=unit, received="2026-12-05T02:00:00Z",
                   subject=f"第{i}件", text="青水路的路灯坏了。" * i, name="张先生",
                   contact="13800138000", token_hash=rules.token_hash(m.token),
                   taken_by="n1", stored_on=("n1", "n2"), differs=False)


@pytest.fixture
def county(tmp_path):
    dest = tmp_path / "inventory"
    example_inventory(dest)
    return County(dest)


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    """Each node's spool; `commands`: (node, args, bytes sent); `down`: nodes unreachable."""
    state = {"commands": [], "down": set()}
    handlers = {"answers-add": ms.add_one_answer, "answers": ms.take_answers}

    def run_each(self, names, *args, data=None, timeout=600, tool=""):
        out = {}
        for name in names:
            state["commands"].append((name, args, len(data or b"")))
            if name in state["down"]:
                out[name] = SyncError(f"{args[0]} on {name}: ssh: connect: No route to host")
                continue
            lay = Layout.under(str(tmp_path / name))
            try:
                got = handlers[args[0]](lay, args[1], data)
            except ValueError as exc:       # what the node prints and exits 2 with
                out[name] = SyncError(f"{args[0]} on {name}: {exc}")
                continue
            out[name] = json.dumps(got if isinstance(got, dict) else
                                   {"unit": args[1], "answers": got})
        return out
    monkeypatch.setattr(Link, "run_each", run_each)
    state["held"] = lambda name, unit="jiaoyu": json.loads(
        open(Spool(Layout.under(str(tmp_path / name))).answers_path(unit)).read())
    return state


def expected(county: County, unit: str = "jiaoyu") -> list:
    with county.state() as st:
        return json.loads(answers._node_doc(st.message_answers(unit)))


def key(doc: list) -> list:
    return sorted(doc, key=lambda a: a["number"])


def test_each_answer_goes_alone_and_a_node_that_missed_one_gets_the_whole_list(county, nodes):
    for i in range(1, 41):
        got = answers.record(county, message(i), f"已修复（{i}）", i % 3 != 0, "ops")
        assert got["nodes"] == {"n1": "ok", "n2": "ok", "n3": "ok"}
    assert all(args[0] == "answers-add" for _, args, _ in nodes["commands"])
    assert max(size for _, _, size in nodes["commands"]) < 2_000     # one answer, not 40
    for n in ("n1", "n2", "n3"):
        assert key(nodes["held"](n)) == key(expected(county))
    # n3 is down for two answers (one of them given again, in place of the first)
    nodes["down"].add("n3")
    answers.record(county, message(41), "四十一", True, "ops")
    got = answers.record(county, message(5), "改正后的答复", True, "ops")
    assert got["nodes"]["n3"].startswith("answers-add on n3: ssh")
    nodes["down"].clear()
    nodes["commands"].clear()
    got = answers.record(county, message(42), "四十二", False, "ops")
    assert got["nodes"] == {"n1": "ok", "n2": "ok", "n3": "ok"}
    assert [(n, args[0]) for n, args, _ in nodes["commands"]] == [
        ("n1", "answers-add"), ("n2", "answers-add"), ("n3", "answers-add"),
        ("n3", "answers")]                             # found short by the count, then mended
    for n in ("n1", "n2", "n3"):
        assert key(nodes["held"](n)) == key(expected(county))
    assert [a["answer"] for a in nodes["held"]("n3") if a["number"] == message(5).number] \
        == ["改正后的答复"]


@pytest.mark.parametrize("change", [
    {"answer": "已修复\u2028<script>"}, {"subject": "路灯\n伪造"}, {"extra": "x"},
    {"number": "../../etc/passwd"}, {"publish": "yes"}, {"token_hash": "zz"}])
def test_a_bad_answer_is_refused_and_the_list_is_kept(county, nodes, tmp_path, change):
    answers.record(county, message(1), "已修复", True, "ops")
    before = nodes["held"]("n1")
    lay = Layout.under(str(tmp_path / "n1"))
    good = answers._node_answer(_row(county, message(1).number))
    with pytest.raises(ValueError):
        ms.add_one_answer(lay, "jiaoyu", json.dumps({
            "answer": {**good, **change}, "digest": answers_digest([{**good, **change}])
        }).encode())
    assert nodes["held"]("n1") == before


def _row(county: County, number: str) -> dict:
    with county.state() as st:
        return st.message_answers(number=number)[0]


@pytest.mark.parametrize("doc", [
    {"digest": "0" * 64}, [1, 2], "x", {"answer": {}, "digest": "0" * 64, "more": 1},
    "DIGEST_TRUE", "DIGEST_SHORT", "DIGEST_PATH", "COUNT"])
def test_a_bad_stream_is_refused(county, nodes, tmp_path, doc):
    answers.record(county, message(1), "已修复", True, "ops")
    good = answers._node_answer(_row(county, message(1).number))
    doc = {"DIGEST_TRUE": {"answer": good, "digest": True},
           "DIGEST_SHORT": {"answer": good, "digest": "ab"},
           "DIGEST_PATH": {"answer": good, "digest": "../" + "0" * 61},
           "COUNT": {"answer": good, "count": 1}}.get(doc, doc) \
        if isinstance(doc, str) else doc
    lay = Layout.under(str(tmp_path / "n1"))
    with pytest.raises(ValueError):
        ms.add_one_answer(lay, "jiaoyu", json.dumps(doc).encode())
    with pytest.raises(ValueError):
        ms.add_one_answer(lay, "../jiaoyu", json.dumps(
            {"answer": good, "digest": answers_digest([good])}).encode())
    assert nodes["held"]("n1") == [good]


@pytest.mark.parametrize("stdin", [b"[" * 100_000, b"\xff\xfe", b"{", b'{"answer": 1}'])
def test_the_nodes_command_refuses_a_bad_stream_with_exit_2(tmp_path, monkeypatch, capsys,
                                                            stdin):
    import io
    import sys
    monkeypatch.setattr(ms, "NODE", Layout.under(str(tmp_path / "n1")))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exc:
        ms.main(["answers-add", "jiaoyu"])
    assert exc.value.code == 2 and "refused" in capsys.readouterr().err
    assert not os.path.exists(Spool(ms.NODE).answers_path("jiaoyu"))


def test_two_answers_at_once_on_a_node_are_both_kept(county, nodes, tmp_path):
    """The read, add and write are one step under the answers' lock: an answer added while
    another is being written waits for it instead of writing over it."""
    for i in (1, 2):
        answers.record(county, message(i), f"答复{i}", True, "ops")
    lay = Layout.under(str(tmp_path / "n1"))
    spool = Spool(lay)
    third = answers._node_answer({**_row(county, message(2).number),
                                  "number": message(3).number})
    fd = os.open(os.path.join(spool.root, "answers", ".lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                     # another writer, mid-write
    done = []
    fourth = answers._node_answer({**_row(county, message(1).number),
                                   "number": message(4).number})
    want = answers_digest(nodes["held"]("n1") + [third, fourth])
    t = threading.Thread(target=lambda: done.append(spool.add_answer("jiaoyu", third, want)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and done == []                # it waits: nothing read yet
    with open(spool.answers_path("jiaoyu"), encoding="utf-8") as f:
        held = json.load(f)
    spool._replace(os.path.dirname(spool.answers_path("jiaoyu")),
                   spool.answers_path("jiaoyu"), json.dumps(held + [fourth]).encode())
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(10)
    assert done == [4]              # it read the list after the other's answer was in it
    assert sorted(a["number"] for a in nodes["held"]("n1")) == sorted(
        message(i).number for i in (1, 2, 3, 4))


def test_a_changed_answer_a_node_missed_is_mended_by_the_next_answer(county, nodes):
    """Found by the review: with a count alone, a node down while an answer was changed
    (made private) kept the old one public, and took the next answer as if its list were
    right. The digest finds it, and the node is sent the whole list."""
    for i in (1, 2, 3):
        answers.record(county, message(i), f"答复{i}", True, "ops")
    nodes["down"].add("n3")
    answers.record(county, message(2), "改过的答复", False, "ops")     # made private
    nodes["down"].clear()
    nodes["commands"].clear()
    got = answers.record(county, message(4), "答复4", True, "ops")
    assert got["nodes"] == {"n1": "ok", "n2": "ok", "n3": "ok"}
    assert ("n3", ("answers", "jiaoyu")) in [(n, a) for n, a, _ in nodes["commands"]]
    for n in ("n1", "n2", "n3"):
        assert key(nodes["held"](n)) == key(expected(county))
    assert [(a["answer"], a["publish"]) for a in nodes["held"]("n3")
            if a["number"] == message(2).number] == [("改过的答复", False)]


def test_a_node_without_answers_add_is_sent_the_whole_list(county, nodes, monkeypatch):
    """A node not applied since the upgrade refuses the command (argparse's words): it
    gets the whole list as before, and the answer reaches it."""
    real = Link.run_each

    def old_node(self, names, *args, **kw):
        got = real(self, [n for n in names if not (n == "n2" and args[0] == "answers-add")],
                   *args, **kw)
        if "n2" in names and args[0] == "answers-add":
            got["n2"] = SyncError("answers-add on n2: usage: govhost-messages [-h] ... "
                                  "argument cmd: invalid choice: 'answers-add' (choose from "
                                  "'serve', 'dump', 'keep', 'answers', 'answers-many')")
        return got
    monkeypatch.setattr(Link, "run_each", old_node)
    got = answers.record(county, message(1), "答复", True, "ops")
    assert got["nodes"] == {"n1": "ok", "n2": "ok", "n3": "ok"}
    assert key(nodes["held"]("n2")) == key(expected(county))


def test_an_answer_read_later_never_reaches_a_node_before_one_read_earlier(county, nodes,
                                                                         monkeypatch):
    """Two changes of one answer at once (two reviewers, or a console answer during a
    `sync`): the second waits for the first's sending to end (`_sending`), so the node is
    never left with the older text."""
    answers.record(county, message(1), "第一版", True, "ops")
    real = Link.run_each
    arrived, reached = [], threading.Event()
    second: list = []
    during: list = []

    def slow(self, names, *args, data=None, **kw):
        arrived.append(json.loads(data)["answer"]["answer"] if args[0] == "answers-add"
                       else args[0])
        if len(arrived) == 1:        # the first send is on its way: a second answer now
            t = threading.Thread(target=lambda: answers.record(
                county, message(1), "第二版", True, "ops"))
            t.start()
            second.append(t)
            reached.wait(0.5)
            during.append(reached.is_set())    # as the first send goes out
        else:
            reached.set()
        return real(self, names, *args, data=data, **kw)
    monkeypatch.setattr(Link, "run_each", slow)
    answers.record(county, message(1), "第一版（改）", True, "ops")
    assert during == [False]             # the second did not send while the first was
    second[0].join(10)
    assert arrived == ["第一版（改）", "第二版"]
    for n in ("n1", "n2", "n3"):
        assert [a["answer"] for a in nodes["held"](n)] == ["第二版"]


def test_an_answer_the_state_does_not_hold_sends_the_whole_list_without_waiting_on_itself(
        county, nodes):
    """Found in the last read: `add` for a number the unit has no answer to (the state
    changed under it) sent the whole list through `push`, which takes the sending lock
    `add` already held: the request would have waited for ever."""
    answers.record(county, message(1), "答复", True, "ops")
    got = []
    t = threading.Thread(target=lambda: got.append(answers.add(county, "jiaoyu",
                                                               message(9).number)),
                         daemon=True)            # a regression must not hold the run's end
    t.start()
    t.join(20)
    assert not t.is_alive() and got == [{"n1": "ok", "n2": "ok", "n3": "ok"}]
    assert key(nodes["held"]("n2")) == key(expected(county))
