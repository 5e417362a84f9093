"""The pure side of backups: manifest policy, who backs up what, timers, retention groups,
choosing a snapshot for a restore. The real restic runs in tests/integration/test_backup_lab.py."""
import json
import stat
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.backup import plan as backup_plan
from controlplane.core import inventory, secrets
from controlplane.core.errors import ManifestError
from controlplane.sites.apply import pack
from controlplane.sites.plan import make_plan
from tests.helpers import CLUSTER, hosts, tenant, write_inventory


def _county(root, cluster_extra=None, **jiaoyu_extra):
    doc = hosts(3)
    doc["nodes"][0]["roles"] = ["web", "backup"]
    doc["nodes"][1]["roles"] = ["web", "db"]
    cluster = {**CLUSTER, **(cluster_extra or {})}
    return write_inventory(root, [
        tenant("jiaoyu", **jiaoyu_extra),
        tenant("renshe", site={"type": "php", "database": True},
               backup={"schedule": "01:30", "keep_daily": 30}),
        tenant("app", site={"type": "proxy", "upstreams": ["http://10.20.0.5:9000"]}),
        tenant("quiet", backup={"enabled": False}),
    ], cluster=cluster, host_doc=doc)


def _specs(inv):
    plan = make_plan(inv, frozenset(), {}, {})
    return plan, {n: json.loads(r.files["backup.json"]) for n, r in plan.releases.items()}


def test_each_tenant_is_backed_up_once_by_its_first_replica_and_its_db_by_the_db_node(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv"))
    plan, specs = _specs(inv)
    files = {e["tenant"]: n for n, s in specs.items() for e in s["files"]}
    assert files == {"jiaoyu": plan.placement["jiaoyu"][0], "renshe": plan.placement["renshe"][0]}
    dbs = {e["tenant"]: (n, e["database"]) for n, s in specs.items() for e in s["databases"]}
    assert dbs == {"renshe": ("n2", "gh_renshe")}          # the proxy and `quiet` have none
    # Only the backup node holds the repository; everyone reaches it over SFTP.
    assert [n for n, s in specs.items() if s["repository"]["local"]] == ["n1"]
    assert {s["repository"]["url"] for s in specs.values()} == {
        "sftp:govhost-backup@10.77.0.11:/srv/govhost/backup/repo"}
    assert specs["n1"]["authorize"][0]["user"] == "govhost-backup"
    assert all(not s["authorize"] for n, s in specs.items() if n != "n1")


def test_policy_comes_from_the_manifest_over_the_cluster_defaults(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv"))
    renshe, jiaoyu = inv.backup_policy(inv.tenant("renshe")), inv.backup_policy(inv.tenant("jiaoyu"))
    assert (renshe.schedule, renshe.keep_daily, renshe.keep_weekly) == ("01:30", 30, 4)
    assert (jiaoyu.schedule, jiaoyu.keep_daily, jiaoyu.keep_monthly) == ("02:30", 7, 6)
    assert not inv.backup_policy(inv.tenant("app")).enabled        # proxy: nothing here
    groups = {tuple(g["keep"]): g["tags"] for g in backup_plan.retention_groups(inv)}
    assert groups[("--keep-daily", "30", "--keep-weekly", "4", "--keep-monthly", "6")] == \
        ["tenant=renshe"]
    assert groups[("--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "6")] == \
        ["kind=control", "tenant=jiaoyu"]


def test_timers_per_schedule_and_upkeep_on_the_backup_node(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv", cluster_extra={"backup": {
        "offsite": {"address": "10.77.0.13", "schedule": "hourly"}}}))
    plan, specs = _specs(inv)
    n1 = {t["name"]: t for t in specs["n1"]["timers"]}
    assert n1["govhost-backup-forget"]["args"] == ["forget", "--prune"]
    assert n1["govhost-backup-offsite"]["on_calendar"] == "hourly"
    assert n1["govhost-backup-offsite"]["cron"] == "0 * * * *"
    n2 = {t["name"]: t for t in specs["n2"]["timers"]}
    assert n2["govhost-backup-run-0130"]["on_calendar"] == "*-*-* 01:30:00"
    assert n2["govhost-backup-run-0130"]["cron"] == "30 1 * * *"
    # The off-site stand-in on n3 gets the repository account, with the same public key.
    assert specs["n3"]["authorize"][0]["dir"] == "/srv/govhost/offsite/repo"
    assert specs["n1"]["offsite"]["password"] != specs["n1"]["password"]


def test_secrets_ship_only_in_private_files(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv"))
    plan, _ = _specs(inv)
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(pack(plan.releases["n1"])), mode="r:gz") as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["backup.json"] == 0o600 and modes["backup.key"] == 0o600
    key = tmp_path / "inv" / ".govhost" / secrets.BACKUP_KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The key is a real OpenSSH key, and stable across loads (no change at every apply).
    assert inventory.load(tmp_path / "inv").backup_key == inv.backup_key
    out = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True)
    assert out.returncode == 0 and secrets.public_key(inv.backup_key).startswith(out.stdout.strip())


