"""Backups on the real lab: restic 0.14 with its repository on n1 over SFTP, real MariaDB on
n2, real content releases. Each module run uses a repository of its own (the test county's
state directory has its own secret, hence its own repository password)."""
import json
import secrets
import shutil
import time
from pathlib import Path

import pytest

from controlplane.core.county import County
from controlplane.lab import machines as lab
from tests.helpers import example_inventory, tamper_watcher_stopped

from .conftest import govhost, with_county_keys
from .test_apply_lab import NODES, apply_json, node_metrics, on_node
from .test_tenants_lab import reset_content

TENANT = "zhujian"          # PHP with a database: files on its replica, dump on the db node
SYNTH = "archive-test"      # a tenant whose retention is checked on synthetic snapshots


def _json(proc):
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def county(lab_cluster, tmp_path_factory, county_keys):
    root = tmp_path_factory.mktemp("backup")
    inv = root / "inventory"
    with_county_keys(example_inventory(inv), county_keys)
    tag = secrets.token_hex(4)
    text = (inv / "cluster.yaml").read_text()
    text = text.replace("offsite:\n", f"path: /srv/govhost/backup/t{tag}/repo\n  offsite:\n")
    text = text.replace("path: /srv/govhost/offsite/repo", f"path: /srv/govhost/offsite/t{tag}")
    (inv / "cluster.yaml").write_text(text)
    (inv / "tenants" / f"{SYNTH}.yaml").write_text(
        f"name: {SYNTH}\ntitle: 档案测试\nkind: department\n"
        "contact: {name: 王芳, email: web@archive.qingshui.gov.cn, phone: '0571-1234'}\n"
        "backup: {keep_daily: 3, keep_weekly: 2, keep_monthly: 2}\n")
    reset_content(TENANT)
    # The recovery key before the first apply (as scripts/lab.sh does): the backup accounts
    # accept its SSH half from the start.
    made = _json(govhost(inv, "control", "init", "--json", check=True))
    apply_json(inv)
    placement = _json(govhost(inv, "plan", "--json", check=True))["placement"]
    yield {"inv": inv, "home": NODES[placement[TENANT][0]], "db": NODES["n2"], "tag": tag,
           "root": root, "recovery_key": made["recovery_key"]}
    on_node(NODES["n2"], "mariadb gh_zhujian -e 'DROP TABLE IF EXISTS t; "
                         "DROP VIEW IF EXISTS broken'")
    reset_content(TENANT)
    for address in NODES.values():
        on_node(address, f"rm -rf /srv/govhost/backup/t{tag} /srv/govhost/offsite/t{tag} "
                         f"/srv/govhost/offsite/t{tag}-control")


def _upload(node: str, files: dict[str, str]) -> None:
    """Content as the unit's SFTP upload would leave it (SFTP itself: test_tenants_lab)."""
    cmds = [f"cd /srv/govhost/sites/{TENANT}/upload && rm -rf ./*"]
    for path, spec in files.items():
        cmds.append(f"mkdir -p $(dirname {path})")
        if spec.startswith("random:"):
            cmds.append(f"head -c {int(spec[7:])} /dev/urandom > {path}")
        else:
            cmds.append(f"printf '%s' '{spec}' > {path}")
    cmds.append(f"chown -R gh-{TENANT}:gh-{TENANT} .")
    on_node(node, " && ".join(cmds))


def _hashes(node: str, where: str) -> dict[str, str]:
    out = on_node(node, f"cd /srv/govhost/sites/{TENANT}/{where}/ && find . -type f "
                        "! -name .meta.json -print0 | sort -z | xargs -0 -r sha256sum")
    return {line[66:]: line[:64] for line in out.splitlines()}


def _rows(db_node: str) -> list[str]:
    return on_node(db_node, "mariadb -N gh_zhujian -e 'SELECT id, v FROM t ORDER BY id'"
                   ).splitlines()


def _snaps(inv, kind: str, tenant: str = TENANT) -> list[dict]:
    return [s for s in _json(govhost(inv, "backup", "list", tenant, "--json", check=True))
            if s["kind"] == kind]


