"""Whether the live config release is intact, as `govhost-node status` says on every ask: a
file whose inode, size, mtime and ctime are those it had when it last hashed right is not
read again (12,700 files of a 5,000-unit release cost 0.43 s of each status), and any
change to a file is still found, its mtime put back included (the ctime moves)."""
from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from govhost_node import digests, releases

FILES = {"nginx.conf": b"events {}\n", "sites/jiaoyu.conf": b"server { listen 80; }\n",
         "sites/wenlv.conf": b"server { listen 81; }\n"}


@pytest.fixture
def release(tmp_path):
    rel = tmp_path / "releases" / "r1"
    for name, data in FILES.items():
        (rel / name).parent.mkdir(parents=True, exist_ok=True)
        (rel / name).write_bytes(data)
    (rel / ".digests").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n"
                                          for n, d in sorted(FILES.items())))
    return rel


@pytest.fixture
def hashed(monkeypatch):
    """The files read to be hashed, in order; and the clock 10 s on, so that the files the
    test just wrote count as settled (one changed within 2 s of a check is read again)."""
    seen: list[str] = []
    real_hashed, real_sha = digests.hashed, digests.file_sha256

    def hashed(path, known):
        key = real_hashed(path, known)
        if key is None or key != known:
            seen.append(os.path.basename(path))
        return key

    def sha(path):
        seen.append(os.path.basename(path))
        return real_sha(path)
    monkeypatch.setattr(digests, "hashed", hashed)
    monkeypatch.setattr(digests, "file_sha256", sha)
    monkeypatch.setattr(digests, "now_ns", lambda: time.time_ns() + 10_000_000_000)
    return seen


def test_an_unchanged_release_is_not_read_again(release, tmp_path, hashed):
    cache = str(tmp_path / "config-verified.json")
    assert releases.intact(str(release), cache)
    assert len(hashed) == 3
    hashed.clear()
    assert releases.intact(str(release), cache) and hashed == []
    assert set(json.loads(open(cache).read())) == {str(release / n) for n in FILES}


def test_a_file_changed_with_its_mtime_put_back_is_found(release, tmp_path, hashed):
    cache = str(tmp_path / "config-verified.json")
    assert releases.intact(str(release), cache)
    conf = release / "sites" / "jiaoyu.conf"
    before = os.stat(conf)
    time.sleep(0.01)
    conf.write_bytes(b"server { listen 99; }\n")            # same size
    os.utime(conf, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(conf).st_size == before.st_size
    hashed.clear()
    assert not releases.intact(str(release), cache)
    assert hashed == ["jiaoyu.conf"]


def test_a_file_checked_within_two_seconds_of_a_change_is_read_again(release, tmp_path,
                                                                      hashed, monkeypatch):
    """Two writes within one tick of the clock leave the ctime as it was after the first:
    a file that changed that recently is not taken on trust next time."""
    monkeypatch.setattr(digests, "now_ns", time.time_ns)             # the real clock
    cache = str(tmp_path / "config-verified.json")
    assert releases.intact(str(release), cache) and len(hashed) == 3
    hashed.clear()
    assert releases.intact(str(release), cache) and len(hashed) == 3


def test_a_link_in_a_files_place_is_not_intact(release, tmp_path):
    """Even to a file of the same bytes: the release is not what was shipped, and the link's
    target could change behind a cached stat."""
    cache = str(tmp_path / "config-verified.json")
    twin = tmp_path / "twin.conf"
    twin.write_bytes(FILES["nginx.conf"])
    (release / "nginx.conf").unlink()
    (release / "nginx.conf").symlink_to(twin)
    assert not releases.intact(str(release), cache)


@pytest.mark.parametrize("damage", ["gone", "replaced alike", "cache damaged"])
def test_what_the_cache_does_not_know_is_hashed(release, tmp_path, damage):
    cache = tmp_path / "config-verified.json"
    assert releases.intact(str(release), str(cache))
    conf = release / "nginx.conf"
    if damage == "gone":
        conf.unlink()
        assert not releases.intact(str(release), str(cache))
    elif damage == "replaced alike":                       # another inode, same bytes
        conf.unlink()
        conf.write_bytes(FILES["nginx.conf"])
        assert releases.intact(str(release), str(cache))
    else:
        cache.write_text("{not json")
        assert releases.intact(str(release), str(cache))
        conf.write_bytes(b"events { }\n")
        assert not releases.intact(str(release), str(cache))


def test_without_a_cache_every_file_is_hashed(release, hashed):
    assert releases.intact(str(release)) and releases.intact(str(release))
    assert len(hashed) == 6
