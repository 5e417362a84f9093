"""The control machine's side of content for a node that holds none of it
(`content_sync.carry_out`): the real `govhost-tenants` programs of two "nodes" (each with its
sites under the test's directory), run directly where the lab runs them over SSH. Units the
target holds nothing of go in one batch; a unit its batch could not bring is tried alone,
the old way, and the result says what happened to each."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from controlplane.sites import content_sync
from controlplane.sites.replicas import Holding, Move
from tests.unit.govhost_node.test_content_batch import PAGES, R1, R2, release

REPO = Path(__file__).resolve().parents[3]


class LocalLink(content_sync.Link):
    """A Link whose nodes are directories here: the program runs without SSH."""

    def __init__(self, base: Path) -> None:
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "calls", [])

    def argv(self, node: str, *args: str, tool: str = content_sync.TOOL) -> list[str]:
        self.calls.append((node, args[0]))
        driver = ("import sys, os; os.chdir(sys.argv[2]); from govhost_node import tamper, "
                  "tenants as t; t.SITES = sys.argv[1] + '/sites'; "
                  "tamper.PRISTINE = sys.argv[1] + '/pristine'; "
                  "sys.argv = ['govhost-tenants', *sys.argv[3:]]; t.main()")
        return [sys.executable, "-c", driver, str(self.base / node), str(REPO), *args]


def _source(tmp_path: Path) -> None:
    for t, rels in PAGES.items():
        for rid, files in rels.items():
            release(tmp_path, "n1", t, rid, files, live=True)


def test_units_the_target_lacks_travel_in_one_batch(tmp_path):
    _source(tmp_path)
    link = LocalLink(tmp_path)
    moves = [Move("jiaoyu", "n1", "n3", R2, (R1, R2)), Move("wenlv", "n1", "n3", R1, (R1,))]
    said = []
    done = content_sync.carry_out(link, moves, {}, lambda *a: said.append(a))
    assert [(r.move.tenant, r.ok) for r in done] == [("jiaoyu", True), ("wenlv", True)], done
    assert all(r.bytes > 0 for r in done)
    assert sorted(c[1] for c in link.calls) == ["pack-many", "receive-many"]   # one stream
    sites = tmp_path / "n3" / "sites"
    assert (sites / "jiaoyu" / "current" / "index.html").read_bytes() == "教育 二".encode()
    assert (sites / "wenlv" / "current" / "index.html").read_bytes() == "文旅".encode()
    assert len(said) == 2


def test_a_unit_its_batch_could_not_bring_is_tried_alone(tmp_path):
    _source(tmp_path)
    link = LocalLink(tmp_path)
    # wenlv's listed release is damaged on the source after it was listed: the batch
    # refuses it; tried alone it fails the same way (the old path), the others arrive
    (tmp_path / "n1" / "sites" / "wenlv" / "releases" / R1 / "index.html").write_text("坏")
    moves = [Move("jiaoyu", "n1", "n3", R2, (R1, R2)), Move("wenlv", "n1", "n3", R1, (R1,))]
    done = {r.move.tenant: r for r in content_sync.carry_out(link, moves, {})}
    assert done["jiaoyu"].ok and not done["wenlv"].ok, done
    assert "receive" in [c[1] for c in link.calls]            # the second, alone
    assert not (tmp_path / "n3" / "sites" / "wenlv" / "current").exists()


def test_a_target_that_holds_some_of_a_unit_gets_the_delta_alone(tmp_path):
    _source(tmp_path)
    release(tmp_path, "n3", "jiaoyu", R1, PAGES["jiaoyu"][R1], live=True)
    link = LocalLink(tmp_path)
    held = {"n3": {"jiaoyu": Holding(current=R1, releases=(R1,), intact=True)}}
    moves = [Move("jiaoyu", "n1", "n3", R2, (R1, R2))]
    done = content_sync.carry_out(link, moves, held)
    assert done[0].ok, done
    assert "pack-many" not in [c[1] for c in link.calls]
    assert (tmp_path / "n3" / "sites" / "jiaoyu" / "current" / "index.html").read_bytes() \
        == "教育 二".encode()


class CutSource(LocalLink):
    """A source whose pack-many stream breaks after `cut` bytes (its SSH dropped)."""

    def __init__(self, base: Path, cut: int) -> None:
        super().__init__(base)
        object.__setattr__(self, "cut", cut)

    def argv(self, node: str, *args: str, tool: str = content_sync.TOOL) -> list[str]:
        cmd = super().argv(node, *args, tool=tool)
        if args[0] != "pack-many":
            return cmd
        return ["bash", "-c", f'"$@" | head -c {self.cut}; exit 255', "_", *cmd]


@pytest.mark.parametrize("cut", [0, 200, 400, 700])
def test_a_batch_whose_source_broke_off_is_not_trusted(tmp_path, cut):
    """What arrived of a stream that broke off may be cut anywhere: every unit of the batch
    is tried again alone (the old way checks its reader's exit), and ends right."""
    _source(tmp_path)
    link = CutSource(tmp_path, cut)
    moves = [Move("jiaoyu", "n1", "n3", R2, (R1, R2)), Move("wenlv", "n1", "n3", R1, (R1,))]
    done = content_sync.carry_out(link, moves, {})
    assert all(r.ok for r in done), done
    assert [c[1] for c in link.calls].count("receive") == 3          # every release again
    sites = tmp_path / "n3" / "sites"
    assert (sites / "jiaoyu" / "current" / "index.html").read_bytes() == "教育 二".encode()
    assert (sites / "jiaoyu" / "current" / "news" / "a.html").read_bytes() == b"a"
    assert (sites / "wenlv" / "current" / "index.html").read_bytes() == "文旅".encode()