def test_restore_after_loss_gives_back_identical_files_and_rows(county):
    inv, home, db = county["inv"], county["home"], county["db"]
    _upload(home, {"index.php": "<?php echo 1;", "docs/report.pdf": "random:300000",
                   "docs/通知.txt": "关于开展检查的通知", "img/logo.png": "random:20000"})
    assert govhost(inv, "publish", TENANT).returncode == 0
    on_node(db, "mariadb gh_zhujian -e \"DROP TABLE IF EXISTS t; CREATE TABLE t "
                "(id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1,'a'),(2,'b'),"
                "(3,'c'),(4,'d');\"")
    live, upload, rows = _hashes(home, "current"), _hashes(home, "upload"), _rows(db)
    assert len(live) == 5 and len(rows) == 4          # 4 files + .digests
    run = _json(govhost(inv, "backup", "run", TENANT, "--json"))
    assert run["failed"] == 0 and {(r["kind"], r["ok"]) for r in run["results"]} == \
        {("files", True), ("db", True)}

    # The loss: files deleted from the upload area and from the live release (the tamper
    # watcher, which would put the live file back at once, is down), rows deleted, a table
    # added.
    with tamper_watcher_stopped(home):
        on_node(home, f"rm -rf /srv/govhost/sites/{TENANT}/upload/docs "
                      f"/srv/govhost/sites/{TENANT}/current/docs/report.pdf")
        on_node(db, "mariadb gh_zhujian -e 'DELETE FROM t WHERE id > 1; "
                    "CREATE TABLE junk (x INT)'")
        assert _hashes(home, "current") != live and _rows(db) == ["1\ta"]

        res = _json(govhost(inv, "backup", "restore", TENANT, "--yes", "--json", timeout=900))
    assert res["files_snapshot"].startswith(next(r["snapshot"] for r in run["results"]
                                                 if r["kind"] == "files"))
    assert _hashes(home, "current") == live            # byte-identical
    assert _hashes(home, "upload") == upload
    assert _rows(db) == rows
    assert "junk" not in on_node(db, "mariadb -N gh_zhujian -e 'SHOW TABLES'")
    # The restore is a content release like any other (rollback works) and made a safety
    # snapshot of the damaged state first.
    releases = _json(govhost(inv, "releases", TENANT, "--json", check=True))
    assert any(r["published_by"].startswith("restore:") and r["source"] == "restore"
               and r["status"] == "live" for r in releases)
    assert len(res["pre_restore"]) == 2
    reasons = {s["id"]: s["reason"] for s in _snaps(inv, "files")}
    assert reasons[res["pre_restore"][0][:8]] == "pre-restore"
    assert res["release"]


def test_restore_as_of_a_time_between_two_snapshots_picks_the_earlier(county, tmp_path):
    inv, home = county["inv"], county["home"]
    _upload(home, {"index.php": "<?php echo 101;"})
    assert govhost(inv, "publish", TENANT).returncode == 0
    first = _json(govhost(inv, "backup", "run", TENANT, "--json"))
    time.sleep(2)
    between = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    time.sleep(2)
    _upload(home, {"index.php": "<?php echo 202;"})
    assert govhost(inv, "publish", TENANT).returncode == 0
    second = _json(govhost(inv, "backup", "run", TENANT, "--json"))
    assert first["failed"] == second["failed"] == 0
    out = tmp_path / "restored"
    res = _json(govhost(inv, "backup", "restore", TENANT, "--at", between, "--to", str(out),
                        "--json"))
    want = next(r["snapshot"] for r in first["results"] if r["kind"] == "files")
    assert res["files_snapshot"].startswith(want)
    site = out / "files" / "srv" / "govhost" / "sites" / TENANT
    assert (site / "upload" / "index.php").read_text() == "<?php echo 101;"
    assert "101" in (site / "current" / "index.php").read_text()
    dump = (out / "database" / "gh_zhujian.sql").read_text()
    assert "-- Dump completed" in dump and "CREATE TABLE `t`" in dump


