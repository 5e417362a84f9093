#!/usr/bin/env python3
"""Benchmark backups on the lab (real restic 0.14, repository on n1 over SFTP). Prints,
measured in one run, for the example county and for N generated tenants (default 1,000):
- the first backup and an incremental one after 1 % of the files changed (wall time), and
  how many snapshots the incremental one made (a unit whose files did not change makes none);
- restic's own floor: one `restic cat config` (opening the repository costs a key
  derivation that restic calibrates to about half a second of CPU), times the snapshots;
- the restore of one tenant (to a directory, and to the live site) and a drill;
- the repository's size next to the raw size of what was backed up.

Every tenant's content is written straight into its upload area on its first replica (what
its SFTP upload would leave); the example county's is also published, so its live release is
in the snapshot too. Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/backup_scale.py [N] [FILES_PER_TENANT] [--jobs-also=J] [--json]
(--jobs-also=J: after the nightly run, another 1 % changed and a run with J snapshots at
once per node instead of 2, side by side.)
A snapshot that fails makes the bench fail (exit 1, naming it): a figure over failed jobs
measures less work than it says. With --json the last line is one JSON object.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.backup import run as backup
from controlplane.content import releases as content
from controlplane.core.county import County
from controlplane.lab import machines as lab  # noqa: E402
from tests.helpers import generated_county  # noqa: E402

GEN = r'''
import os, random, sys, json
spec = json.loads(sys.argv[1])
rnd = random.Random(spec["seed"])
raw = 0
for t in spec["tenants"]:
    up = f"/srv/govhost/sites/{t}/upload"
    for i in range(spec["files"]):
        d = os.path.join(up, f"col{i % 4}")
        os.makedirs(d, exist_ok=True)
        # pages: text that repeats across units (same templates); attachments: random
        if i % 5 == 4:
            data = rnd.randbytes(spec["size"] * 4)
        else:
            data = (f"<html><body><h1>{t} {i}</h1>" + "通知公告 政务公开 " * (spec["size"] // 30)
                    + "</body></html>").encode()
        with open(os.path.join(d, f"f{i}.html" if i % 5 != 4 else f"a{i}.pdf"), "wb") as f:
            f.write(data)
        raw += len(data)
    os.system(f"chown -R gh-{t}:gh-{t} {up}")
print(raw)
'''

JOBS_ALSO = 0           # --jobs-also=N: a second night with N snapshots at once per node
CHANGE = r'''
import os, sys, json
spec = json.loads(sys.argv[1])
for path in spec["paths"]:
    with open(path, "ab") as f:
        f.write(b"<!-- changed -->")
print(len(spec["paths"]))
'''


def ssh(address: str, command: str, timeout: float = 3600) -> str:
    out = subprocess.run([*lab.ssh_argv(address), command], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{address}: {command[:80]}: {out.stderr}")
    return out.stdout


def govhost(inv: Path, *args: str, timeout: float = 7200) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv" / "bin" / "govhost"), "--inventory", str(inv),
                           *args], capture_output=True, text=True, timeout=timeout)


def timed(inv: Path, *args: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    p = govhost(inv, *args)
    dt = time.perf_counter() - t0
    try:
        data = json.loads(p.stdout)
    except ValueError:
        raise SystemExit(f"govhost {' '.join(args)}: {p.stdout[-500:]}{p.stderr[-2000:]}")
    return dt, data


# restic 0.14 retries loading a lock that another snapshot removed meanwhile for about 44 s
# (restic#1523; measured 43.6-44.1 s): a snapshot of a unit's twenty small files that took
# that long met the race. An estimate from the time alone, not restic's own word.
LOCK_WAIT_S = (40, 50)


def _lock_waits(run: dict) -> int:
    """Snapshots of a run that took as long as restic's retry of a vanished lock."""
    lo, hi = LOCK_WAIT_S
    return sum(1 for r in run.get("results", []) if lo <= (r.get("seconds") or 0) <= hi)


def _lock_races(run: dict) -> int:
    """Restics the node interrupted and started again because they met the race (restic's
    own word on stderr): each would have waited ~44 s before."""
    return sum(r.get("lock_races") or 0 for r in run.get("results", []))


