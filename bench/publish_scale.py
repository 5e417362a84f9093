#!/usr/bin/env python3
"""Benchmark content publishing on the lab: a 1,000-file site (default) of a tenant with 2
replicas. Prints, measured in one run: publish time with every file new, with one file
changed, and the disk used by K releases (default 10) of a site that changes 1 % of its files
per release, next to what K full copies would take.

Then the `govhost publish` command whole, one page changed each time, `--commands N` times
each way (default 3), alternating: as shipped, and with the search segmenter's early load
switched off in that process (`index.prepare`, which loads jieba's dictionary beside the
nodes' work instead of after it; each command is a new process, so each pays the load).

Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/publish_scale.py [FILES] [K] [--commands N] [--json]
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import applied  # noqa: E402

from controlplane.content import releases as content
from controlplane.core import inventory  # noqa: E402
from controlplane.core.county import County  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from tests.helpers import lab_ssh as ssh  # noqa: E402
from tests.helpers import upload

TENANT = "jiaoyu"

# `govhost ARGS` in this Python, as shipped or with the segmenter's early load switched off
COMMAND = ("import sys; sys.argv = ['govhost'] + sys.argv[1:]\n{patch}"
           "import cli; cli.main()")
LATE = ("from controlplane.search import index\n"
        "index.prepare = lambda: None\n")


def _commands(inv_dir: Path, address: str, rounds: int) -> dict:
    """Median seconds of the publish command with the segmenter loaded early and late."""
    times: dict[str, list[float]] = {"early": [], "late": []}
    for i in range(rounds):
        for how in ("early", "late"):
            upload(address, TENANT, {"index.html": f"<html><title>教育局 {i} {how}</title>"
                                     f"<p>通知 公开 第{i}号</p></html>".encode()})
            code = COMMAND.format(patch=LATE if how == "late" else "")
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code, "--inventory", str(inv_dir),
                                "publish", TENANT, "--json"], cwd=REPO, capture_output=True,
                               text=True)
            times[how].append(time.perf_counter() - t)
            if r.returncode != 0 or "page(s) indexed" not in r.stderr:
                sys.exit(f"publish ({how}) failed or did not index:\n{r.stderr[-2000:]}")
    early, late = (statistics.median(times[h]) for h in ("early", "late"))
    return {"rounds": rounds, "segmenter_early_seconds": round(early, 3),
            "segmenter_late_seconds": round(late, 3), "late_x_early": round(late / early, 2)}


def main() -> None:
    as_json = "--json" in sys.argv
    argv = sys.argv[1:]
    rounds = 3
    if "--commands" in argv:
        i = argv.index("--commands")
        rounds = int(argv[i + 1])
        del argv[i:i + 2]
    args = [a for a in argv if a != "--json"]
    count = int(args[0]) if args else 1000
    k = int(args[1]) if len(args) > 1 else 10
    if not all(n.ssh_open for n in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-publish-"))
    try:
        inv_dir = work / "inventory"
        shutil.copytree(REPO / "inventory", inv_dir, ignore=shutil.ignore_patterns(".govhost"))
        cl = inv_dir / "cluster.yaml"
        doc = yaml.safe_load(cl.read_text())
        doc.setdefault("defaults", {})["keep_content_releases"] = k   # keep all K
        cl.write_text(yaml.safe_dump(doc, allow_unicode=True))
        with (inv_dir / "tenants" / f"{TENANT}.yaml").open("a") as f:
            f.write("quota_mb: 10000\n")
        applied(inv_dir)
        inv = inventory.load(inv_dir)
        placement = json.loads(subprocess.run(
            [sys.executable, "-m", "cli", "--inventory", str(inv_dir), "plan", "--json"],
            cwd=REPO, capture_output=True, check=True).stdout)["placement"][TENANT]
        address = next(n.address for n in inv.hosts.nodes if n.name == placement[0])
        size = 8 * 1024   # 8 KiB pages: 1,000 files ≈ 8 MiB
        site = {f"p/{i // 100:02d}/page{i:04d}.html": os.urandom(size // 2).hex().encode()
                for i in range(count)}
        upload(address, TENANT, site, replace=True)
        t = time.perf_counter()
        content.publish(County(inv_dir), TENANT)
        full_s = time.perf_counter() - t
        one = next(iter(site))
        upload(address, TENANT, {one: b"changed " + os.urandom(64).hex().encode()})
        t = time.perf_counter()
        incr = content.publish(County(inv_dir), TENANT)
        incr_s = time.perf_counter() - t
        rdir = f"/srv/govhost/sites/{TENANT}/releases"
        one_release = int(ssh(address, f"du -sb {rdir}/{incr['release']} | cut -f1"))
        names = list(site)
        per = max(1, count // 100)
        for r in range(k - 2):
            upload(address, TENANT, {n: os.urandom(size // 2).hex().encode()
                                     for n in names[r * per:(r + 1) * per]})
            content.publish(County(inv_dir), TENANT)
        kept = int(ssh(address, f"ls {rdir} | wc -l"))
        used = int(ssh(address, f"du -sb {rdir} | cut -f1"))
        commands = _commands(inv_dir, address, rounds) if rounds else {}
        print(f"site: {count} files of {size} B, 2 replicas ({', '.join(placement)})")
        print(f"{'measure':<52}{'value':>12}")
        for name, value in [
            ("publish, every file new (s)", f"{full_s:.2f}"),
            ("publish, one file changed (s)", f"{incr_s:.2f}"),
            ("ratio new / one changed", f"{full_s / incr_s:.1f}x"),
            ("files hard-linked in the one-change publish", str(incr["linked"])),
            (f"releases kept after {k} publishes (keep limit)", str(kept)),
            ("disk used by those releases (MiB)", f"{used / 2**20:.1f}"),
            ("disk one full copy would take (MiB)", f"{one_release / 2**20:.1f}"),
            (f"disk {kept} full copies would take (MiB)", f"{kept * one_release / 2**20:.1f}"),
        ] + ([
            ("publish command, segmenter loaded early (s)",
             f"{commands['segmenter_early_seconds']:.2f}"),
            ("publish command, segmenter loaded after (s)",
             f"{commands['segmenter_late_seconds']:.2f}"),
            ("ratio after / early", f"{commands['late_x_early']:.2f}x"),
        ] if commands else []):
            print(f"{name:<52}{value:>12}")
        if as_json:
            print(json.dumps({
                "bench": "publish_scale", "files": count, "file_bytes": size,
                "replicas": list(placement), "publish_all_new_seconds": round(full_s, 3),
                "publish_one_changed_seconds": round(incr_s, 3),
                "all_new_x_one_changed": round(full_s / incr_s, 2), "linked": incr["linked"],
                "releases_kept": kept, "releases_bytes": used,
                "full_copies_bytes": kept * one_release,
                "x_full_copies": round(used / max(1, kept * one_release), 3),
                "publish_command": commands}))
    finally:
        # leave the lab's copy of the example tenant as it was: no content, empty upload area
        for n in lab.nodes():
            if n.ssh_open:
                ssh(n.address, f"rm -rf /srv/govhost/sites/{TENANT}/current "
                               f"/srv/govhost/sites/{TENANT}/releases/*; find "
                               f"/srv/govhost/sites/{TENANT}/upload -mindepth 1 -delete "
                               "2>/dev/null; true")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
