"""Content for a node that holds none of it (a replaced or added node), many units in one
stream: `govhost-tenants pack-many` on the source, `receive-many` on the target, as the
real programs with every path under the test's directory. Each release arrives verified
against its digest list, a unit's later releases hard-linked to its earlier ones where
files did not change, each unit switched to its live release; a unit whose stream is
damaged or cut short fails alone, and nothing the stream names outside what was asked (or
outside a release) is written."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
R1, R2 = "20261201T100000-aaaaaa", "20261202T100000-bbbbbb"


def tenants(base: Path, node: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """govhost-tenants with its sites (and the tamper watcher's copies) under base/node."""
    driver = ("import sys; from govhost_node import tamper, tenants as t; "
              "t.SITES = sys.argv[1] + '/sites'; tamper.PRISTINE = sys.argv[1] + '/pristine'; "
              "sys.argv = ['govhost-tenants', *sys.argv[2:]]; t.main()")
    return subprocess.run([sys.executable, "-c", driver, str(base / node), *args], input=stdin,
                          capture_output=True, cwd=REPO, timeout=120)


def release(base: Path, node: str, t: str, rid: str, files: dict[str, bytes],
            live: bool = False) -> None:
    rel = base / node / "sites" / t / "releases" / rid
    for name, data in files.items():
        (rel / name).parent.mkdir(parents=True, exist_ok=True)
        (rel / name).write_bytes(data)
    (rel / ".digests").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n"
                                          for n, d in sorted(files.items())))
    (rel / ".meta.json").write_text(json.dumps({"id": rid, "tenant": t}))
    if live:
        cur = base / node / "sites" / t / "current"
        if cur.is_symlink():
            cur.unlink()
        cur.symlink_to(f"releases/{rid}")


PAGES = {"jiaoyu": {R1: {"index.html": "教育 一".encode(), "news/a.html": b"a"},
                    R2: {"index.html": "教育 二".encode(), "news/a.html": b"a"}},
         "wenlv": {R1: {"index.html": "文旅".encode()}}}


@pytest.fixture
def source(tmp_path):
    for t, rels in PAGES.items():
        for rid, files in rels.items():
            release(tmp_path, "src", t, rid, files, live=True)
    return tmp_path


def head(units: dict[str, tuple[list[str], str]]) -> bytes:
    return (json.dumps({"units": {t: {"releases": r, "live": live}
                                  for t, (r, live) in units.items()}}) + "\n").encode()


def ask(units: dict[str, tuple[list[str], str]]) -> bytes:
    return "".join(f"{t} {rid}\n" for t, (rids, _) in units.items() for rid in rids).encode()


def results(out: bytes) -> dict[str, dict]:
    return {r["tenant"]: r for r in map(json.loads, out.decode().splitlines())}


def test_every_unit_arrives_verified_linked_and_live(source):
    units = {"jiaoyu": ([R1, R2], R2), "wenlv": ([R1], R1)}
    packed = tenants(source, "src", "pack-many", stdin=ask(units))
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(fileobj=io.BytesIO(packed.stdout), mode="r:gz") as tar:
        names = tar.getnames()
    # the second release of jiaoyu carries only what changed
    assert f"jiaoyu/{R2}/index.html" in names and f"jiaoyu/{R2}/news/a.html" not in names
    got = tenants(source, "dst", "receive-many", stdin=head(units) + packed.stdout)
    assert got.returncode == 0, got.stderr
    res = results(got.stdout)
    assert all(r["ok"] for r in res.values()) and res["jiaoyu"]["received"] == [R1, R2], res
    sites = source / "dst" / "sites"
    for t, rels in PAGES.items():
        for rid, files in rels.items():
            for name, data in files.items():
                assert (sites / t / "releases" / rid / name).read_bytes() == data
    assert os.readlink(sites / "jiaoyu" / "current") == f"releases/{R2}"
    assert os.readlink(sites / "wenlv" / "current") == f"releases/{R1}"
    a1, a2 = (os.stat(sites / "jiaoyu" / "releases" / r / "news" / "a.html") for r in (R1, R2))
    assert a1.st_ino == a2.st_ino                      # unchanged: linked, not sent twice
    assert not list(sites.glob("*/releases/.*"))       # nothing half-received left