def test_a_failing_dump_makes_no_snapshot_and_fails_loudly(county):
    inv, db = county["inv"], county["db"]
    before = len(_snaps(inv, "db"))
    # A view over a table that is gone: mariadb-dump stops with an error half-way.
    on_node(db, "mariadb gh_zhujian -e 'CREATE TABLE gone (x INT); CREATE VIEW broken AS "
                "SELECT x FROM gone; DROP TABLE gone'")
    try:
        proc = govhost(inv, "backup", "run", TENANT, "--json")
        res = _json(proc)
        assert proc.returncode == 1 and res["failed"] == 1
        bad = next(r for r in res["results"] if r["kind"] == "db")
        assert not bad["ok"] and "mariadb-dump" in bad["error"] and bad["snapshot"] is None
        assert len(_snaps(inv, "db")) == before
        status = json.loads(on_node(db, "/usr/local/sbin/govhost-backup status"))
        assert "mariadb-dump" in status[TENANT]["db"]["last_error"]
        metrics = node_metrics(inv, db)
        assert f'govhost_tenant_backup_failing{{tenant="{TENANT}",kind="db"}} 1' in metrics
        history = _json(govhost(inv, "backup", "history", TENANT, "--json", check=True))
        latest_db = next(b for b in history["backups"] if b["kind"] == "db")
        assert latest_db["ok"] is False and "mariadb-dump" in latest_db["error"]
    finally:
        on_node(db, "mariadb gh_zhujian -e 'DROP VIEW IF EXISTS broken'")


def test_drill_restores_into_scratch_and_records_the_rto(county):
    inv = county["inv"]
    assert govhost(inv, "backup", "run", TENANT, "--json").returncode == 0
    res = _json(govhost(inv, "backup", "drill", TENANT, "--json"))
    assert res["ok"], res
    files, db = (next(p for p in res["parts"] if p["kind"] == k) for k in ("files", "db"))
    assert files["files_checked"] >= 3 and files["mismatch_count"] == 0
    assert db["restored_rows"] == db["recorded_rows"] and db["tables"] >= 1
    assert res["rto_seconds"] > 0
    checks = _json(govhost(inv, "backup", "history", "--json", check=True))["checks"]
    assert checks[0]["kind"] == "drill" and checks[0]["ok"] and checks[0]["tenant"] == TENANT
    # The scratch database is gone again.
    assert "ghdrill_" not in on_node(county["db"], "mariadb -N -e 'SHOW DATABASES'")


def test_retention_keeps_exactly_what_the_policy_says(county, tmp_path):
    """Synthetic snapshots of SYNTH (keep 3 daily, 2 weekly, 2 monthly), made with restic's
    --time on the control machine, then `govhost backup forget` on the backup node."""
    inv = county["inv"]
    from controlplane.backup import run as backup
    src = tmp_path / "synthetic"
    src.mkdir()
    days = ["2026-08-10", "2026-08-28", "2026-09-15", "2026-09-30", "2026-10-05", "2026-10-12",
            "2026-10-20", "2026-10-24", "2026-10-26", "2026-10-28", "2026-10-29", "2026-10-30"]
    with backup.cluster(County(inv)) as c:
        for i, day in enumerate(days):
            (src / "page.html").write_text(f"version {i}")
            r = backup._control_restic(c, "backup", "--host", "govhost", "--time",
                                       f"{day} 12:00:00", "--tag", f"tenant={SYNTH}",
                                       "--tag", "kind=files", str(src))
            assert r.returncode == 0, r.stderr
    res = _json(govhost(inv, "backup", "forget", "--json", check=True))
    assert res["removed"] >= len(days) - 6
    kept = sorted(s["time"][:10] for s in _snaps(inv, "files", SYNTH) if s["time"] < "2026-11")
    # daily: 10-30, 10-29, 10-28; weekly (ISO weeks): 10-30 (week 44), 10-24 (week 43);
    # monthly: 10-30 (October), 09-30 (September).
    assert kept == ["2026-09-30", "2026-10-24", "2026-10-28", "2026-10-29", "2026-10-30"]


