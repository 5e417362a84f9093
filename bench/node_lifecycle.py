"""Real servers, measured: bare machines to a serving county, and a node replacement.

    python bench/node_lifecycle.py [UNITS] [FILES] [--json]   (default 300 units x 200 files)

1. Bare to serving: three freshly installed machines (bare image, empty disks, the lab's
   shared apt cache as it is), then `govhost apply` of the example county; seconds.
2. Replacement: a generated county of UNITS units, each published with FILES files, n1
   the backup node, and a backup run (what a county has every night); n3's disk is wiped
   and `govhost node replace n3` brings it back: bootstrap, content from peers, the upload
   areas of the units whose first replica n3 was (unpublished work: only the backup has
   it), search. Seconds (and each step's, `phases`) and bytes moved, side by side with the
   floor: plain `rsync -a` over SSH of the same node's content tree (releases and upload
   areas), from a copy on the control machine, onto the wiped node.
Takes over the lab (brings it down first). Network traffic stays on 10.77.0.1N.
--json: the figures, the replacement with its floor and ratio, as one JSON object on the
last line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml

from controlplane.backup import control
from controlplane.backup import run as backup
from controlplane.content import releases as content
from controlplane.core.county import County
from controlplane.lab import machines as lab
from controlplane.nodes import lifecycle as nodes  # noqa: E402
from controlplane.sites import apply as apply_mod
from tests.helpers import generated_county, lab_ssh, upload  # noqa: E402


def fresh_lab() -> None:
    lab.down()
    lab.up(3, "machine", "bare")


def bare_to_serving() -> float:
    fresh_lab()
    with tempfile.TemporaryDirectory() as tmp:
        inv = Path(tmp) / "inventory"
        shutil.copytree(ROOT / "inventory", inv, ignore=shutil.ignore_patterns(".govhost"))
        t0 = time.monotonic()
        res = apply_mod.apply(County(inv))
        seconds = time.monotonic() - t0
        assert res.ok, res.to_json()
    return seconds


def replacement(units: int, files: int) -> dict:
    fresh_lab()
    tmp = Path(tempfile.mkdtemp())
    inv = generated_county(tmp / "inventory", units)
    hosts = yaml.safe_load((inv / "hosts.yaml").read_text())
    hosts["nodes"][0]["roles"] = ["web", "backup"]
    (inv / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    # the control machine's recovery key before the apply, as scripts/lab.sh makes it
    county = County(inv)
    control.init(county.inv, county.state_dir)
    res = apply_mod.apply(County(inv))
    assert res.ok, res.to_json()
    st = County(inv).open_state()
    placement = st.placements()
    st.close()
    t0 = time.monotonic()
    for i in range(units):
        name = f"unit{i:04d}"
        first = lab.node_address(int(placement[name][0][1:]))
        upload(first, name, {f"p/{j:03d}.html": (f"<p>{name} {j} " + "x" * 2000 + "</p>")
                             .encode() for j in range(files)}, replace=True)
        content.publish(County(inv), name)
    publish_s = time.monotonic() - t0
    t0 = time.monotonic()
    night = backup.run(County(inv))
    backup_s = time.monotonic() - t0
    assert not night["failed"], night
    held = [t for t, ns in placement.items() if "n3" in ns]
    # the floor's source: n3's content tree as a peer would send it
    floor_src = tmp / "sites"
    floor_src.mkdir()
    subprocess.run(f"{' '.join(lab.ssh_argv('10.77.0.13'))} 'tar -C /srv/govhost/sites -c .' "
                   f"| tar -C {floor_src} -x", shell=True, check=True)
    tree_bytes = int(subprocess.run(["du", "-sb", str(floor_src)], capture_output=True,
                                    text=True).stdout.split()[0])

    lab.wipe("n3")
    t0 = time.monotonic()
    out = nodes.replace(County(inv), "n3")
    replace_s = time.monotonic() - t0
    assert out["result"] == "replaced", {k: out[k] for k in ("restored", "result", "phases")}
    moved = sum(m["bytes"] for m in out["apply"]["content"] if m["ok"])
    uploads = sum(1 for r in out["restored"] if r.get("upload", {}).get("restored"))

    lab.wipe("n3")
    lab_ssh("10.77.0.13", "apt-get install -y -q rsync >/dev/null 2>&1 || "
            "(apt-get update -q >/dev/null && apt-get install -y -q rsync >/dev/null)")
    lab_ssh("10.77.0.13", "mkdir -p /srv/govhost/sites")
    ssh = " ".join(lab.ssh_argv("10.77.0.13")[:-1])
    t0 = time.monotonic()
    subprocess.run(["rsync", "-a", "-H", "-e", ssh, f"{floor_src}/",
                    "root@10.77.0.13:/srv/govhost/sites/"], check=True)
    rsync_s = time.monotonic() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    return {"units": units, "files": files, "held_by_n3": len(held), "publish_s": publish_s,
            "backup_s": backup_s, "replace_s": replace_s, "moved_bytes": moved,
            "tree_bytes": tree_bytes, "rsync_s": rsync_s, "uploads_restored": uploads,
            "phases": out["phases"] | {f"apply_{k}": v for k, v in
                                       out["apply"].get("phases", {}).items()},
            "side_by_side": out.get("side_by_side", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("units", nargs="?", type=int, default=300)
    ap.add_argument("files", nargs="?", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="the figures as JSON, last line")
    args = ap.parse_args()
    units, files = args.units, args.files
    if not shutil.which("rsync"):
        sys.exit("rsync is not installed on this machine (apt-get install rsync)")
    b = bare_to_serving()
    print(f"bare -> serving the example county (bootstrap + first apply, 3 nodes): {b:.1f} s")
    r = replacement(units, files)
    print(f"county: {r['units']} units x {r['files']} files, published in "
          f"{r['publish_s']:.1f} s; n3 holds {r['held_by_n3']} units")
    print(f"backup run (the night before the disk died): {r['backup_s']:.1f} s")
    print(f"node replace n3 (bootstrap, content from peers, config, {r['uploads_restored']} "
          f"upload areas from the backup): {r['replace_s']:.1f} s, "
          f"{r['moved_bytes'] / 2**20:.1f} MiB streamed")
    print("  where the time went: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items()
                                                if v >= 0.05))
    print("  of which side by side: " + ", ".join(f"{k} {v:.1f} s"
                                                  for k, v in r["side_by_side"].items()))
    print(f"floor: rsync -a of n3's content tree ({r['tree_bytes'] / 2**20:.1f} MiB): "
          f"{r['rsync_s']:.1f} s")
    print(f"ratio replace/rsync: {r['replace_s'] / r['rsync_s']:.1f}x "
          "(replace also bootstraps the bare machine and applies its config)")
    lab.down()
    if args.json:
        print(json.dumps({
            "bench": "node_lifecycle", "bare_to_serving_seconds": round(b, 1),
            **{k: r[k] for k in ("units", "files", "held_by_n3", "moved_bytes", "tree_bytes",
                                 "uploads_restored", "phases", "side_by_side")},
            "publish_seconds": round(r["publish_s"], 1),
            "backup_seconds": round(r["backup_s"], 1),
            "replace": {"seconds": round(r["replace_s"], 1),
                        "floor": "rsync -a of n3's content tree",
                        "floor_seconds": round(r["rsync_s"], 1),
                        "x_floor": round(r["replace_s"] / r["rsync_s"], 2),
                        "target_x_floor": 2.0}}))


if __name__ == "__main__":
    main()
