"""The control machine lost and brought back: time from a bare machine to a working county,
and what is at risk between two control snapshots.

    python bench/control_restore.py [--no-setup] [--json]

On the lab (overlay nodes are brought up if none run): the example county in a scratch
inventory, applied, with a recovery key and one control snapshot. Then its inventory and state
are moved away (the lost disk) and, measured one after the other:

1. setup: the README's install (`bash scripts/setup.sh`; on a machine that has run it before
   its packages are cached, so this is a lower bound of a truly fresh machine's);
2. restore: `govhost control restore` from the backup node, with the recovery key;
3. floor: plain `restic restore` of the same snapshot from the same repository;
4. apply: the first `govhost apply` after the restore (expected: nothing changes).

Printed: each time, restore/floor, and the total against the 15-minute target; the data at
risk is the schedule's interval (the newest snapshot's age at the moment of loss is at most
that). With --json one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import GOVHOST  # noqa: E402

from controlplane.backup import control, recovery  # noqa: E402
from controlplane.core.county import County  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402

TARGET_S = 15 * 60


def govhost(inv: Path, *args: str) -> dict:
    r = subprocess.run([GOVHOST, "--inventory", str(inv), *args,
                        "--json"], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"govhost {' '.join(args)} failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return json.loads(r.stdout)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def interval_seconds(schedule: str) -> int:
    return {"hourly": 3600, "weekly": 7 * 86400}.get(schedule, 86400)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-setup", action="store_true", help="Leave out the install's time.")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not [n for n in lab.nodes() if n.running]:
        lab.up(3, "overlay")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-control-"))
    inv = work / "inventory"
    shutil.copytree(ROOT / "inventory", inv, ignore=shutil.ignore_patterns(".govhost"))
    tag = os.urandom(4).hex()
    text = (inv / "cluster.yaml").read_text()
    text = text.replace("offsite:\n", f"path: /srv/govhost/backup/b{tag}/repo\n  offsite:\n")
    text = text.replace("path: /srv/govhost/offsite/repo", f"path: /srv/govhost/offsite/b{tag}")
    (inv / "cluster.yaml").write_text(text)
    # the recovery key first, so that one apply lets the backup account take its snapshots
    key = govhost(inv, "control", "init")["recovery_key"]
    govhost(inv, "apply", "--yes")
    snap, backup_s = timed(lambda: govhost(inv, "control", "backup"))
    county = County(inv)
    repo = control.repositories(county.inv)[0]
    schedule = county.inv.cluster.backup.schedule

    inv.rename(work / "lost")                       # the disk is gone
    setup_s = 0.0
    if not a.no_setup:
        _, setup_s = timed(lambda: subprocess.run(["bash", str(ROOT / "scripts/setup.sh")],
                                                  check=True, capture_output=True))
    sheet = work / "sheet"
    sheet.write_text(key + "\n")
    res, restore_s = timed(lambda: govhost(work, "control", "restore", "--from", repo.address,
                                           "--path", repo.path, "--key-file", str(sheet)))
    raw = recovery.parse_key(key)
    floor_dir = work / "floor"
    with control._access(raw, County(inv).known_hosts) as (keyfile, known):
        r, floor_s = timed(lambda: control._restic(repo, raw, keyfile, known, "restore",
                                                   "latest", "--target", str(floor_dir)))
    if r.returncode != 0:
        raise SystemExit(f"restic restore failed: {r.stderr[-500:]}")
    applied, apply_s = timed(lambda: govhost(inv, "apply", "--yes"))
    total = setup_s + restore_s + apply_s
    summary = {
        "files": snap["files"], "backup_s": round(backup_s, 2),
        "setup_s": round(setup_s, 2), "restore_s": round(restore_s, 2),
        "restic_restore_floor_s": round(floor_s, 2),
        "restore_over_floor": round(restore_s / max(floor_s, 0.001), 1),
        "apply_after_s": round(apply_s, 2), "apply_after_result": applied["result"],
        "bare_to_working_s": round(total, 1), "target_s": TARGET_S,
        "within_target": total <= TARGET_S,
        "data_at_risk_s": interval_seconds(schedule), "schedule": schedule,
        "live_after_found": len(res["live_after"]),
    }
    print(f"control snapshot: {snap['files']} files, {backup_s:.1f} s to both repositories")
    print(f"bare machine → working county: setup {setup_s:.1f} s + restore {restore_s:.1f} s "
          f"(restic restore alone {floor_s:.1f} s, {summary['restore_over_floor']}x) + first "
          f"apply {apply_s:.1f} s ({applied['result']}) = {total:.1f} s "
          f"(target {TARGET_S} s)")
    print(f"data at risk: up to {summary['data_at_risk_s'] / 3600:.0f} h of changes "
          f"(control snapshots {schedule})")
    for n in ("n1", "n3"):
        lab_addr = {"n1": "10.77.0.11", "n3": "10.77.0.13"}[n]
        subprocess.run([*lab.ssh_argv(lab_addr), f"rm -rf /srv/govhost/backup/b{tag} "
                        f"/srv/govhost/backup/b{tag}-control /srv/govhost/offsite/b{tag}*"],
                       capture_output=True, timeout=60)
    shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps({"bench": "control_restore", **summary}))


if __name__ == "__main__":
    main()