def test_a_damaged_unit_fails_alone_and_never_goes_live(source):
    units = {"jiaoyu": ([R1, R2], R2), "wenlv": ([R1], R1)}
    packed = tenants(source, "src", "pack-many", stdin=ask(units)).stdout
    members = []
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            if m.name == f"wenlv/{R1}/index.html":
                data = "文旅 被改了".encode()           # changed on the way
            members.append((m.name, data))
    got = tenants(source, "dst", "receive-many", stdin=head(units) + _tar(members))
    res = results(got.stdout)
    assert res["jiaoyu"]["ok"] and not res["wenlv"]["ok"], res
    assert "digest" in res["wenlv"]["error"]
    sites = source / "dst" / "sites"
    assert not (sites / "wenlv" / "current").exists()
    assert not (sites / "wenlv" / "releases" / R1).exists()


def test_a_stream_cut_short_keeps_what_arrived_whole(source):
    units = {"jiaoyu": ([R1, R2], R2), "wenlv": ([R1], R1)}
    packed = tenants(source, "src", "pack-many", stdin=ask(units)).stdout
    members = []
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    whole = _tar(members)
    cut = whole[:len(_tar([m for m in members if m[0].startswith("jiaoyu/")])) + 40]
    res = results(tenants(source, "dst", "receive-many", stdin=head(units) + cut).stdout)
    assert res["jiaoyu"]["ok"], res
    assert not res["wenlv"]["ok"]
    assert not (source / "dst" / "sites" / "wenlv" / "current").exists()


def test_a_stream_cut_anywhere_never_puts_a_wrong_release_live(source):
    """Cut at every 23rd byte: each unit is live on exactly its release, or not live and
    its failure said (a cut that left a release without its digest list once made an empty
    release live, its files linked in from the one before removed as unlisted)."""
    units = {"jiaoyu": ([R1, R2], R2), "wenlv": ([R1], R1)}
    whole = tenants(source, "src", "pack-many", stdin=ask(units)).stdout
    for cut in range(0, len(whole), 23):
        node = f"dst{cut}"
        got = tenants(source, node, "receive-many", stdin=head(units) + whole[:cut])
        res = results(got.stdout) if got.returncode == 0 else {}
        sites = source / node / "sites"
        for t, (_, live) in units.items():
            current = sites / t / "current"
            if res.get(t, {}).get("ok"):
                assert os.readlink(current) == f"releases/{live}"
                for name, data in PAGES[t][live].items():
                    assert (current / name).read_bytes() == data, (cut, t, name)
            else:
                assert not current.exists(), (cut, t, res)


def test_a_release_without_its_digest_list_is_refused(source):
    units = {"jiaoyu": ([R1, R2], R2)}
    packed = tenants(source, "src", "pack-many", stdin=ask(units)).stdout
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar
                   if m.name != f"jiaoyu/{R2}/.digests"]
    res = results(tenants(source, "dst", "receive-many", stdin=head(units) + _tar(members))
                  .stdout)
    assert not res["jiaoyu"]["ok"] and "digests" in res["jiaoyu"]["error"], res
    assert not (source / "dst" / "sites" / "jiaoyu" / "current").exists()


def test_a_file_that_becomes_a_directory_and_back_fails_nobody(tmp_path):
    """A unit's `docs` a file in one release and a directory in the next (and `a/b` the
    other way): the next release is built from the one before, and the way is cleared; the
    unit after it in the stream is not cut off."""
    release(tmp_path, "src", "aaa", R1, {"docs": b"file", "a/b/c.html": b"deep"})
    release(tmp_path, "src", "aaa", R2, {"docs/index.html": b"dir", "a/b": b"now a file"},
            live=True)
    release(tmp_path, "src", "zzz", R1, {"index.html": b"z"}, live=True)
    units = {"aaa": ([R1, R2], R2), "zzz": ([R1], R1)}
    packed = tenants(tmp_path, "src", "pack-many", stdin=ask(units)).stdout
    res = results(tenants(tmp_path, "dst", "receive-many", stdin=head(units) + packed).stdout)
    assert res["aaa"]["ok"] and res["zzz"]["ok"], res
    sites = tmp_path / "dst" / "sites"
    assert (sites / "aaa" / "releases" / R1 / "docs").read_bytes() == b"file"
    assert (sites / "aaa" / "releases" / R1 / "a" / "b" / "c.html").read_bytes() == b"deep"
    assert (sites / "aaa" / "current" / "docs" / "index.html").read_bytes() == b"dir"
    assert (sites / "aaa" / "current" / "a" / "b").read_bytes() == b"now a file"
    assert (sites / "zzz" / "current" / "index.html").read_bytes() == b"z"


