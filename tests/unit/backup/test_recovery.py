"""The county recovery key and the control snapshot's contents: pure functions and the
snapshot tree made on disk. restic, SFTP and a bare-machine restore run for real in
tests/integration/test_control_restore_lab.py."""
import json
import sqlite3
import string

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.backup import control, recovery
from controlplane.core import inventory
from controlplane.core.county import County
from controlplane.sites.plan import make_plan
from govhost_node.digests import file_sha256
from tests.helpers import CLUSTER, hosts, tenant, write_inventory

KEYS = st.binary(min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(KEYS)
def test_a_printed_key_reads_back_whatever_the_case_spaces_and_dashes(raw):
    text = recovery.format_key(raw)
    assert len(text.split("-")) == 14 and all(len(g) == 4 for g in text.split("-"))
    assert recovery.parse_key(text) == raw
    assert recovery.parse_key(" " + text.lower().replace("-", " ") + "\n") == raw
    # the digits people type for the letters base32 has
    assert recovery.parse_key(text.replace("O", "0").replace("I", "1").replace("B", "8")) == raw


@settings(max_examples=300, deadline=None)
@given(KEYS, st.integers(min_value=0, max_value=55), st.sampled_from(string.ascii_uppercase
                                                                      + "234567"))
def test_one_wrong_letter_is_refused_by_the_check(raw, pos, letter):
    chars = list(recovery.format_key(raw).replace("-", ""))
    if chars[pos] == letter:
        return
    chars[pos] = letter
    with pytest.raises(recovery.RecoveryKeyError):
        recovery.parse_key("".join(chars))


@pytest.mark.parametrize("text, says", [
    ("ABCD-EFGH", "56 letters"),
    ("ABCD-EFGH-" * 6 + "ABCD-EFG!", "A-Z and digits 2-7"),
    ("", "56 letters"),
])
def test_a_malformed_key_says_what_a_key_looks_like(text, says):
    with pytest.raises(recovery.RecoveryKeyError, match=says):
        recovery.parse_key(text)


@settings(max_examples=30, deadline=None)
@given(KEYS, KEYS)
def test_everything_derived_from_a_key_is_stable_and_differs_between_keys(a, b):
    pub = recovery.ssh_public_key(a)
    assert pub == recovery.ssh_public_key(a) and pub.endswith(" govhost-recovery")
    priv = serialization.load_ssh_private_key(recovery.ssh_private_key(a), password=None)
    assert priv.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() \
        == pub.rsplit(" ", 1)[0]
    assert recovery.restic_password(a) == recovery.restic_password(a)
    if a != b:
        assert recovery.ssh_public_key(b) != pub
        assert recovery.restic_password(b) != recovery.restic_password(a)
        assert recovery.fingerprint(b) != recovery.fingerprint(a)
    # the fingerprint gives nothing of the password away
    assert recovery.fingerprint(a) not in recovery.restic_password(a)


@pytest.mark.parametrize("rel, kept", [
    ("secret", True), ("backup_ed25519", True), ("known_hosts", True),
    ("tls/ca/ca.key", True), ("tls/acme-account.pem", True), ("tls/certs/x.pem", True),
    ("wording-checked", True), ("metrics/ca.pem", True),
    ("recovery-key", False),            # never inside the repositories it opens
    ("state.db", False), ("state.db-wal", False),   # taken with SQLite's backup API instead
    ("apply.lock", False), ("backup-run.lock", False), ("runner-control/x", False),
    ("restic-cache/x", False), ("control-work/x", False), ("console.pid", False),
    ("console.log", False), (".secret.123", False), ("search/index.db", False),
])
def test_what_of_the_state_directory_goes_into_the_snapshot(rel, kept):
    assert recovery.state_file_kept(rel) is kept


def test_the_state_directory_inside_the_inventory_is_not_taken_twice():
    assert recovery.inventory_file_kept("cluster.yaml", ".govhost")
    assert recovery.inventory_file_kept("tenants/jiaoyu.yaml", ".govhost")
    assert not recovery.inventory_file_kept(".govhost/secret", ".govhost")
    assert not recovery.inventory_file_kept("tenants/jiaoyu.yaml~", None)


def test_a_manifest_of_an_unknown_format_is_refused():
    m = recovery.Manifest(1.0, "h", "/i", "/i/.govhost", None, {"a": "b"}, {"audit": 3}, 2.0,
                          {"n1": "r1"}, {"jiaoyu": "20261201T000000-aaaaaa"})
    assert recovery.Manifest.from_json(m.to_json()) == m
    doc = json.loads(m.to_json())
    doc["format"] = 99
    with pytest.raises(ValueError, match="format 99"):
        recovery.Manifest.from_json(json.dumps(doc))


def test_the_nodes_tell_what_went_live_and_what_was_applied_after_the_snapshot():
    m = recovery.Manifest(1.0, "h", "/i", "/i/.govhost", None, {}, {}, None,
                          {"n1": "c1", "n2": "c1", "n3": "c1"}, {})
    new, old, older = "20261203T100000-bbbbbb", "20261201T000000-000000", "20261101T000000-cccccc"
    found = recovery.after_snapshot(
        m, {"n1": "c2", "n2": "c1", "n3": None},
        {"n1": {"jiaoyu": new, "renshe": older, "zz": new, "caizheng": old},
         "n2": {"jiaoyu": new, "caizheng": new},
         "n3": {"renshe": old, "gongan": "../../etc"}},
        {"jiaoyu": ["n1", "n2"], "renshe": ["n1", "n3"], "caizheng": ["n1", "n2"],
         "gongan": ["n3"]},
        {"jiaoyu": old, "renshe": old, "caizheng": old, "gongan": old})
    assert found["applied_after"] == {"n1": "c2"}
    assert found["live_after"] == {
        # every replica serves it: a publish after the snapshot
        "jiaoyu": {"release": new, "nodes": ["n1", "n2"], "was": old}}
    # One replica's word is not enough; a unit the inventory does not have (zz) is not asked
    # about; an id that is not a release id is never recorded.
    assert found["disagree"] == {"renshe": {"n1": older, "n3": old},
                                 "caizheng": {"n1": old, "n2": new},
                                 "gongan": {"n3": "../../etc"}}
    assert found["unjudged"] == {}


def test_one_answer_of_two_replicas_is_not_enough():
    m = recovery.Manifest(1.0, "h", "/i", "/i/.govhost", None, {}, {}, None, {}, {})
    new, old = "20261203T100000-bbbbbb", "20261201T000000-000000"
    found = recovery.after_snapshot(m, {}, {"n1": {"jiaoyu": new, "renshe": new}},
                                    {"jiaoyu": ["n1", "n2"],      # n2 unreachable
                                     "renshe": ["n1"]},           # its only replica
                                    {"jiaoyu": old, "renshe": old})
    assert found["unjudged"] == {"jiaoyu": {"n1": new}}
    assert list(found["live_after"]) == ["renshe"]


def test_a_rollback_after_the_snapshot_is_found_too():
    m = recovery.Manifest(1.0, "h", "/i", "/i/.govhost", None, {}, {}, None, {}, {})
    back = "20261101T000000-cccccc"
    found = recovery.after_snapshot(m, {}, {"n1": {"jiaoyu": back}, "n2": {"jiaoyu": back}},
                                    {"jiaoyu": ["n1", "n2", "n3"]},     # n3 unreachable
                                    {"jiaoyu": "20261201T000000-000000"})
    assert found["live_after"]["jiaoyu"]["release"] == back


def test_compare_files_names_every_difference():
    assert recovery.compare_files({"a": "1", "b": "2"}, {"a": "1", "b": "2"}) == {
        "missing": [], "changed": [], "unlisted": []}
    assert recovery.compare_files({"a": "1", "b": "2"}, {"a": "9", "c": "3"}) == {
        "missing": ["b"], "changed": ["a"], "unlisted": ["c"]}


def _county(root):
    doc = hosts(3)
    doc["nodes"][0]["roles"] = ["web", "backup"]
    cluster = {**CLUSTER, "backup": {"offsite": {"address": "10.77.0.13"}}}
    return write_inventory(root, [tenant("jiaoyu")], cluster=cluster, host_doc=doc)


def test_the_recovery_key_reaches_backup_json_only_as_its_public_half(tmp_path):
    root = _county(tmp_path / "inv")
    before = make_plan(inventory.load(root), frozenset(), {}, {})
    spec = json.loads(before.releases["n1"].files["backup.json"])
    assert [a["user"] for a in spec["authorize"]] == ["govhost-backup"]   # no key yet
    inv = inventory.load(root)
    key, sheet = control.init(inv, root / ".govhost")
    assert sheet and recovery.format_key(key) in sheet
    assert control.init(inv, root / ".govhost") == (key, None)       # shown once
    assert (root / ".govhost" / "recovery-key").stat().st_mode & 0o777 == 0o600
    after = make_plan(inventory.load(root), frozenset(), {}, {})
    for node, dir_ in (("n1", "/srv/govhost/backup/repo"), ("n3", "/srv/govhost/offsite/repo")):
        text = after.releases[node].files["backup.json"].decode()
        accounts = {a["user"]: a for a in json.loads(text)["authorize"]}
        # The control repositories have an account of their own, which only the recovery
        # key opens: the nodes' backup key (on every node) does not reach them.
        assert accounts["govhost-control"] == {
            "user": "govhost-control", "dir": dir_ + "-control/repo",
            "public_key": recovery.ssh_public_key(key)}
        assert accounts["govhost-backup"]["public_key"] != recovery.ssh_public_key(key)
        assert recovery.format_key(key) not in text and recovery.restic_password(key) not in text
    again = make_plan(inventory.load(root), frozenset(), {}, {})
    assert again.releases["n1"].files == after.releases["n1"].files     # stable across applies


def test_a_snapshot_tree_holds_state_secrets_and_inventory_but_not_the_recovery_key(tmp_path):
    root = _county(tmp_path / "inv")
    county = County(root)
    control.init(county.inv, county.state_dir)
    with county.state() as st:
        st.audit("test.entry", "x", {"n": 1})
        st.record_applied("n1", "rel-1", {}, 1)
    (county.state_dir / "tls" / "ca").mkdir(parents=True)
    (county.state_dir / "tls" / "ca" / "ca.key").write_text("KEY")
    (county.state_dir / "apply.lock").write_text("")
    (county.state_dir / "runner-control").mkdir()
    (county.state_dir / "runner-control" / "x").write_text("x")
    (root / "tenants" / "link.yaml").symlink_to(root / "tenants" / "jiaoyu.yaml")
    work = tmp_path / "work" / recovery.SNAPSHOT_DIR
    m = control.build(county, work)
    assert m.skipped == ("inventory/tenants/link.yaml",)      # named, not silently left out
    files = set(m.files)
    assert {"inventory/cluster.yaml", "inventory/hosts.yaml", "inventory/tenants/jiaoyu.yaml",
            "state/state.db", "state/secret", "state/backup_ed25519",
            "state/tls/ca/ca.key"} <= files
    assert not any(f.startswith(("inventory/.govhost", "state/runner-control")) or
                   f in ("state/recovery-key", "state/apply.lock") for f in files)
    assert m.inventory == str(root.resolve()) and m.state_dir == str(county.state_dir)
    assert m.tables["audit"] >= 1 and m.audit_last is not None
    assert m.applied == {"n1": "rel-1"}
    found = {str(p.relative_to(work)): file_sha256(str(p)) for p in work.rglob("*")
             if p.is_file() and p.name != recovery.MANIFEST}
    assert recovery.compare_files(m.files, found) == {"missing": [], "changed": [],
                                                      "unlisted": []}
    db = sqlite3.connect(work / "state" / "state.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == m.tables["audit"]


def test_repositories_sit_beside_the_node_repositories(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv"))
    repos = control.repositories(inv)
    assert [(r.kind, r.address, r.user, r.path) for r in repos] == [
        ("control", inv.backup_node.address, "govhost-control",
         "/srv/govhost/backup/repo-control/repo"),
        ("control-offsite", "10.77.0.13", "govhost-control",
         "/srv/govhost/offsite/repo-control/repo")]


def test_init_refuses_a_county_without_a_backup_node_and_saves_no_key(tmp_path):
    root = write_inventory(tmp_path / "inv", [tenant("jiaoyu")])
    with pytest.raises(control.ControlBackupError, match="backup"):
        control.init(inventory.load(root), root / ".govhost")
    assert not (root / ".govhost" / "recovery-key").exists()
