"""The console upload's unpacker on a real filesystem: links a unit planted in its upload area
(to a folder outside, to a file outside, a second name of a file outside) are refused or
replaced, never written through; `replace` removes links, not what they point at. Becoming the
unit's account is exercised in the lab (tests/integration/test_console_attacks_lab.py)."""
from __future__ import annotations

import io
import os
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govhost_node import unpack


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    buf.seek(0)
    return buf


@pytest.fixture
def area(tmp_path):
    up = tmp_path / "upload"
    outside = tmp_path / "outside"
    up.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"not yours")
    fd = os.open(up, os.O_RDONLY | os.O_DIRECTORY)
    yield up, outside, fd
    os.close(fd)


def test_files_and_folders_are_written(area):
    up, _, fd = area
    done = unpack.extract(fd, _tar({"index.html": b"home", "news/2026/a.html": b"a"}), False)
    assert done == {"files": 2, "bytes": 5}
    assert (up / "index.html").read_bytes() == b"home"
    assert (up / "news/2026/a.html").read_bytes() == b"a"
    assert not [p for p in os.listdir(up) if p.startswith(unpack.TMP_PREFIX)]


def test_a_name_of_up_to_255_bytes_is_written_whatever_its_characters(area):
    """An 85-character Chinese name is 255 bytes: the file's temporary name must not grow
    from it past the filesystem's limit."""
    up, _, fd = area
    name = "通" * 85
    assert len(name.encode()) == 255
    unpack.extract(fd, _tar({f"docs/{name}": b"x"}), False)
    assert (up / "docs" / name).read_bytes() == b"x"


def test_a_folder_link_is_refused_by_name_and_nothing_lands_outside(area):
    up, outside, fd = area
    os.symlink(outside, up / "docs")                  # docs -> /etc/cron.d, say
    with pytest.raises(unpack.Refused) as exc:
        unpack.extract(fd, _tar({"docs/x": b"* * * * * root sh -c evil"}), False)
    assert exc.value.code == unpack.EXIT_LINK
    assert "docs" in str(exc.value) and "link" in str(exc.value)
    assert sorted(os.listdir(outside)) == ["keep.txt"]


def test_a_relative_link_deeper_in_the_path_is_refused(area):
    up, outside, fd = area
    (up / "a").mkdir()
    os.symlink("../../outside", up / "a" / "b")       # ../../othertown/upload, say
    with pytest.raises(unpack.Refused) as exc:
        unpack.extract(fd, _tar({"a/b/c/x.html": b"x"}), False)
    assert exc.value.code == unpack.EXIT_LINK and "a/b" in str(exc.value)
    assert sorted(os.listdir(outside)) == ["keep.txt"]


def test_a_dangling_link_is_refused_not_created_through(area):
    up, outside, fd = area
    os.symlink(outside / "new", up / "docs")
    with pytest.raises(unpack.Refused):
        unpack.extract(fd, _tar({"docs/x": b"x"}), False)
    assert not (outside / "new").exists()


def test_a_file_link_is_replaced_not_written_through(area):
    up, outside, fd = area
    os.symlink(outside / "keep.txt", up / "index.html")
    unpack.extract(fd, _tar({"index.html": b"mine"}), False)
    assert (outside / "keep.txt").read_bytes() == b"not yours"
    assert not os.path.islink(up / "index.html")
    assert (up / "index.html").read_bytes() == b"mine"


def test_a_second_name_of_a_file_outside_is_replaced_not_written_through(area):
    up, outside, fd = area
    os.link(outside / "keep.txt", up / "index.html")
    unpack.extract(fd, _tar({"index.html": b"mine"}), False)
    assert (outside / "keep.txt").read_bytes() == b"not yours"
    assert (up / "index.html").read_bytes() == b"mine"


def test_replace_removes_links_not_what_they_point_at(area):
    up, outside, fd = area
    os.symlink(outside, up / "docs")
    (up / "old.html").write_bytes(b"old")
    unpack.extract(fd, _tar({"index.html": b"new"}), True)
    assert sorted(os.listdir(up)) == ["index.html"]
    assert sorted(os.listdir(outside)) == ["keep.txt"]


@pytest.mark.parametrize("files,links,why", [
    ({"../x": b""}, None, "'..'"),
    ({"/etc/cron.d/x": b""}, None, "relative"),
    ({}, {"docs": "/etc/cron.d"}, "only files and folders"),
])
def test_members_that_could_leave_the_area_are_refused(area, files, links, why):
    _, outside, fd = area
    with pytest.raises(unpack.Refused) as exc:
        unpack.extract(fd, _tar(files, links), False)
    assert why in str(exc.value)
    assert sorted(os.listdir(outside)) == ["keep.txt"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "..", ".", "docs", "", "x.html"]),
                min_size=1, max_size=5))
def test_no_member_name_writes_outside_the_area(tmp_path_factory, parts):
    root = tmp_path_factory.mktemp("u")
    up, outside = root / "sites" / "t" / "upload", root / "sites" / "t" / "outside"
    up.mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, up / "docs")
    fd = os.open(up, os.O_RDONLY | os.O_DIRECTORY)
    try:
        unpack.extract(fd, _tar({"/".join(parts): b"x"}), False)
    except (unpack.Refused, OSError):
        pass
    finally:
        os.close(fd)
    assert os.listdir(outside) == []
    for dirpath, _, names in os.walk(root):
        for n in names:
            assert os.path.join(dirpath, n).startswith(str(up) + os.sep)
