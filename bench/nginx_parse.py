#!/usr/bin/env python3
"""nginx reading one node's release of a generated county (default 1,000 units on 3 nodes),
as `nginx -t` at the stage step and nginx's master at every reload read it: what an apply
waits for on each node, twice (docs/performance.md: most of what the apply spends above
its floor). Side by side in one run, each ROUNDS times (median, and the parse's peak memory):

  as rendered      the release an apply sends n1
  without CRS      the same without the WAF's rules file in http{} (ModSecurity loaded, its
                   per-unit switches kept): what the CRS costs
  without servers  no server block at all (the units' and the node's own two): what the
                   servers cost
  bare             neither: what is left of both, so that the CRS's share is split into
                   reading its rules once and copying them into the servers' contexts

and the count of configuration contexts in the release (server, location, if and
limit_except blocks: ModSecurity-nginx merges the whole rules set into each one,
msc_rules_merge in its merge_conf, however the unit's WAF is set).

Runs the real nginx in a network namespace of its own (as tests.helpers.nginx_test), with
the release's log and WAF paths moved into a scratch directory: nothing on this machine
is written outside it. Needs root and nginx with ModSecurity (the node packages).

Usage: bench/nginx_parse.py [UNITS] [NODES] [ROUNDS] [--json]
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.core import inventory, paths  # noqa: E402
from controlplane.sites import waf  # noqa: E402
from controlplane.sites.plan import make_plan  # noqa: E402
from tests.helpers import generated_county  # noqa: E402

# nginx in a namespace that may bind any address (the nodes' addresses are not this
# machine's); the parse's peak memory is read by the Python that waits for it.
_RUN = ("import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(r.stderr)\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(r.returncode)\n")


def write_release(files: dict[str, bytes], dest: Path) -> Path:
    """The release as the node's stage step lays it out, its absolute log and WAF paths
    moved under `dest`; returns the nginx.conf to read."""
    logs = dest / "log"
    main = files.get("waf/main.conf")
    main_path = waf.main_path(main) if main is not None else None
    for rel, data in files.items():
        data = data.replace(f"{paths.NODE_LOGS}/".encode(), f"{logs}/".encode())
        if main_path is not None:
            data = data.replace(main_path.encode(), str(dest / "waf-main.conf").encode())
        p = dest / "release" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    if main is not None:
        (dest / "waf-main.conf").write_bytes(
            main.replace(f"{paths.NODE_LOGS}/".encode(), f"{logs}/".encode()))
    (dest / "release" / "release-id.conf").write_text(
        'location = /release {\n    return 200 "0000000000000000";\n}\n')
    for t in files["tenants.txt"].decode().split():
        (logs / "tenants" / t).mkdir(parents=True, exist_ok=True)
    return dest / "release" / "nginx.conf"


def contexts(conf: Path) -> dict[str, int]:
    """The blocks nginx gives a configuration context of their own, in the release with its
    includes read in (the relative ones, as nginx resolves them from the release)."""
    root = conf.parent

    def text(path: Path) -> str:
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*include\s+([^;\s]+);", line)
            if m and not m.group(1).startswith("/"):
                for p in sorted(glob.glob(str(root / m.group(1)))):
                    out.append(text(Path(p)))
            else:
                out.append(line)
        return "\n".join(out)

    whole = text(conf)
    found = {kind: len(re.findall(rf"^\s*{kind}\b[^;{{]*\{{", whole, re.M))
             for kind in ("server", "location", "if", "limit_except")}
    found["total"] = sum(found.values())
    return found


def parse(conf: Path) -> tuple[float, int, str]:
    """(seconds, peak memory in KiB, what nginx said) of one `nginx -t` of `conf`."""
    t0 = time.perf_counter()
    r = subprocess.run(["unshare", "--net", "sh", "-c",
                        "ip link set lo up && sysctl -qw net.ipv4.ip_nonlocal_bind=1 "
                        "net.ipv6.ip_nonlocal_bind=1 && exec \"$0\" -c \"$1\" nginx -t -q -c \"$2\"",
                        sys.executable, _RUN, str(conf)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"nginx -t refused {conf}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    rss = int(re.search(r"MAXRSS (\d+)", r.stdout).group(1))
    return seconds, rss, r.stdout


def _variants(conf: Path, work: Path) -> dict[str, Path]:
    """The release and its reductions, each in a copy of its own."""
    crs, servers = r"^\s*modsecurity_rules_file .*$", r"^\s*include vhosts/\*\.conf;$"
    out = {"as_rendered": conf}
    for name, drops in (("without_crs", (crs,)), ("without_servers", (servers,)),
                        ("bare", (crs, servers))):
        copy = work / name
        shutil.copytree(conf.parent, copy)
        main = copy / "nginx.conf"
        text = main.read_text(encoding="utf-8")
        for drop in drops:
            text, n = re.subn(drop, "", text, flags=re.M)
            assert n == 1, f"{name}: the release's nginx.conf no longer has {drop!r}"
        main.write_text(text, encoding="utf-8")
        out[name] = main
    return out


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    args = [a for a in argv if not a.startswith("--")]
    units = int(args[0]) if args else 1000
    nodes = int(args[1]) if len(args) > 1 else 3
    rounds = int(args[2]) if len(args) > 2 else 3
    if os.geteuid() != 0 or shutil.which("nginx") is None:
        raise SystemExit("bench/nginx_parse.py needs root and nginx (the node packages)")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-nginx-"))
    try:
        inv = inventory.load(generated_county(work / "inventory", units, nodes), work / "state")
        files = dict(make_plan(inv, frozenset(), {}, {}).releases["n1"].files)
        conf = write_release(files, work / "n1")
        variants = _variants(conf, work)
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
        said = ""
        for _ in range(rounds):                  # taking turns: the machine's pace is shared
            for name, path in variants.items():
                seconds, rss, text = parse(path)
                runs[name].append((seconds, rss))
                said = said or text
        out: dict = {"bench": "nginx_parse", "units": units, "nodes": nodes, "rounds": rounds,
                     "node": "n1", "vhosts": len(list((conf.parent / "vhosts").glob("*.conf"))),
                     "contexts": contexts(conf)}
        m = re.search(r"rules loaded inline/local/remote: (\d+)/(\d+)/(\d+)", said)
        out["waf_rules"] = sum(int(x) for x in m.groups()) if m else None
        for name, values in runs.items():
            out[name] = {"seconds": round(statistics.median(s for s, _ in values), 3),
                         "min": round(min(s for s, _ in values), 3),
                         "peak_rss_mb": round(max(r for _, r in values) / 1024, 1)}
        whole, no_crs = out["as_rendered"], out["without_crs"]
        no_servers, bare = out["without_servers"], out["bare"]
        out["ratio_as_rendered_to_without_crs"] = round(whole["seconds"] / no_crs["seconds"], 2)
        for unit, key in (("seconds", "seconds"), ("mb", "peak_rss_mb")):
            # the CRS read once (no servers), and the rest of its cost: copied into the
            # servers' contexts (what they add with the CRS, less what they add without it)
            out[f"crs_read_{unit}"] = round(no_servers[key] - bare[key], 3)
            out[f"crs_in_servers_{unit}"] = round((whole[key] - no_servers[key])
                                                - (no_crs[key] - bare[key]), 3)
        out["crs_in_servers_kb_per_context"] = round(out["crs_in_servers_mb"] * 1024
                                                     / max(1, out["contexts"]["total"]), 1)
        if not as_json:
            print(f"n1's release at {units} units: {out['vhosts']} server files, "
                  f"{out['contexts']['total']} contexts, {out['waf_rules']} WAF rules")
            for name in variants:
                f = out[name]
                print(f"  {name:16} {f['seconds']:.3f} s (min {f['min']:.3f}), "
                      f"peak {f['peak_rss_mb']} MiB")
            print(f"  the CRS: read once {out['crs_read_seconds']} s, {out['crs_read_mb']} MiB;"
                  f" copied into {out['contexts']['total']} contexts {out['crs_in_servers_seconds']} s,"
                  f" {out['crs_in_servers_mb']} MiB "
                  f"({out['crs_in_servers_kb_per_context']} KiB a context)")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--json" in sys.argv:
        print(json.dumps(result))