@pytest.mark.parametrize("field,value,expect", [
    ("schedule", "every night", "not a schedule"),
    ("schedule", "25:00", "not a schedule"),
    ("keep_daily", -1, "greater than or equal to 0"),
    ("path", "/srv/../etc", "no . or .. parts"),
    ("path", "relative/repo", "absolute path"),
])
def test_bad_backup_settings_are_refused_naming_the_field(tmp_path, field, value, expect):
    inv = _county(tmp_path / "inv", cluster_extra={"backup": {field: value}})
    with pytest.raises(ManifestError) as exc:
        inventory.load(inv)
    text = str(exc.value)
    assert "cluster.yaml" in text and f"backup.{field}" in text and expect in text


def test_bad_tenant_policy_and_two_backup_nodes_are_refused(tmp_path):
    root = _county(tmp_path / "inv", backup={"schedule": "02:30; rm -rf /"})
    with pytest.raises(ManifestError) as exc:
        inventory.load(root)
    assert "tenants/jiaoyu.yaml" in str(exc.value) and "backup.schedule" in str(exc.value)
    doc = hosts(3)
    doc["nodes"][0]["roles"] = ["web", "backup"]
    doc["nodes"][2]["roles"] = ["web", "backup"]
    root2 = write_inventory(tmp_path / "inv2", [tenant("jiaoyu")], host_doc=doc)
    with pytest.raises(ManifestError) as exc:
        inventory.load(root2)
    assert "n1, n3" in str(exc.value)


def test_no_backup_node_means_no_backup_config(tmp_path):
    inv = inventory.load(write_inventory(tmp_path / "inv", [tenant("jiaoyu")]))
    plan = make_plan(inv, frozenset(), {}, {})
    assert all("backup.json" not in r.files for r in plan.releases.values())


def test_retention_of_all_zeros_keeps_the_latest():
    from controlplane.core.inventory import BackupPolicy
    assert backup_plan.retention_args(BackupPolicy(True, "daily", 0, 0, 0)) == ["--keep-last", "1"]


# ------------------------------------------------------------------ choosing a snapshot

def _snap(i: int, when: datetime, kind: str = "files", run: str | None = None) -> dict:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + "123456789Z"
    return {"id": f"{i:064x}", "short_id": f"{i:08x}", "time": stamp,
            "tags": ["govhost", "tenant=jiaoyu", f"kind={kind}", f"run={run or i}"]}


T0 = datetime(2026, 11, 20, 2, 30, tzinfo=timezone.utc)


def test_parse_time_takes_restic_nanoseconds_and_operator_times():
    assert backup_plan.parse_time("2026-11-20T02:30:00.123456789Z") == pytest.approx(
        T0.timestamp() + 0.123456, abs=1e-6)
    assert backup_plan.parse_time("2026-11-20T10:30:00+08:00") == T0.timestamp()
    with pytest.raises(ValueError, match="not a time"):
        backup_plan.parse_time("yesterday")


def test_pick_by_id_prefix_time_and_latest():
    snaps = [_snap(i, T0 + timedelta(days=i)) for i in range(1, 4)]
    assert backup_plan.pick(snaps)["short_id"] == "00000003"
    assert backup_plan.pick(snaps, snapshot_id="00000002")["short_id"] == "00000002"
    between = (T0 + timedelta(days=2, hours=12)).timestamp()
    assert backup_plan.pick(snaps, at=between)["short_id"] == "00000002"
    assert backup_plan.pick(snaps, at=(T0 + timedelta(hours=1)).timestamp()) is None
    assert backup_plan.pick(snaps, snapshot_id="0000000") is None      # ambiguous prefix


def test_companion_prefers_the_same_run():
    files = _snap(1, T0, run="r1")
    dbs = [_snap(2, T0 - timedelta(days=1), "db", "r0"), _snap(3, T0 + timedelta(seconds=5), "db", "r1"),
           _snap(4, T0 + timedelta(days=1), "db", "r2")]
    assert backup_plan.companion(dbs, files)["short_id"] == "00000003"
    alone = _snap(5, T0 + timedelta(hours=3), run="r9")
    assert backup_plan.companion(dbs, alone)["short_id"] == "00000003"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30, unique=True),
       st.integers(min_value=-10, max_value=10**6 + 10))
def test_pick_at_is_the_last_snapshot_not_after_the_time(offsets, at):
    snaps = backup_plan.of_kind([_snap(i, T0 + timedelta(seconds=o)) for i, o in
                                 enumerate(offsets)], "jiaoyu", "files")
    got = backup_plan.pick(snaps, at=T0.timestamp() + at + 0.5)
    eligible = [o for o in offsets if o <= at]
    if not eligible:
        assert got is None
    else:
        assert backup_plan.parse_time(got["time"]) == pytest.approx(
            (T0 + timedelta(seconds=max(eligible))).timestamp() + 0.123456, abs=1e-5)