def test_offsite_copy_and_a_corrupted_pack_is_found_by_verify(county):
    inv, tag = county["inv"], county["tag"]
    res = _json(govhost(inv, "backup", "copy", "--json", check=True, timeout=900))
    assert res["copied"] >= 1 and res["snapshots"] >= res["copied"]
    again = _json(govhost(inv, "backup", "copy", "--json", check=True, timeout=900))
    assert again["copied"] == 0                       # only new snapshots travel
    assert _json(govhost(inv, "backup", "verify", "--subset", "100", "--json"))["ok"]
    repo = f"/srv/govhost/backup/t{tag}/repo"
    pack = on_node(NODES["n1"], f"find {repo}/data -type f -size +1k | sort | head -n 1")
    on_node(NODES["n1"], f"cp -p {pack} /root/pack.orig && printf 'garbage' | dd of={pack} "
                         "bs=1 seek=200 conv=notrunc status=none")
    try:
        proc = govhost(inv, "backup", "verify", "--subset", "100", "--json")
        res = _json(proc)
        assert proc.returncode == 1 and not res["ok"] and res["problems"]
    finally:
        on_node(NODES["n1"], f"cp -p /root/pack.orig {pack} && rm /root/pack.orig")
    assert _json(govhost(inv, "backup", "verify", "--subset", "100", "--json"))["ok"]


def test_backup_node_down_fails_every_backup_and_records_no_success(county):
    inv = county["inv"]
    before = {(r["tenant"], r["kind"]): r["finished_at"] for r in _json(govhost(
        inv, "backup", "history", "--json", "--limit", "1000", check=True))["backups"] if r["ok"]}
    lab.stop("n1")
    try:
        proc = govhost(inv, "backup", "run", "--json", timeout=900)
        res = _json(proc)
        assert proc.returncode == 1
        kinds = {r["kind"] for r in res["results"]}
        assert kinds == {"files", "db", "control", "control-offsite"}
        # Only the control machine's own off-site copy (n3) could be made.
        assert [r["kind"] for r in res["results"] if r["ok"]] == ["control-offsite"]
        assert res["ok"] == 1 and res["failed"] == len(res["results"]) - 1 > 10
        assert all(r["snapshot"] is None for r in res["results"] if not r["ok"])
        after = {(r["tenant"], r["kind"]): r["finished_at"] for r in _json(govhost(
            inv, "backup", "history", "--json", "--limit", "1000", check=True))["backups"]
            if r["ok"] and r["kind"] != "control-offsite"}
        assert after == {k: v for k, v in before.items() if k[1] != "control-offsite"}
        status = json.loads(on_node(NODES["n2"], "/usr/local/sbin/govhost-backup status"))
        assert status[TENANT]["db"]["last_error"]
    finally:
        lab.up(3)
        apply_json(inv)


# ------------------------------------------------------------------ the control machine

