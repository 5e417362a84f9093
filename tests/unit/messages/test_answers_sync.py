"""`govhost messages sync` (and a joining or replaced node) sends every unit's answers in a
few `answers-many` commands, not one a unit. Real state store; each node's command is the
node's own code (`take_many_answers`) on a spool of its own, fed the bytes SSH would carry
(SSH stands in here; tests/integration/test_messages_lab.py and test_machines_lab.py run
it on the lab)."""
from __future__ import annotations

import io
import json
import os
from datetime import date

import pytest

from controlplane.core.county import County
from controlplane.messages import answers
from controlplane.sites.content_sync import Link, SyncError
from govhost_node import message_server as ms
from govhost_node import messages as rules
from govhost_node.layout import Layout
from govhost_node.message_spool import Spool
from tests.helpers import example_inventory

UNITS = {"jiaoyu": "JY", "chahe": "CH", "wenlv": "WL"}


@pytest.fixture
def county(tmp_path):
    dest = tmp_path / "inventory"
    example_inventory(dest)
    c = County(dest)
    with c.state() as st:
        for unit, code in UNITS.items():
            for i in range(1, 31):
                m = rules.accept(code, 1, i, date(2026, 12, 5))
                st.record_answer({"number": m.number, "unit": unit,
                                  "received": "2026-12-05T02:00:00Z", "subject": f"第{i}件",
                                  "text": "路灯坏了" * i, "token_hash": rules.token_hash(m.token)},
                                 f"已修复（{i}）", i % 3 != 0, "ops")
    return c


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    """Each node's spool; `commands` counts what was run where; `down` names nodes that
    cannot be reached."""
    state = {"spools": {}, "commands": [], "down": set(), "root": tmp_path}

    def run_each(self, names, *args, data=None, timeout=600, tool=""):
        out = {}
        for name in names:
            state["commands"].append((name, args))
            if name in state["down"]:
                out[name] = SyncError(f"{args[0]} on {name}: ssh: connect: No route to host")
                continue
            lay = Layout.under(str(tmp_path / name))
            state["spools"][name] = Spool(lay)
            assert args == ("answers-many",)
            out[name] = json.dumps(ms.take_many_answers(lay, io.BytesIO(data)))
        return out
    monkeypatch.setattr(Link, "run_each", run_each)
    return state


def test_every_units_answers_reach_the_node_in_few_commands_as_push_would_send_them(
        county, nodes, monkeypatch):
    monkeypatch.setattr(answers, "BATCH_BYTES", 20_000)     # about a unit a command
    got = answers.sync(county, only="n3")
    assert got == {u: {"n3": "ok"} for u in sorted(UNITS)}
    batches = [c for c in nodes["commands"] if c[0] == "n3"]
    assert 2 <= len(batches) <= len(UNITS)
    with county.state() as st:
        for unit in UNITS:
            sent = json.loads(answers._node_doc(st.message_answers(unit)))
            with open(nodes["spools"]["n3"].answers_path(unit), encoding="utf-8") as f:
                assert json.load(f) == sent, unit
    nodes["commands"].clear()
    monkeypatch.setattr(answers, "BATCH_BYTES", 16 * 1024 * 1024)
    answers.sync(county)
    assert sorted(c[0] for c in nodes["commands"]) == ["n1", "n2", "n3"]   # one each


def test_a_node_down_or_refusing_a_unit_is_named_for_each_unit(county, nodes, monkeypatch):
    nodes["down"].add("n2")
    real = ms.take_many_answers

    def refuses_wenlv(lay, stream):
        lines = [ln for ln in stream.read().splitlines(keepends=True)
                 if json.loads(ln)["unit"] != "wenlv"]
        lines.append(b'{"unit": "wenlv", "answers": "x"}\n')
        return real(lay, io.BytesIO(b"".join(lines)))
    monkeypatch.setattr(ms, "take_many_answers", refuses_wenlv)
    got = answers.sync(county)
    assert {u: got[u]["n1"] for u in UNITS} == {"jiaoyu": "ok", "chahe": "ok",
                                               "wenlv": "answers must be a list"}
    assert all("No route to host" in got[u]["n2"] for u in UNITS)


