"""`search.index.sync` against the real `govhost-tenants` of a "node" whose sites are under
the test's directory (run directly where the lab runs it over SSH; what the nodes do with the
changes, `govhost-search apply`, is the lab's to test): the live releases are asked once a
node, a unit whose live release is the one indexed is passed over without its digest list,
and a unit published again is indexed anew, in any order of the two (a unit re-indexed before
an unchanged one once raised KeyError)."""
from __future__ import annotations

import contextlib
import types
from pathlib import Path

from controlplane.search import index
from tests.unit.govhost_node.test_content_batch import R1, R2, release
from tests.unit.sites.test_content_batch_link import LocalLink


def _county(tmp_path: Path, names: list[str]):
    unit = lambda n: types.SimpleNamespace(name=n, title=f"{n} 单位",  # noqa: E731
                                           site=types.SimpleNamespace(type="static"))
    inv = types.SimpleNamespace(
        tenants=[unit(n) for n in names],
        hosts=types.SimpleNamespace(nodes=[types.SimpleNamespace(name="n1")], web_nodes=[]),
        site_host=lambda t: f"{t.name}.qingshui.gov.cn", cluster=None)
    placed = {n: ("n1",) for n in names}
    state = types.SimpleNamespace(placements=lambda: placed)
    (tmp_path / "state").mkdir()
    return types.SimpleNamespace(inv=inv, known_hosts=tmp_path / "known_hosts",
                                 state_dir=tmp_path / "state",
                                 state=lambda: contextlib.nullcontext(state))


def test_only_units_whose_live_release_changed_are_read_again(tmp_path, monkeypatch):
    names = ["aaa", "bbb", "ccc"]
    for n in names:
        release(tmp_path, "n1", n, R1, {"index.html": f"<title>{n}</title>茶河镇 通知".encode()},
                live=True)
    link = LocalLink(tmp_path)
    monkeypatch.setattr(index, "Link", lambda *a: link)
    monkeypatch.setattr(index.dictionary, "words", lambda inv: ["茶河镇"])
    shipped = []
    monkeypatch.setattr(index, "_ship", lambda county, idx, changes, say: shipped.append(
        [c.get("tenant") for c in changes[1:]]) or {})
    county = _county(tmp_path, names)
    first = index.sync(county)
    assert first["indexed"] == 3 and shipped[-1] == names
    # aaa published again (it comes first), bbb and ccc unchanged
    release(tmp_path, "n1", "aaa", R2, {"index.html": "<title>aaa</title>龙潭镇".encode()},
            live=True)
    link.calls.clear()
    again = index.sync(county)
    assert again["indexed"] == 1 and shipped[-1] == ["aaa"], again
    asked = [c[1] for c in link.calls]
    assert asked.count("live") == 1 and asked.count("digests") == 1, asked
    nothing = index.sync(county)
    assert nothing["indexed"] == 0 and shipped[-1] == []
    idx = index.master(county)
    try:
        assert idx.search("龙潭镇")["total"] == 1 and idx.search("茶河镇")["total"] == 2
    finally:
        idx.close()


def test_a_segmenter_loaded_in_the_background_cuts_with_the_county_s_words():
    """A publish starts loading jieba's dictionary beside its nodes' work (`index.prepare`);
    the sync that follows may add the county's words and cut while the load still runs. In a
    fresh process (jieba not yet loaded), a word added then must not be lost when the load
    puts the whole dictionary in place, and the cut must wait for it: a county word stays
    whole, as in a sync without the early load. (A safety test of the overlap, not of its
    speed: bench/publish_scale.py measures that.)"""
    import subprocess
    import sys

    script = (
        "from controlplane.search import index\n"
        "from govhost_node import search\n"
        "import jieba, threading\n"
        "index.prepare()\n"
        "loading = [t for t in threading.enumerate() if t.name == 'govhost-segmenter']\n"
        "search.load_words(['茶河镇便民服务中心'])\n"
        "print(bool(loading), jieba.dt.initialized)\n"
        "print(search.segment('茶河镇便民服务中心发布通知'))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[3]).stdout.splitlines()
    assert out[0] == "True True"
    assert "茶河镇便民服务中心" in out[1].split() and "通知" in out[1].split(), out