def test_control_machine_lost_and_restored_from_the_recovery_key_alone(county, tmp_path):
    """The control machine's disk is lost (its inventory, state and the SSH key to the nodes
    gone); on the same machine, bare, `control restore` with the recovery key from the
    sheet and the backup node's address brings the county back: apply changes nothing,
    people log in with the same password and second factor, the audit log is whole, the
    backup repository opens, and a publish made after the snapshot is found on the nodes."""
    import pyotp

    from controlplane.people.store import People
    inv, tag = county["inv"], county["tag"]
    key = county["recovery_key"]                       # from `control init` (the fixture)
    assert len(key) == 69
    again = _json(govhost(inv, "control", "init", "--json", check=True))
    assert not again["made"] and "recovery_key" not in again          # shown once only
    issued = _json(govhost(inv, "user", "add", "wangli", "--display", "王丽", "--unit",
                           TENANT, "--role", "admin", "--json", check=True))
    snap = _json(govhost(inv, "control", "backup", "--json", check=True, timeout=600))
    assert snap["ok"] and [r["repository"] for r in snap["repositories"]] == [
        "backup node n1", "off-site"]
    assert snap["tables"]["people"] >= 1
    audit_at_snapshot = _audit(inv)
    # After the snapshot: a publish (its release then lives on the nodes only).
    _upload(county["home"], {"index.php": "<?php echo 'after the snapshot';"})
    after = _json(govhost(inv, "publish", TENANT, "--json", check=True))["release"]
    state = inv / ".govhost"
    kept = {p.relative_to(state): p.read_bytes() for p in state.rglob("*") if p.is_file()
            and ("tls" in p.parts or p.name in ("secret", "backup_ed25519", "known_hosts"))}
    sheet = _write(tmp_path / "sheet.txt", key)
    typo = _write(tmp_path / "typo.txt", key[:-1] + ("A" if key[-1] != "A" else "B"))
    restore = ["control", "restore", "--from", NODES["n1"], "--path",
               f"/srv/govhost/backup/t{tag}/repo-control/repo", "--json", "--key-file"]

    lost = inv.with_name("inventory.lost")
    inv.rename(lost)                                   # the disk is gone ...
    ssh_key = Path("/var/lib/govhost/lab/id_ed25519")  # ... with the key to the nodes
    ssh_bytes = ssh_key.read_bytes()
    ssh_key.rename(ssh_key.with_name("id_ed25519.lost"))
    try:
        wrong = govhost(tmp_path, *restore, str(typo))
        assert wrong.returncode == 1 and "check does not match" in wrong.stdout
        assert not inv.exists()                        # a refused key touches nothing
        res = _json(govhost(tmp_path, *restore, str(sheet), check=True, timeout=900))
    finally:
        if ssh_key.exists():
            ssh_key.with_name("id_ed25519.lost").unlink(missing_ok=True)
        else:
            ssh_key.with_name("id_ed25519.lost").rename(ssh_key)
    assert ssh_key.read_bytes() == ssh_bytes
    assert res["inventory"] == str(inv.resolve()) and res["data_at_risk_seconds"] > 0
    home = next(n for n, a in NODES.items() if a == county["home"])
    assert res["live_after"][TENANT]["release"] == after
    assert home in res["live_after"][TENANT]["nodes"] and res["disagree"] == {}
    for rel, data in kept.items():                     # secret, keys, CA, certificates
        assert (state / rel).read_bytes() == data, rel
    assert (state / "recovery-key").stat().st_mode & 0o777 == 0o600

    # The county works as before.
    assert apply_json(inv)["result"] == "unchanged"
    c = County(inv)
    people = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    try:
        login = people.login("wangli", issued["password"],
                             pyotp.TOTP(issued["totp_secret"]).now(), "10.77.8.5")
        assert login.ok, login.why
    finally:
        people.st.close()
    audit = _audit(inv)
    assert audit[:len(audit_at_snapshot)] == audit_at_snapshot       # whole, in order
    assert any(a[3] == "control.restore" for a in audit)
    releases = _json(govhost(inv, "releases", TENANT, "--json", check=True))
    assert next(r for r in releases if r["id"] == after)["status"] == "live"
    run = _json(govhost(inv, "backup", "run", TENANT, "--json", timeout=900))
    assert run["failed"] == 0, run                     # the node repository opens
    drilled = _json(govhost(inv, "backup", "drill", TENANT, "--json", check=True,
                            timeout=900))
    assert drilled["ok"], drilled                      # and restores from it work
    drill = _json(govhost(inv, "control", "drill", "--json", check=True, timeout=600))
    assert drill["ok"] and drill["files"] == snap["files"]
    shutil.rmtree(lost, ignore_errors=True)


def _write(path, text):
    path.write_text(text + "\n")
    return path


def _audit(inv) -> list[list]:
    st = County(inv).open_state()
    try:
        return [list(r) for r in st.db.execute(
            "SELECT id, ts, actor, action, target, detail FROM audit ORDER BY id")]
    finally:
        st.close()


def _locked(county, name: str) -> str:
    """A restic holding an exclusive lock on the repository and waiting (a `key passwd`
    reading its new password from a pipe nobody writes): its PID on n1."""
    repo = f"/srv/govhost/backup/t{county['tag']}/repo"
    password = _json(govhost(county["inv"], "backup", "key", "--json", check=True))["password"]
    return on_node(NODES["n1"], f"rm -f /root/{name}; mkfifo /root/{name}; "
                   f"RESTIC_PASSWORD={password} setsid sh -c 'exec restic --no-cache -r {repo} "
                   f"key passwd --new-password-file /root/{name}' > /dev/null 2>&1 "
                   "< /dev/null & pid=$!; sleep 2; echo $pid")


