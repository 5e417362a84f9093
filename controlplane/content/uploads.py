"""A unit's zip of its site, checked before a byte of it reaches a node (pure).

What the console's upload takes apart is written by people, and some zips are made to
hurt: paths that climb out of the upload area (`../`, absolute, drive letters, backslashes),
links, device files and pipes, names that collide once normalised, and bombs (a small file
that inflates to gigabytes). Each is refused with the member's name and the reason. The
zip's declared sizes are checked first, and every member is read with its own byte budget,
so a zip that lies about its sizes is stopped at the limit as well. Names from Chinese
Windows, stored in GBK without the zip's UTF-8 flag, are read as such.

The result is a tar stream of regular files and directories with safe modes, which the node
unpacks into the upload area as the unit's SFTP upload would leave it.
"""
from __future__ import annotations

import io
import posixpath
import stat
import tarfile
import time
import unicodedata
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from controlplane.core.errors import GovhostError

UTF8_FLAG = 0x800
CHUNK = 1 << 16


class UploadError(GovhostError):
    pass


@dataclass(frozen=True)
class Limits:
    max_bytes: int                       # what is left of the unit's quota
    max_files: int = 20_000
    max_ratio: float = 100.0             # inflated / compressed, for members over 1 MiB
    max_name: int = 255


def _name(info: zipfile.ZipInfo) -> str:
    """The member's name as its author wrote it."""
    if info.flag_bits & UTF8_FLAG:
        return info.filename
    raw = info.filename.encode("cp437", errors="replace")
    for enc in ("utf-8", "gbk"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return info.filename


def safe_path(name: str, limit: int = 255) -> str:
    """A relative path inside the upload area, or UploadError saying why not."""
    if "\\" in name:
        raise UploadError(f"{name!r}: backslashes are not allowed in names (a Windows path?)")
    # Control and format characters (a right-to-left override turns `fdp.exe` into what a
    # reviewer reads as `exe.pdf`), line and paragraph separators: never in a file's name.
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                or c == "\x85"), None)
    if bad is not None:
        raise UploadError(f"{name!r}: an invisible or control character (U+{ord(bad):04X}) "
                          "in the name; rename the file")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadError(f"{name!r}: an absolute path; paths must stay in the upload area")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UploadError(f"{name!r}: '..' would leave the upload area")
    path = unicodedata.normalize("NFC", posixpath.join(*parts)) if parts else ""
    if len(path.encode()) > 4096 or any(len(p.encode()) > limit for p in parts):
        raise UploadError(f"{name[:80]!r}…: a name longer than {limit} bytes")
    return path


def check(zf: zipfile.ZipFile, limits: Limits) -> list[tuple[str, zipfile.ZipInfo]]:
    """The zip's regular files with their safe paths; UploadError on the first bad member."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise UploadError(f"{len(infos)} members: at most {limits.max_files} files per upload")
    out: list[tuple[str, zipfile.ZipInfo]] = []
    seen: dict[str, str] = {}
    total = 0
    for info in infos:
        name = _name(info)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise UploadError(f"{name!r}: a symbolic link; upload the file itself")
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise UploadError(f"{name!r}: a device file, pipe or socket")
        path = safe_path(name, limits.max_name)
        if info.is_dir() or not path:
            continue
        key = path.casefold()
        if key in seen:
            raise UploadError(f"{name!r} and {seen[key]!r} are the same file once their "
                              "case and form are set aside")
        seen[key] = name
        if info.flag_bits & 0x1:
            raise UploadError(f"{name!r}: encrypted members cannot be checked")
        total += info.file_size
        if total > limits.max_bytes:
            raise UploadError(f"the zip unpacks to more than the {_mb(limits.max_bytes)} left "
                              "of the unit's quota")
        if info.file_size > 1 << 20 and \
                info.file_size > limits.max_ratio * max(1, info.compress_size):
            raise UploadError(f"{name!r}: {_mb(info.compress_size)} that unpacks to "
                              f"{_mb(info.file_size)} (more than {limits.max_ratio:g} times): "
                              "refused as a zip bomb")
        out.append((path, info))
    if not out:
        raise UploadError("the zip holds no files")
    return out


def to_tar(source: BinaryIO | bytes, limits: Limits) -> tuple[bytes, int, int]:
    """The zip as a tar of its checked files: (tar bytes, files, bytes unpacked). Each
    member is read with its declared size as its budget, so a lying header stops there."""
    data = source if isinstance(source, bytes) else source.read()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"not a zip file: {exc}") from None
    members = check(zf, limits)
    buf = io.BytesIO()
    unpacked = 0
    with zf, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, info in members:
            body = io.BytesIO()
            try:
                with zf.open(info) as f:
                    while chunk := f.read(CHUNK):
                        body.write(chunk)
                        if body.tell() > info.file_size or unpacked + body.tell() > \
                                limits.max_bytes:
                            raise UploadError(f"{path!r}: unpacks to more than it declares; "
                                              "refused as a zip bomb")
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                raise UploadError(f"{path!r}: cannot be unpacked ({exc})") from None
            unpacked += body.tell()
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode = body.tell(), 0o644
            ti.mtime = int(time.mktime((*info.date_time, 0, 0, -1)))
            body.seek(0)
            tar.addfile(ti, body)
    return buf.getvalue(), len(members), unpacked


def files_to_tar(files: list[tuple[str, bytes]], folder: str, limits: Limits
                 ) -> tuple[bytes, list[str], int]:
    """Single files chosen in the browser, for `folder` of the upload area, as a tar:
    (tar bytes, their paths, bytes). Only a file's own name counts (a browser sends no
    directories); each path is held to the same rules as a zip member's."""
    if not files:
        raise UploadError("choose at least one file")
    if len(files) > limits.max_files:
        raise UploadError(f"{len(files)} files: at most {limits.max_files} per upload")
    base = safe_path(folder.strip().strip("/"), limits.max_name) if folder.strip("/ ") else ""
    buf = io.BytesIO()
    paths: list[str] = []
    seen: dict[str, str] = {}
    total = 0
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            leaf = name.replace("\\", "/").rsplit("/", 1)[-1]
            if not leaf or leaf in (".", ".."):
                raise UploadError(f"{name!r} is not a file name")
            path = safe_path(posixpath.join(base, leaf) if base else leaf, limits.max_name)
            if path.casefold() in seen:
                raise UploadError(f"{name!r} and {seen[path.casefold()]!r} are the same file "
                                  "once their case and form are set aside")
            seen[path.casefold()] = name
            total += len(data)
            if total > limits.max_bytes:
                raise UploadError(f"the files are more than the {_mb(limits.max_bytes)} left "
                                  "of the unit's quota")
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, now
            tar.addfile(ti, io.BytesIO(data))
            paths.append(path)
    return buf.getvalue(), paths, total


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"