@pytest.mark.parametrize("name", [
    f"wenlv/{R1}/../../jiaoyu/releases/{R1}/index.html",     # out of its release
    f"renshe/{R1}/index.html",                                 # a unit not asked for
    f"wenlv/{R2}/index.html",                                  # a release not asked for
    f"wenlv/{R1}",                                             # no path in the release
])
def test_a_member_outside_what_was_asked_writes_nothing_there(source, name):
    units = {"wenlv": ([R1], R1)}
    packed = tenants(source, "src", "pack-many", stdin=ask(units)).stdout
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    got = tenants(source, "dst", "receive-many",
                  stdin=head(units) + _tar([(name, b"planted")] + members))
    sites = source / "dst" / "sites"
    assert not (sites / "wenlv" / "current").exists()
    assert not (sites / "renshe").exists() and not (sites / "jiaoyu").exists()
    res = results(got.stdout) if got.returncode == 0 else {}
    assert not res.get("wenlv", {}).get("ok"), (got.stdout, got.stderr)


def test_a_link_planted_in_the_stream_is_refused(source):
    units = {"wenlv": ([R1], R1)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"wenlv/{R1}/index.html")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    res = results(tenants(source, "dst", "receive-many",
                          stdin=head(units) + buf.getvalue()).stdout)
    assert not res["wenlv"]["ok"]
    assert not (source / "dst" / "sites" / "wenlv" / "releases" / R1).exists()


@pytest.mark.parametrize("damage", ["planted link", "outside", "gone", "a directory"])
def test_a_release_that_cannot_be_sent_fails_its_unit_alone(tmp_path, damage):
    """On the source, a hostile unit's release (its files are the unit's to shape over SFTP
    until published; a node's disk can lose files): one listed file is a link to a secret,
    a path outside the release, gone, or a directory. pack-many leaves that unit out from
    there and goes on; the units after it arrive; nothing of the secret travels."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:$6$hash")
    release(tmp_path, "src", "aaa", R1, {"index.html": b"a1", "x.html": b"x"})
    release(tmp_path, "src", "aaa", R2, {"index.html": b"a2", "x.html": b"x"}, live=True)
    release(tmp_path, "src", "zzz", R1, {"index.html": b"z"}, live=True)
    bad = tmp_path / "src" / "sites" / "aaa" / "releases" / R1
    if damage == "planted link":
        (bad / "x.html").unlink()
        (bad / "x.html").symlink_to(secret)
    elif damage == "outside":
        (bad / ".digests").write_text((bad / ".digests").read_text() +
                                      f"{'0' * 64}  ../../zzz/releases/{R1}/index.html\n")
    elif damage == "gone":
        (bad / "x.html").unlink()
    else:
        (bad / "x.html").unlink()
        (bad / "x.html").mkdir()
    units = {"aaa": ([R1, R2], R2), "zzz": ([R1], R1)}
    packed = tenants(tmp_path, "src", "pack-many", stdin=ask(units))
    assert packed.returncode == 0 and b"aaa" in packed.stderr, packed.stderr
    with tarfile.open(fileobj=io.BytesIO(packed.stdout), mode="r:gz") as tar:
        sent = {m.name: tar.extractfile(m).read() for m in tar}
    assert b"root:" not in b"".join(sent.values())
    assert not any(n.startswith(f"aaa/{R2}/") for n in sent), sorted(sent)
    res = results(tenants(tmp_path, "dst", "receive-many",
                          stdin=head(units) + packed.stdout).stdout)
    assert not res["aaa"]["ok"] and res["zzz"]["ok"], res
    sites = tmp_path / "dst" / "sites"
    assert not (sites / "aaa" / "current").exists()
    assert (sites / "zzz" / "current" / "index.html").read_bytes() == b"z"


@pytest.mark.parametrize("line", ["../etc 20261201T100000-aaaaaa", "wenlv ../../x",
                                  "wenlv $(reboot)"])
def test_a_bad_name_asked_of_pack_many_is_refused(source, line):
    r = tenants(source, "src", "pack-many", stdin=line.encode() + b"\n")
    assert r.returncode != 0 and r.stdout == b""


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
