#!/usr/bin/env python3
"""Benchmark content publishing on the lab: a 1,000-file site (default) of a tenant with 2
replicas. Prints, measured in one run: publish time with every file new, with one file
changed, and the disk used by K releases (default 10) of a site that changes 1 % of its files
per release, next to what K full copies would take.

Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/publish_scale.py [FILES] [K] [--json]
"""
from __future__ import annotations

import json
import os
import shutil
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


def main() -> None:
    as_json = "--json" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--json"]
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
        ]:
            print(f"{name:<52}{value:>12}")
        if as_json:
            print(json.dumps({
                "bench": "publish_scale", "files": count, "file_bytes": size,
                "replicas": list(placement), "publish_all_new_seconds": round(full_s, 3),
                "publish_one_changed_seconds": round(incr_s, 3),
                "all_new_x_one_changed": round(full_s / incr_s, 2), "linked": incr["linked"],
                "releases_kept": kept, "releases_bytes": used,
                "full_copies_bytes": kept * one_release,
                "x_full_copies": round(used / max(1, kept * one_release), 3)}))
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