def addr(n: str) -> str:
    return f"10.77.0.1{n[1:]}"


def use_own_repository(inv: Path, tag: str) -> None:
    """A repository of this run's own (and the backup role on n1 for generated counties)."""
    import yaml
    doc = yaml.safe_load((inv / "cluster.yaml").read_text())
    doc.setdefault("backup", {})["path"] = f"/srv/govhost/backup/bench{tag}/repo"
    doc["backup"].pop("offsite", None)
    (inv / "cluster.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    hosts = yaml.safe_load((inv / "hosts.yaml").read_text())
    if not any("backup" in n.get("roles", []) for n in hosts["nodes"]):
        hosts["nodes"][0]["roles"] = ["web", "backup"]
        (inv / "hosts.yaml").write_text(yaml.safe_dump(hosts))


def county_run(label: str, inv: Path, files: int, size: int, publish: bool) -> dict:
    tag = secrets.token_hex(3)
    use_own_repository(inv, tag)
    # The control machine's own snapshot needs its recovery key, made before the apply that
    # lets the backup account accept it (as scripts/lab.sh and the machine tests do).
    p = govhost(inv, "control", "init")
    if p.returncode != 0:
        raise SystemExit(f"control init failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    t0 = time.perf_counter()
    p = govhost(inv, "apply", "--yes", "--json")
    if p.returncode != 0:
        raise SystemExit(f"apply failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    apply_s = time.perf_counter() - t0
    placement = json.loads(govhost(inv, "plan", "--json").stdout)["placement"]
    static = [t for t in placement if "type: proxy" not in
              (inv / "tenants" / f"{t}.yaml").read_text()]
    by_node: dict[str, list[str]] = {}
    for t in static:
        by_node.setdefault(placement[t][0], []).append(t)
    raw = 0
    for n, ts in by_node.items():
        ssh(addr(n), "rm -rf " + " ".join(f"/srv/govhost/sites/{t}/upload/*" for t in ts))
        spec = json.dumps({"tenants": ts, "files": files, "size": size, "seed": n})
        raw += int(ssh(addr(n), f"python3 -c {shlex_quote(GEN)} {shlex_quote(spec)}"))
    if publish:
        # in this process, as bench/node_lifecycle.py does, not a CLI per unit (the 19
        # `govhost publish` took 88 s of the suite's tiny run; about 1 s each here)
        for t in static:
            try:
                content.publish(County(inv), t)
            except Exception as exc:
                raise SystemExit(f"publish {t} failed: {exc}") from exc
    first_s, first = timed(inv, "backup", "run", "--json")
    total_files = len(static) * files
    changed = change_one_percent(by_node, files, 0)
    incr_s, incr = timed(inv, "backup", "run", "--json")
    more = {"first_lock_waits": _lock_waits(first), "incremental_lock_waits": _lock_waits(incr),
            "first_lock_races": _lock_races(first), "incremental_lock_races": _lock_races(incr)}
    if JOBS_ALSO:
        # the same night again, another 1 % changed, with more snapshots at once per node
        change_one_percent(by_node, files, 50)
        more_s, again = timed(inv, "backup", "run", "--json", "--jobs", str(JOBS_ALSO))
        more |= {"jobs_also": JOBS_ALSO, "incremental_jobs_also_s": more_s,
                 "incremental_jobs_also_lock_waits": _lock_waits(again),
                 "incremental_jobs_also_lock_races": _lock_races(again),
                 "incremental_jobs_also_made": sum(1 for r in again["results"]
                                                   if r["ok"] and not r.get("unchanged")),
                 "incremental_jobs_also_failed": again["failed"]}
    # restic's floor: opening the repository once per snapshot.
    with backup.cluster(County(inv)) as c:
        t1 = time.perf_counter()
        for _ in range(3):
            r = backup._control_restic(c, "cat", "config")
            assert r.returncode == 0, r.stderr
        open_s = (time.perf_counter() - t1) / 3
    one = static[len(static) // 2]
    out = Path(tempfile.mkdtemp(prefix="govhost-bench-restore-"))
    shutil.rmtree(out)
    restore_dir_s, _ = timed(inv, "backup", "restore", one, "--to", str(out), "--json")
    shutil.rmtree(out, ignore_errors=True)
    restore_live_s, live = timed(inv, "backup", "restore", one, "--yes", "--json",
                                 "--no-safety-backup")
    drill_s, drill = timed(inv, "backup", "drill", one, "--json")
    repo_bytes = int(ssh("10.77.0.11", f"du -sb /srv/govhost/backup/bench{tag}/repo").split()[0])
    snaps = len(first["results"])
    # snapshots the incremental run made (a unit's unchanged files make none)
    made = sum(1 for r in incr["results"] if r["ok"] and not r.get("unchanged"))
    failures = [f"{r['tenant']} {r['kind']} on {r['node']}: {r.get('error')}"
                for run in (first, incr) for r in run["results"] if not r["ok"]]
    res = {
        "label": label, "tenants": len(static), "files": total_files, "raw_bytes": raw,
        "apply_s": apply_s, "first_s": first_s, "first_failed": first["failed"],
        "incremental_s": incr_s, "incremental_failed": incr["failed"], "changed_files": changed,
        "snapshots_per_run": snaps, "open_repo_s": open_s, "incremental_made": made,
        "restore_dir_s": restore_dir_s, "restore_live_s": restore_live_s,
        "drill_s": drill_s, "drill_ok": drill["ok"], "drill_rto_s": drill["rto_seconds"],
        "repo_bytes": repo_bytes, "restored_tenant": one,
        "added_first": sum(r.get("bytes_added") or 0 for r in first["results"]),
        "added_incremental": sum(r.get("bytes_added") or 0 for r in incr["results"]),
        "failures": failures, **more,
    }
    ssh("10.77.0.11", f"rm -rf /srv/govhost/backup/bench{tag}")
    return res


def change_one_percent(by_node: dict[str, list[str]], files: int, offset: int) -> int:
    """1 % of the files change (appended to): every hundredth file of the county, starting
    at `offset`. How many changed."""
    changed = 0
    k = 0
    for n, ts in by_node.items():
        paths = []
        for t in ts:
            for j in range(files):
                if k % 100 == offset:
                    name = f"f{j}.html" if j % 5 != 4 else f"a{j}.pdf"
                    paths.append(f"/srv/govhost/sites/{t}/upload/col{j % 4}/{name}")
                k += 1
        spec = json.dumps({"paths": paths})
        changed += int(ssh(addr(n), f"python3 -c {shlex_quote(CHANGE)} {shlex_quote(spec)}"))
    return changed


def shlex_quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


def report(r: dict) -> None:
    mib = 1024 * 1024
    print(f"\n== {r['label']}: {r['tenants']} tenants, {r['files']} files, "
          f"{r['raw_bytes'] / mib:.1f} MiB raw ==")
    print(f"apply (accounts, config)          {r['apply_s']:8.1f} s")
    print(f"first backup ({r['snapshots_per_run']} snapshots)      {r['first_s']:8.1f} s   "
          f"failed {r['first_failed']}, {r['added_first'] / mib:.1f} MiB added")
    print(f"incremental, {r['changed_files']} files changed  {r['incremental_s']:8.1f} s   "
          f"failed {r['incremental_failed']}, {r['added_incremental'] / mib:.2f} MiB added; "
          f"x first: {r['incremental_s'] / r['first_s']:.2f}")
    floor = r["open_repo_s"] * r["snapshots_per_run"]
    print(f"snapshots that waited ~44 s on restic's lock retry: first {r['first_lock_waits']}, "
          f"incremental {r['incremental_lock_waits']}"
          + (f", {r['jobs_also']} at once {r['incremental_jobs_also_lock_waits']}"
             if r.get("jobs_also") else ""))
    print(f"restics interrupted and started again at the race: first {r['first_lock_races']}, "
          f"incremental {r['incremental_lock_races']}"
          + (f", {r['jobs_also']} at once {r['incremental_jobs_also_lock_races']}"
             if r.get("jobs_also") else ""))
    if r.get("jobs_also"):
        print(f"the same, {r['jobs_also']} at once per node   {r['incremental_jobs_also_s']:8.1f} s"
              f"   failed {r['incremental_jobs_also_failed']}, "
              f"{r['incremental_jobs_also_made']} snapshots made (2 at once: "
              f"{r['incremental_s']:.1f} s)")
    print(f"restic repository opens alone     {floor:8.1f} s   ({r['open_repo_s']:.2f} s each,"
          f" serial, one per unit; incremental / floor {r['incremental_s'] / floor:.2f})")
    print(f"incremental snapshots made        {r['incremental_made']:8d}     of "
          f"{r['snapshots_per_run']} (a unit's unchanged files make none); "
          f"opens for those alone {r['open_repo_s'] * r['incremental_made']:.1f} s")
    print(f"restore {r['restored_tenant']} to a directory   {r['restore_dir_s']:8.1f} s")
    print(f"restore {r['restored_tenant']} to the live site {r['restore_live_s']:8.1f} s")
    print(f"drill {r['restored_tenant']}                    {r['drill_s']:8.1f} s   "
          f"ok {r['drill_ok']}, RTO {r['drill_rto_s']:.1f} s")
    print(f"repository / raw                  {r['repo_bytes'] / mib:8.1f} MiB / "
          f"{r['raw_bytes'] / mib:.1f} MiB = {r['repo_bytes'] / max(r['raw_bytes'], 1):.2f}")
    for f in r["failures"]:
        print(f"FAILED: {f}")


def figures(r: dict) -> dict:
    """The figures with their floor and ratio: restic's own cost of opening the repository
    once per snapshot, serially (what one process per snapshot cannot go below)."""
    floor = r["open_repo_s"] * r["snapshots_per_run"]
    return {"first_s": r["first_s"], "incremental_s": r["incremental_s"],
            **{k: r[k] for k in ("jobs_also", "incremental_jobs_also_s", "first_lock_waits",
                                 "incremental_lock_waits", "incremental_jobs_also_lock_waits",
                                 "first_lock_races", "incremental_lock_races",
                                 "incremental_jobs_also_lock_races")
               if k in r},
            "incremental_target_s": 60 if r["snapshots_per_run"] >= 1000 else None,
            "incremental_snapshots_made": r["incremental_made"],
            "incremental_floor_s": floor, "incremental_ratio": r["incremental_s"] / floor,
            "restore_dir_s": r["restore_dir_s"], "drill_rto_s": r["drill_rto_s"],
            "repo_over_raw": r["repo_bytes"] / max(r["raw_bytes"], 1)}


def main() -> None:
    global JOBS_ALSO
    as_json = "--json" in sys.argv
    also = [a for a in sys.argv[1:] if a.startswith("--jobs-also=")]
    JOBS_ALSO = int(also[0].split("=", 1)[1]) if also else 0
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 1000
    files = int(args[1]) if len(args) > 1 else 20
    if os.geteuid() != 0:
        sys.exit("needs root (the lab)")
    if not all(x.ssh_open for x in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-backup-"))
    results = []
    example = work / "example"
    shutil.copytree(REPO / "inventory", example, ignore=shutil.ignore_patterns(".govhost"))
    results.append(county_run("example county", example, files, 4096, publish=True))
    report(results[-1])
    if n:
        gen = generated_county(work / "generated", n)
        results.append(county_run(f"{n} generated tenants", gen, files, 4096, publish=False))
        report(results[-1])
    # (No apply of the repository's own inventory afterwards, as there was: every test and the
    # main job apply their own county, and that apply made the checkout a state directory.)
    shutil.rmtree(work, ignore_errors=True)
    failed = [f"{r['label']}: {f}" for r in results for f in r["failures"]]
    summary = {"bench": "backup_scale", "tenants": n, "files_per_tenant": files,
               "ok": not failed, "failures": failed,
               "figures": {r["label"]: figures(r) for r in results}, "runs": results}
    print("\n" + json.dumps(summary) if as_json else "")
    if failed:
        sys.exit(f"{len(failed)} snapshot(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
