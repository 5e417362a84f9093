"""govhost_node.tenants holdings: what a node reports of each unit's content, on a real tree.
Whether a unit's live release is intact decides what a node replacement copies and what
`status` calls drift: a file is trusted without being read only while its inode, size,
mtime and ctime are those it had when it last hashed right (the config release's test,
digests.hashed)."""
import hashlib
import json
import os
import time

import pytest

from govhost_node import digests, tenants

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


@pytest.fixture
def reads(monkeypatch):
    """The files hashed, in order; and the clock 10 s on, so that the files the test just
    wrote count as settled (one changed within 2 s of a check is read again)."""
    seen: list[str] = []
    real = digests.fd_sha256

    def sha(fd):
        seen.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)
    monkeypatch.setattr(digests, "fd_sha256", sha)
    monkeypatch.setattr(digests, "now_ns", lambda: time.time_ns() + 10_000_000_000)
    return seen


def test_unchanged_files_are_not_read_again(sites, capsys, reads):
    report(capsys)
    assert sorted(reads) == ["a.html", "index.html"]
    reads.clear()
    assert report(capsys)["jiaoyu"]["intact"]
    assert reads == []
    os.utime(sites / "index.html", ns=(1, 1))      # a touched file is hashed again
    assert report(capsys)["jiaoyu"]["intact"]
    assert reads == ["index.html"]


def test_an_unchanged_file_is_not_even_opened(sites, capsys, reads, monkeypatch):
    """The steady state costs one lstat a file: the open and fstat doubled a check of a node
    (the reviewer's loaded host: 10 against 17-24 µs a file)."""
    report(capsys)
    opened: list[str] = []
    real = os.open

    def spy(path, *a, **k):
        opened.append(os.path.basename(path))
        return real(path, *a, **k)
    monkeypatch.setattr(os, "open", spy)
    assert report(capsys)["jiaoyu"]["intact"]
    assert "index.html" not in opened and "a.html" not in opened
    page = sites / "index.html"
    page.write_bytes(b"HOME")
    out = report(capsys, "jiaoyu")["jiaoyu"]
    assert out["changed"] == ["index.html"] and "index.html" in opened


def test_a_file_changed_with_its_mtime_put_back_is_found(sites, capsys, reads):
    """Same size, same inode, the mtime set back to what it was: only the ctime moved. The
    cache kept inode, size and mtime alone before stop 63, and took such a file on trust."""
    report(capsys)
    page = sites / "index.html"
    before = os.stat(page)
    time.sleep(0.01)
    page.write_bytes(b"HOME")                           # the same size
    os.utime(page, ns=(before.st_atime_ns, before.st_mtime_ns))
    reads.clear()
    out = report(capsys, "jiaoyu")["jiaoyu"]
    assert (out["changed"], out["intact"], reads) == (["index.html"], False, ["index.html"])
    # it stays found, and is not read again while it stays as it is
    reads.clear()
    assert report(capsys, "jiaoyu")["jiaoyu"]["changed"] == ["index.html"] and reads == []


def test_a_file_checked_within_two_seconds_of_a_change_is_read_again(sites, capsys, reads,
                                                                      monkeypatch):
    monkeypatch.setattr(digests, "now_ns", time.time_ns)             # the real clock
    report(capsys)
    reads.clear()
    assert report(capsys)["jiaoyu"]["intact"] and sorted(reads) == ["a.html", "index.html"]


def test_a_link_in_a_files_place_is_changed_even_to_the_same_bytes(sites, capsys, tmp_path):
    twin = tmp_path / "twin.html"
    twin.write_bytes(b"home")
    (sites / "index.html").unlink()
    (sites / "index.html").symlink_to(twin)
    out = report(capsys, "jiaoyu")["jiaoyu"]
    assert (out["changed"], out["missing"], out["intact"]) == (["index.html"], [], False)


def test_bad_names_are_not_listed(sites, capsys):
    assert report(capsys, "../etc", "jiaoyu").keys() == {"jiaoyu"}


