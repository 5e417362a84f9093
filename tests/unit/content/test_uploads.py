"""Zips of units' sites taken apart safely (pure): every kind of hostile member refused with
its name, and a good zip turned into the tar the node unpacks."""
import io
import stat
import struct
import tarfile
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.content import uploads
from controlplane.content.uploads import Limits, UploadError, safe_path, to_tar

LIMITS = Limits(max_bytes=50 << 20)


def _zip(*members, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for m in members:
            if isinstance(m, zipfile.ZipInfo):
                zf.writestr(m, b"target")
            else:
                zf.writestr(m[0], m[1])
    return buf.getvalue()


def _special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_a_good_zip_becomes_a_tar_of_regular_files():
    data = _zip(("index.html", "<h1>首页</h1>"), ("xwdt/1.html", "新闻"), ("img/", ""),
                ("./css/a.css", "body{}"))
    tar, files, size = to_tar(data, LIMITS)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        members = {m.name: m for m in t.getmembers()}
        assert set(members) == {"index.html", "xwdt/1.html", "css/a.css"}
        assert all(m.isfile() and m.mode == 0o644 for m in members.values())
        assert t.extractfile("xwdt/1.html").read().decode() == "新闻"
    assert files == 3 and size == len("<h1>首页</h1>".encode()) + len("新闻".encode()) + 6


@pytest.mark.parametrize("members,expect", [
    ([("../../etc/passwd", "x")], "'..' would leave"),
    ([("a/../../b", "x")], "'..' would leave"),
    ([("/etc/cron.d/x", "x")], "absolute path"),
    ([("C:/windows/x", "x")], "absolute path"),
    ([("a\\..\\b", "x")], "backslashes"),
    ([("a\nb.html", "x")], "control character"),
    ([("report\u202efdp.exe", "x")], "U\\+202E"),        # reads as report-exe.pdf
    ([("a\u2028b.html", "x")], "U\\+2028"), ([("zero\u200bwidth.html", "x")], "U\\+200B"),
    ([_special("link", stat.S_IFLNK | 0o777)], "symbolic link"),
    ([_special("dev", stat.S_IFCHR | 0o644)], "device file"),
    ([_special("fifo", stat.S_IFIFO | 0o644)], "device file"),
    ([("News.html", "a"), ("news.HTML", "b")], "the same file"),
    ([("img/", "")], "holds no files"),
    ([("x" * 300 + ".html", "a")], "longer than 255"),
])
def test_hostile_members_are_refused_by_name(members, expect):
    with pytest.raises(UploadError, match=expect):
        to_tar(_zip(*members), LIMITS)


def test_bombs_and_uploads_over_quota_are_refused():
    bomb = _zip(("zeros.bin", b"\0" * (20 << 20)))
    assert len(bomb) < 100_000
    with pytest.raises(UploadError, match="zip bomb"):
        to_tar(bomb, LIMITS)
    big = _zip(("a.bin", b"\0" * (2 << 20)), compression=zipfile.ZIP_STORED)
    with pytest.raises(UploadError, match="left of the unit's quota"):
        to_tar(big, Limits(max_bytes=1 << 20))
    with pytest.raises(UploadError, match="at most 3 files"):
        to_tar(_zip(*[(f"{i}.html", "x") for i in range(4)]), Limits(1 << 20, max_files=3))
    with pytest.raises(UploadError, match="not a zip file"):
        to_tar(b"PK\x03\x04 not really", LIMITS)


def test_a_zip_that_lies_about_its_sizes_is_stopped():
    data = bytearray(_zip(("a.html", b"A" * 200_000)))
    # Declare 1,000 bytes in the local header and in the central directory.
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 1000)
    struct.pack_into("<I", data, central + 24, 1000)
    with pytest.raises(UploadError, match="a.html"):
        to_tar(bytes(data), LIMITS)


def test_gbk_names_from_chinese_windows_are_read_as_written():
    data = _zip(("abcd.html", "x"), compression=zipfile.ZIP_STORED)
    gbk = "新闻.html".encode("gbk")
    assert len(gbk) == len(b"abcd.html")
    data = data.replace(b"abcd.html", gbk)
    tar, _, _ = to_tar(data, LIMITS)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert t.getnames() == ["新闻.html"]


@given(st.text(min_size=1, max_size=60))
def test_a_safe_path_never_leaves_the_upload_area(name):
    try:
        path = safe_path(name)
    except UploadError:
        return
    assert not path.startswith("/") and ".." not in path.split("/") and "\\" not in path


def test_single_files_go_into_their_folder_by_their_own_name_only():
    import io
    import tarfile
    limits = uploads.Limits(max_bytes=1000)
    tar, paths, size = uploads.files_to_tar(
        [("a.html", b"<p>a</p>"), ("C:\\Users\\clerk\\通知.pdf", b"%PDF"),
         ("../../etc/passwd", b"x")], "xwdt/2026/", limits)
    assert paths == ["xwdt/2026/a.html", "xwdt/2026/通知.pdf", "xwdt/2026/passwd"]
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert [(m.name, m.isfile(), m.mode) for m in t.getmembers()] == [
            (p, True, 0o644) for p in paths]
    assert size == 8 + 4 + 1
    # a folder is always inside the upload area: a leading slash means its top
    assert uploads.files_to_tar([("a", b"")], "/news/", limits)[1] == ["news/a"]
    for folder, files, words in (("../up", [("a", b"")], "'..'"),
                                 ("a\x00b", [("a", b"")], "control"),
                                 ("", [("A.html", b""), ("a.html", b"")], "same file"),
                                 ("", [("big", b"x" * 1001)], "quota"),
                                 ("", [("..", b"")], "not a file name"),
                                 ("", [], "at least one")):
        with pytest.raises(uploads.UploadError, match=words):
            uploads.files_to_tar(files, folder, limits)