def test_a_killed_runs_stale_lock_is_found_and_cleared_and_blocks_nothing(county):
    """A restic killed while it held the repository's exclusive lock (a prune, a check) left
    a lock that refuses every snapshot after it. `backup locks` shows it stale (its process
    is gone); `backup run` clears it by itself; a lock a live process holds is kept."""
    inv = county["inv"]
    pid = _locked(county, "stale.fifo")
    on_node(NODES["n1"], f"kill -9 {pid}; rm -f /root/stale.fifo")
    locks = _json(govhost(inv, "backup", "locks", "--json", check=True))["locks"]
    assert [(lk["exclusive"], lk["stale"], lk["process_alive"]) for lk in locks] == [
        (True, True, False)], locks
    run = _json(govhost(inv, "backup", "run", TENANT, "--json", timeout=900))
    assert run["failed"] == 0, run
    assert _json(govhost(inv, "backup", "locks", "--json", check=True))["locks"] == []
    pid = _locked(county, "live.fifo")
    try:
        res = _json(govhost(inv, "backup", "locks", "--clear", "--json", check=True))
        assert res["cleared"] == 0
        assert [(lk["exclusive"], lk["stale"]) for lk in res["locks"]] == [(True, False)]
    finally:
        on_node(NODES["n1"], f"kill -9 {pid}; rm -f /root/live.fifo")
    assert _json(govhost(inv, "backup", "locks", "--clear", "--json", check=True))[
        "cleared"] == 1


# Two restics on n2 holding the repository's lock over SFTP (each backing up a stdin that
# never ends); the first is killed, as `run` kills one caught in restic 0.14's lock race after
# it wrote its lock. clear_own_locks is given both pids: it removes only the dead one's lock,
# over SFTP, and the live one's stays; once that one is killed too, its lock is removed only
# when the time given is its process's life.
_LITTER = """
import json, subprocess, sys, time
sys.path.insert(0, "/usr/local/lib/govhost/current")
from govhost_node import backup
r = backup.Restic(backup.load_spec(), local=False)
base = ["restic", "--no-cache", *r.args]
def hold():
    return subprocess.Popen(r.cmd("backup", "--stdin", "--stdin-filename", "held", "--host",
                                  "govhost", "--tag", "govhost-test"), env=r.env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
def held(pids):
    return sorted(lk["pid"] for lk in backup._lock_records(base, r.env, lambda i: True)
                  if lk["pid"] in pids)
t0 = time.time()
dead, live = hold(), hold()
for _ in range(150):
    if held([dead.pid, live.pid]) == sorted([dead.pid, live.pid]):
        break
    time.sleep(0.2)
before = held([dead.pid, live.pid])
dead.kill(); dead.wait()
cleared = r.clear_own_locks([(dead.pid, t0, time.time()), (live.pid, t0, time.time())])
after = held([dead.pid, live.pid])
live.kill(); live.wait()
other_time = r.clear_own_locks([(live.pid, t0 - 600, t0 - 300)])
print(json.dumps({"dead": dead.pid, "live": live.pid, "before": before, "cleared": cleared,
                  "after": after, "other_time": other_time,
                  "end": r.clear_own_locks([(live.pid, t0, time.time())])}))
"""


def test_a_lock_left_by_an_interrupted_restic_is_removed_over_sftp_and_no_other(county):
    """A restic `run` interrupts for restic 0.14's lock race (unit tests:
    tests/unit/govhost_node/test_backup_lock_race.py) may already have written its lock,
    which it then never removes, and which would refuse the nightly `forget --prune`. The
    node removes it over SFTP; a live restic's lock is kept."""
    out = json.loads(on_node(NODES["n2"], f"python3 -I -c '{_LITTER}'", timeout=120))
    assert out["before"] == sorted([out["dead"], out["live"]]), out
    assert out["cleared"] == 1 and out["after"] == [out["live"]], out
    # a lock of that pid written outside the interrupted restic's life is not its own
    assert out["other_time"] == 0 and out["end"] == 1, out
    assert _json(govhost(county["inv"], "backup", "locks", "--json", check=True))["locks"] == []