def test_a_directory_replaced_by_a_link_is_changed_even_to_the_same_files(sites, capsys,
                                                                        tmp_path):
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "a.html").write_bytes(b"a")
    for f in (sites / "news").iterdir():
        f.unlink()
    (sites / "news").rmdir()
    (sites / "news").symlink_to(twin)
    out = report(capsys, "jiaoyu")["jiaoyu"]
    assert (out["changed"], out["intact"]) == (["news"], False)


def test_a_damaged_digest_list_is_one_unit_not_intact_not_a_failed_report(sites, capsys):
    (sites / ".digests").write_bytes(b"not a digest line\n\xff\xfe")
    out = report(capsys)
    assert out["jiaoyu"]["intact"] is False and ".digests" in out["jiaoyu"]["error"]
    assert out["empty"] == {"current": None, "releases": []}


def _second_unit(sites, name: str = "wenhua") -> str:
    """Another unit with a live release of one file; returns its release directory."""
    rel = sites.parents[2] / name / "releases" / RID
    rel.mkdir(parents=True)
    (rel / "index.html").write_bytes(b"wenhua")
    (rel / ".digests").write_text(f"{hashlib.sha256(b'wenhua').hexdigest()}  index.html\n")
    os.symlink(f"releases/{RID}", sites.parents[2] / name / "current")
    return str(rel)


def _cache() -> dict:
    with open(tenants.VERIFIED, encoding="utf-8") as f:
        return json.load(f)


def test_each_units_keys_are_kept_apart_and_a_full_pass_forgets_what_is_not_live(
        sites, capsys, reads):
    """The cache's keys are found by their release (one pass over the cache; before stop 64
    each unit's were looked up among all of the node's, 184 s at 3,333 units of 10 files):
    a one-unit check keeps every other unit's keys, a full pass drops those of a release
    no longer live."""
    other = _second_unit(sites)
    report(capsys)
    assert {os.path.dirname(p) for p in _cache()} == {str(sites), str(sites / "news"), other}
    reads.clear()
    (sites / "index.html").write_bytes(b"HOME")
    out = report(capsys, "jiaoyu")["jiaoyu"]
    assert out["changed"] == ["index.html"] and reads == ["index.html"]
    assert f"{other}/index.html" in _cache()           # the other unit's key stays
    reads.clear()
    assert report(capsys)["wenhua"]["intact"] and reads == []
    os.unlink(sites.parents[2] / "wenhua" / "current")     # wenhua's release is not live
    report(capsys)
    assert not any(p.startswith(other) for p in _cache())
    assert f"{sites}/index.html" in _cache()


def test_a_check_where_nothing_changed_writes_nothing(sites, capsys, reads):
    _second_unit(sites)
    report(capsys)
    before = os.stat(tenants.VERIFIED)
    for only in ((), ("jiaoyu",), ("wenhua", "jiaoyu")):
        report(capsys, *only)
        now = os.stat(tenants.VERIFIED)
        assert (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), only
    (sites / "news" / "a.html").unlink()
    report(capsys, "jiaoyu")
    assert f"{sites}/news/a.html" not in _cache()


def test_a_whole_node_walks_the_cache_once_not_once_a_unit(sites, capsys, reads, monkeypatch):
    """Before stop 64 each unit's keys were picked out of all of the node's: the cache was
    walked once a unit (184 s at 3,333 units of 10 files). Counted, not timed."""
    for name in ("wenhua", "caizheng", "renshe", "zhujian"):
        _second_unit(sites, name)
    report(capsys)
    walks = []

    class Counted(dict):
        def items(self):
            walks.append("items")
            return super().items()

        def __iter__(self):
            walks.append("iter")
            return super().__iter__()
    real = json.load
    monkeypatch.setattr(tenants.json, "load", lambda f: Counted(real(f)))
    out = report(capsys)
    assert all(out[t]["intact"] for t in ("jiaoyu", "wenhua", "caizheng", "renshe", "zhujian"))
    assert len(walks) <= 2, walks
