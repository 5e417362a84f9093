"""govhost_node.tenants holdings: what a node reports of each unit's content, on a real tree."""
import hashlib
import json
import os

import pytest

from govhost_node import tenants

RID = "20261130T120000-aaaaaa"


@pytest.fixture
def sites(tmp_path, monkeypatch):
    root = tmp_path / "sites"
    rel = root / "jiaoyu" / "releases" / RID
    (rel / "news").mkdir(parents=True)
    files = {"index.html": b"home", "news/a.html": b"a"}
    for name, data in files.items():
        (rel / name).write_bytes(data)
    (rel / ".digests").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n"
                                          for n, d in sorted(files.items())))
    os.symlink(f"releases/{RID}", root / "jiaoyu" / "current")
    (root / "empty").mkdir()
    monkeypatch.setattr(tenants, "SITES", str(root))
    monkeypatch.setattr(tenants, "VERIFIED", str(tmp_path / "verified.json"))
    return rel


def report(capsys, *only):
    tenants.holdings(*only)
    return json.loads(capsys.readouterr().out)


def test_an_intact_release_and_a_unit_without_content(sites, capsys):
    out = report(capsys)
    assert out["jiaoyu"] == {"current": RID, "releases": [RID], "files": 2, "missing": [],
                             "changed": [], "added": [], "intact": True}
    assert out["empty"] == {"current": None, "releases": []}


def test_changed_missing_and_added_files_are_named(sites, capsys):
    report(capsys)                           # fills the stat cache
    (sites / "index.html").write_bytes(b"defaced")   # same inode, new size and mtime
    (sites / "news" / "a.html").unlink()
    (sites / "shell.php").write_bytes(b"<?php")
    out = report(capsys, "jiaoyu")["jiaoyu"]
    assert (out["changed"], out["missing"], out["added"], out["intact"]) == \
        (["index.html"], ["news/a.html"], ["shell.php"], False)


def test_unchanged_files_are_not_read_again(sites, capsys, monkeypatch):
    report(capsys)
    reads = []
    real = tenants._sha256
    monkeypatch.setattr(tenants, "_sha256", lambda p: reads.append(p) or real(p))
    assert report(capsys)["jiaoyu"]["intact"]
    assert reads == []
    os.utime(sites / "index.html", ns=(1, 1))      # a touched file is hashed again
    assert report(capsys)["jiaoyu"]["intact"]
    assert [os.path.basename(p) for p in reads] == ["index.html"]


def test_bad_names_are_not_listed(sites, capsys):
    assert report(capsys, "../etc", "jiaoyu").keys() == {"jiaoyu"}