@pytest.mark.parametrize("reply", [
    '{"answers": "xjiaoyuchahewenlv", "refused": {}}',       # a string: no substring passes
    '{"answers": {"jiaoyu": 30}, "refused": []}',
    '{"answers": ["jiaoyu", "chahe", "wenlv"], "refused": {}}',
    '{"answers": {"jiaoyu": 1, "chahe": 30, "wenlv": 30}, "refused": {}}',   # one short
    "Traceback (most recent call last):", "", "null",
])
def test_a_reply_not_of_the_nodes_shape_makes_no_unit_ok(county, monkeypatch, reply):
    monkeypatch.setattr(Link, "run_each", lambda self, names, *a, **k: {n: reply
                                                                        for n in names})
    got = answers.sync(county, only="n1")
    ok = {u for u, r in got.items() if r["n1"] == "ok"}
    assert ok <= ({"chahe", "wenlv"} if reply.startswith('{"answers": {"jiaoyu": 1')
                  else set()), (reply, got)
    assert set(got) == set(UNITS)


def test_a_node_failing_half_way_names_every_unit_of_its_batch(county, nodes, monkeypatch):
    """The stream stops at a line the node will not take (exit 2): the units stored before
    it are on the node, and still none is reported "ok" (the control machine cannot tell
    which were)."""
    real_line = answers._line
    monkeypatch.setattr(answers, "_line", lambda unit, rows: b"{not json}\n"
                        if unit == "jiaoyu" else real_line(unit, rows))

    def run_each(self, names, *args, data=None, timeout=600, tool=""):
        out = {}
        for name in names:
            try:
                ms.take_many_answers(Layout.under(str(nodes["root"] / name)), io.BytesIO(data))
                out[name] = "{}"
            except ValueError as exc:
                out[name] = SyncError(f"answers-many on {name}: answers refused: {exc}")
        return out
    monkeypatch.setattr(Link, "run_each", run_each)
    got = answers.sync(county, only="n2")
    assert all("answers refused" in got[u]["n2"] for u in UNITS), got
    spool = Spool(Layout.under(str(nodes["root"] / "n2")))
    assert os.path.exists(spool.answers_path("chahe"))             # before the bad line
    assert not os.path.exists(spool.answers_path("wenlv"))         # after it


def test_an_answer_given_during_a_sync_is_not_overwritten_by_an_older_list(county, nodes,
                                                                          monkeypatch):
    """Each batch's answers are read as it is sent: one given while an earlier batch was
    on its way goes out in the later batch, not the list read when the sync began."""
    monkeypatch.setattr(answers, "BATCH_BYTES", 1)               # a unit a command
    real = Link.run_each
    given = []

    def answering_meanwhile(self, names, *args, data=None, **kw):
        if not given:            # the first batch (chahe) is on its way: wenlv answers
            m = rules.accept("WL", 1, 99, date(2026, 12, 6))
            with county.state() as st:
                st.record_answer({"number": m.number, "unit": "wenlv",
                                  "received": "2026-12-06T02:00:00Z", "subject": "新的",
                                  "text": "新的留言", "token_hash": rules.token_hash(m.token)},
                                 "刚刚答复", True, "ops")
            given.append(m.number)
        return real(self, names, *args, data=data, **kw)
    monkeypatch.setattr(Link, "run_each", answering_meanwhile)
    got = answers.sync(county, only="n3")
    assert got["wenlv"] == {"n3": "ok"}
    with open(nodes["spools"]["n3"].answers_path("wenlv"), encoding="utf-8") as f:
        assert given[0] in {a["number"] for a in json.load(f)}
