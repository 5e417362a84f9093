"""The tamper guard on a real filesystem (a temporary tree laid out like a node): adoption,
changed/added/removed files put back with evidence, a release switch not mistaken for
tampering, a file without a pristine copy reported as not put back, scripts moved out of a PHP
site's files/. The inotify watcher around it runs in the lab tests."""
from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from govhost_node import tamper


def _release(root, tenant: str, rid: str, files: dict[str, bytes]) -> str:
    rel = root / "sites" / tenant / "releases" / rid
    for name, data in files.items():
        (rel / name).parent.mkdir(parents=True, exist_ok=True)
        (rel / name).write_bytes(data)
        os.chmod(rel / name, 0o644)
    (rel / ".digests").write_text("".join(
        f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    (rel / ".meta.json").write_text("{}")
    return str(rel)


def _switch(root, tenant: str, rid: str) -> None:
    link = root / "sites" / tenant / "current"
    tmp = root / "sites" / tenant / ".current.tmp"
    os.symlink(f"releases/{rid}", tmp)
    os.replace(tmp, link)


@pytest.fixture
def node(tmp_path, monkeypatch):
    for name, sub in (("SITES", "sites"), ("BASE", "tamper"), ("PRISTINE", "pristine"),
                      ("EVIDENCE", "tamper/evidence")):
        monkeypatch.setattr(tamper, name, str(tmp_path / sub))
    monkeypatch.setattr(tamper, "CONFIG", str(tmp_path / "etc-current"))
    monkeypatch.setattr(tamper, "INCIDENTS", str(tmp_path / "tamper/incidents.jsonl"))
    monkeypatch.setattr(tamper, "STATE", str(tmp_path / "tamper/state.json"))
    _release(tmp_path, "jiaoyu", "r1", {"index.html": b"<h1>home</h1>",
                                        "news/a.html": b"<p>a</p>"})
    _switch(tmp_path, "jiaoyu", "r1")
    return tmp_path


def test_changed_added_and_removed_files_are_put_back(node):
    g = tamper.Guard("n1")
    assert g.full_check() == []
    live = node / "sites/jiaoyu/current"
    (live / "index.html").write_bytes(b"HACKED")
    (live / "shell.php").write_bytes(b"<?php system($_GET[1]);")
    (live / "news/a.html").unlink()
    (live / "news/evil").mkdir()
    found = g.full_check()
    assert sorted((i["file"], i["change"], i["restored"]) for i in found) == [
        ("index.html", "modified", True), ("news/a.html", "removed", True),
        ("news/evil", "added", True), ("shell.php", "added", True)]
    assert (live / "index.html").read_bytes() == b"<h1>home</h1>"
    assert (live / "news/a.html").read_bytes() == b"<p>a</p>"
    assert not (live / "shell.php").exists() and not (live / "news/evil").exists()
    assert oct((live / "index.html").stat().st_mode & 0o777) == "0o644"
    hacked = next(i for i in found if i["file"] == "index.html")
    assert open(hacked["evidence"], "rb").read() == b"HACKED"
    state = json.loads((node / "tamper/state.json").read_text())
    assert state["incidents"] == {"jiaoyu": 4} and state["unrepaired"] == {}
    assert len((node / "tamper/incidents.jsonl").read_text().splitlines()) == 4


def test_one_event_is_judged_against_the_live_release(node):
    g = tamper.Guard("n1")
    g.full_check()
    live = node / "sites/jiaoyu/current"
    (live / "index.html").write_bytes(b"HACKED")
    rec = g.check_path(str(os.path.realpath(live / "index.html")))
    assert rec["change"] == "modified" and rec["restored"]
    assert g.check_path(str(os.path.realpath(live / "index.html"))) is None   # good now


def test_a_publish_is_not_tampering(node):
    g = tamper.Guard("n1")
    g.full_check()
    old = os.path.realpath(node / "sites/jiaoyu/current")
    _release(node, "jiaoyu", "r2", {"index.html": b"<h1>new</h1>"})
    _switch(node, "jiaoyu", "r2")
    # events from the old release (pruned after the switch) before the watcher follows
    os.unlink(os.path.join(old, "news/a.html"))
    assert g.check_path(os.path.join(old, "news/a.html")) is None
    assert g.full_check() == []
    assert g.live["jiaoyu"].release == "r2"


def test_a_file_without_a_pristine_copy_is_reported_not_put_back(node):
    live = node / "sites/jiaoyu/current"
    (live / "index.html").write_bytes(b"HACKED before the watcher ever saw it")
    g = tamper.Guard("n1")
    [rec] = g.full_check()
    assert rec["file"] == "index.html" and not rec["restored"]
    assert "no pristine copy" in rec["why"]
    state = json.loads((node / "tamper/state.json").read_text())
    assert list(state["unrepaired"]["jiaoyu"]) == ["index.html"]


def test_the_config_release_keeps_its_modes(node):
    rel = node / "etc-releases" / "c1"
    (rel / "tls").mkdir(parents=True)
    (rel / "nginx.conf").write_bytes(b"events {}\n")
    (rel / "tls/site.key").write_bytes(b"KEY")
    os.chmod(rel / "tls/site.key", 0o600)
    conf_digest = hashlib.sha256(b"events {}\n").hexdigest()
    key_digest = hashlib.sha256(b"KEY").hexdigest()
    (rel / ".digests").write_text(f"{conf_digest}  nginx.conf\n{key_digest}  tls/site.key\n")
    (rel / ".complete").write_text("")
    (rel / "release-id.conf").write_text("location = /release {}\n")
    os.symlink(rel, node / "etc-current")
    g = tamper.Guard("n1")
    assert g.full_check() == []                     # govhost's own files are not tampering
    (rel / "tls/site.key").write_bytes(b"STOLEN")
    [rec] = g.full_check()
    assert rec["tenant"] == "_config" and rec["restored"]
    assert (rel / "tls/site.key").read_bytes() == b"KEY"
    assert oct((rel / "tls/site.key").stat().st_mode & 0o777) == "0o600"
    os.chmod(rel / "tls/site.key", 0o644)           # the key made readable to everyone
    [rec] = g.full_check()
    assert (rec["file"], rec["change"], rec["restored"]) == ("tls/site.key", "mode", True)
    assert oct((rel / "tls/site.key").stat().st_mode & 0o777) == "0o600"


def test_scripts_in_a_php_sites_files_area_are_moved_out(node):
    files = node / "sites/jiaoyu/files/up"
    files.mkdir(parents=True)
    (files / "x.php5").write_bytes(b"<?php eval($_POST[1]);")
    (files / "photo.jpg").write_bytes(b"JPEG")
    g = tamper.Guard("n1")
    found = g.full_check()
    assert [(i["file"], i["change"], i["restored"]) for i in found] == [
        ("files/up/x.php5", "script", True)]
    assert sorted(os.listdir(files)) == ["photo.jpg"]
    assert open(found[0]["evidence"], "rb").read() == b"<?php eval($_POST[1]);"


def test_copies_made_as_a_release_goes_live_put_back_a_change_in_its_first_second(node):
    live = node / "sites/jiaoyu/current"
    assert tamper.keep_pristine("jiaoyu", os.path.realpath(live)) == 2   # what switch does
    assert tamper.keep_pristine("jiaoyu", os.path.realpath(live)) == 0   # once per digest
    (live / "index.html").write_bytes(b"HACKED before the watcher ever saw it")
    [rec] = tamper.Guard("n1").full_check()
    assert rec["file"] == "index.html" and rec["restored"]
    assert (live / "index.html").read_bytes() == b"<h1>home</h1>"


def test_a_file_that_cannot_be_put_back_is_reported_once_and_stays_open(node):
    live = node / "sites/jiaoyu/current"
    (live / "index.html").write_bytes(b"HACKED before the watcher ever saw it")
    g = tamper.Guard("n1")
    assert len(g.full_check()) == 1
    assert g.full_check() == [] and g.full_check() == []       # no new incident each round
    assert list(g.open["jiaoyu"]) == ["index.html"]             # still alerting
    assert len((node / "tamper/incidents.jsonl").read_text().splitlines()) == 1


def test_a_prune_before_the_watcher_follows_a_switch_keeps_the_new_copies(node):
    g = tamper.Guard("n1")
    assert g.full_check() == []                                   # watching r1
    _release(node, "jiaoyu", "r2", {"index.html": b"<h1>new home</h1>",
                                    "news/a.html": b"<p>a</p>"})
    assert tamper.keep_pristine("jiaoyu", str(node / "sites/jiaoyu/releases/r2")) == 1
    _switch(node, "jiaoyu", "r2")
    g.prune()                                   # the watcher has not followed the switch yet
    live = node / "sites/jiaoyu/current"
    (live / "index.html").write_bytes(b"HACKED in r2's first second")
    [rec] = g.full_check()
    assert (rec["release"], rec["file"], rec["restored"]) == ("r2", "index.html", True)
    assert (live / "index.html").read_bytes() == b"<h1>new home</h1>"
    # An hour on, what no live release needs is dropped.
    g.prune(now=os.path.getmtime(node / "sites/jiaoyu/current/index.html") + 7200)
    kept = {f for _, _, fs in os.walk(node / "pristine") for f in fs}
    assert kept == {hashlib.sha256(b"<h1>new home</h1>").hexdigest(),
                    hashlib.sha256(b"<p>a</p>").hexdigest()}


def test_a_sweep_finds_what_no_event_reported_and_hashes_only_what_moved(node, monkeypatch):
    g = tamper.Guard("n1")
    assert g.full_check() == []
    hashed = []
    real = tamper.sha256
    monkeypatch.setattr(tamper, "sha256", lambda p: hashed.append(p) or real(p))
    assert g.sweep() == [] and hashed == []            # nothing moved: nothing read
    live = node / "sites/jiaoyu/current"
    (live / "news/a.html").write_bytes(b"<p>defaced</p>")      # no event reaches the guard
    (live / "extra.html").write_bytes(b"planted")
    found = g.sweep()
    assert sorted((i["file"], i["change"], i["restored"]) for i in found) == [
        ("extra.html", "added", True), ("news/a.html", "modified", True)]
    assert [os.path.basename(p) for p in hashed if p.endswith("index.html")] == []
    assert (live / "news/a.html").read_bytes() == b"<p>a</p>"
    # the same bytes written back by someone with the old mtime: ctime still moved, re-read
    hashed.clear()
    time.sleep(0.05)                            # past the filesystem's timestamp tick
    st = os.stat(live / "index.html")
    (live / "index.html").write_bytes(b"<h1>home</h1>")
    os.utime(live / "index.html", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert g.sweep() == [] and any(p.endswith("index.html") for p in hashed)


def test_a_defaced_pages_bytes_go_to_the_control_machine_whose_lists_name_the_words(
        node, capsys):
    """Issue 34: `incidents --evidence-of .html` sends the kept bytes of changed pages (and
    nothing from outside the evidence folder); the control machine's wording check names
    the block word a defacer put in the title."""
    import base64

    from controlplane.core import inventory
    from controlplane.nodes import tamper as control_tamper
    from controlplane.wording import check as wording
    g = tamper.Guard("n1")
    g.full_check()
    live = node / "sites/jiaoyu/current"
    (live / "index.html").write_bytes("<title>网上博彩</title><p>x</p>".encode())
    (live / "news/a.html").write_bytes(b"<p>plain</p>")
    g.full_check()
    with open(tamper.INCIDENTS, "a") as f:        # a record pointing outside the evidence
        f.write(json.dumps({"at": time.time(), "file": "x.html",
                            "evidence": "/etc/shadow"}) + "\n")
    tamper.incidents(0, (".html",))
    got = json.loads(capsys.readouterr().out)["incidents"]
    sent = {i["file"]: i.get("evidence_b64") for i in got}
    assert base64.b64decode(sent["index.html"]).decode() == "<title>网上博彩</title><p>x</p>"
    assert sent["x.html"] is None
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    inv = inventory.load(os.path.join(repo, "inventory"), node / "state")
    ls = wording.lists(inv)
    words = control_tamper.words_in(sent["index.html"], "index.html", ls)
    assert [(w["found"], w["severity"], w["place"], w["line"]) for w in words] == [
        ("网上博彩", "block", "title", 1)]
    assert control_tamper.words_in(sent["news/a.html"], "news/a.html", ls) == []


def test_an_events_scope_is_found_by_its_path_not_by_trying_every_live_release(node,
                                                                              monkeypatch):
    """Before stop 64 each event tried every live release in turn (3,334 a node at 5,000
    units, 0.35 ms an event). Counted, not timed: no walk of the live releases; a path in
    no live release (staging, an upload area) has none; a release switched is followed."""
    for t in ("wenhua", "caizheng", "renshe"):
        _release(node, t, "r1", {"index.html": t.encode()})
        _switch(node, t, "r1")
    g = tamper.Guard("n1")
    g.full_check()
    walked = []

    class Counted(dict):
        def values(self):
            walked.append(1)
            return super().values()

        def __iter__(self):
            walked.append(1)
            return super().__iter__()
    g.live = Counted(g.live)
    live = os.path.realpath(node / "sites/renshe/current")
    lv, rel = g.scope_of(os.path.join(live, "index.html"))
    assert (lv.scope, rel) == ("renshe", "index.html")
    assert g.scope_of(live)[1] == "."
    assert g.scope_of(str(node / "sites/renshe/releases/.r2.recv/index.html")) is None
    assert g.scope_of(str(node / "sites/renshe/upload/a.html")) is None
    assert g.scope_of(live + "x/index.html") is None        # a sibling whose name begins alike
    assert walked == []
    _release(node, "renshe", "r2", {"index.html": b"v2"})
    _switch(node, "renshe", "r2")
    g.refresh()
    lv, rel = g.scope_of(str(node / "sites/renshe/releases/r2/index.html"))
    assert (lv.release, rel) == ("r2", "index.html")
    assert g.scope_of(os.path.join(live, "index.html")) is None     # r1 is no longer live


def test_a_release_going_live_drops_only_its_own_scopes_verified_files(node, monkeypatch):
    """Before stop 66 a release going live rebuilt the whole map of verified files under the
    guard's lock (666,000 entries at 5,000 units: 0.3 s, each publish and rollback), and the
    refresh each second resolved every unit's link (89 ms at 3,334 units). Counted, not
    timed: the map is never walked, a link is only read; the switched unit's files are
    hashed at the next sweep, and no other unit's are."""
    for t in ("wenhua", "caizheng"):
        _release(node, t, "r1", {"index.html": t.encode(), "a.html": b"a"})
        _switch(node, t, "r1")
    g = tamper.Guard("n1")
    g.full_check()
    assert g.sweep() == []

    class Unwalkable(dict):
        def _walked(self, *a):
            raise AssertionError("the verified map was walked")
        items = values = keys = __iter__ = _walked
    g.verified = Unwalkable(g.verified)
    resolved = []
    real_path = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p: resolved.append(p) or real_path(p))
    assert g.refresh() == [] and resolved == []     # each second: one readlink a unit
    _release(node, "wenhua", "r2", {"index.html": b"v2", "a.html": b"a"})
    _switch(node, "wenhua", "r2")
    assert [lv.scope for lv in g.refresh()] == ["wenhua"]
    assert len(resolved) == 1
    monkeypatch.setattr(os.path, "realpath", real_path)
    hashed = []
    real = tamper.sha256
    monkeypatch.setattr(tamper, "sha256", lambda p: hashed.append(p) or real(p))
    assert g.sweep() == []
    assert sorted(os.path.relpath(p, node / "sites") for p in hashed) == [
        "wenhua/releases/r2/a.html", "wenhua/releases/r2/index.html"]
    hashed.clear()
    os.unlink(node / "sites/caizheng/current")          # a unit gone from the node
    g.refresh()
    assert "caizheng" not in g.verified and "caizheng" not in g.live
    assert g.sweep() == [] and hashed == []


def test_a_defacement_writes_the_state_file_once_not_once_a_file(node, monkeypatch):
    """Before stop 66 each incident rewrote state.json, every live scope in it (8.7 ms at
    4,000 scopes: some 87 s of a 10,000-file defacement), and hashed each file put back
    twice. The first incident is written at once (the alert needs it); the rest of the
    batch by `flush`, with the same counts."""
    files = {f"p{i}.html": f"page {i}".encode() for i in range(30)}
    _release(node, "wenhua", "r1", files)
    _switch(node, "wenhua", "r1")
    g = tamper.Guard("n1")
    g.full_check()
    writes, hashed = [], []
    real_write, real_hash = tamper._write_json, tamper.sha256
    monkeypatch.setattr(tamper, "_write_json",           # a copy: the guard's dicts move on
                        lambda p, d: writes.append(json.loads(json.dumps(d))) or real_write(p, d))
    monkeypatch.setattr(tamper, "sha256", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(tamper, "SAVE_EVERY", 3600.0)
    g._saved_at = float("-inf")          # as a guard that has not written since the last check
    live = os.path.realpath(node / "sites/wenhua/current")
    for name in files:
        with open(os.path.join(live, name), "wb") as f:
            f.write(b"defaced")
    found = [g.check_path(os.path.join(live, name)) for name in files]
    assert all(r and r["restored"] for r in found)
    assert len(writes) == 1 and writes[0]["incidents"] == {"wenhua": 1}
    assert len(hashed) == 2 * len(files)             # judged once, verified once put back
    g.flush()
    assert len(writes) == 2 and writes[1]["incidents"] == {"wenhua": len(files)}
    with open(tamper.STATE) as f:
        assert json.load(f)["incidents"] == {"wenhua": len(files)}
    g.flush()
    assert len(writes) == 2                           # nothing new: nothing written
    assert all(open(os.path.join(live, n), "rb").read() == d for n, d in files.items())
