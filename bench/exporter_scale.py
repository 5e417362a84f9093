#!/usr/bin/env python3
"""Benchmark the exporter at county scale on the lab: N generated tenants (default 1,000) on
the 3 lab nodes. Prints, measured in one run: the wall time and CPU time of one probe round
(every tenant's homepage through every node), the scrape time of the exporter and of one
node agent, and the number of series each returns.

And a node's CPU, from every process of the node (short-lived ones too, in their parents'): at
rest for IDLE seconds (the node's own services, nothing asked of it), over the probe
rounds and over the agent scrapes, and from those a day of it at the exporter's 30 s (or
back to back, where a round takes longer here) and Prometheus's 15 s intervals, and with
probe rounds every 300 s (what the county's own monitoring costs a node; the citizens'
traffic is measured by the other benches).

The node's CPU is the node's own on machine nodes (`--kind machine`, a PID namespace of
their own); overlay nodes share this machine's processes, and there it is the machine's.

Needs root and the lab: `govhost lab up --nodes 3` first.
Usage: bench/exporter_scale.py [N] [--idle S] [--json] (--json: the figures as one JSON object on the
last line).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import applied  # noqa: E402

from controlplane.core.county import County  # noqa: E402
from controlplane.core.paths import AGENT_PORT  # noqa: E402
from controlplane.lab import machines as lab  # noqa: E402
from controlplane.monitoring.exporter import (  # noqa: E402
    GovhostCollector,
    Prober,
    round_exposition,
    scrape,
)
from controlplane.tls import metrics  # noqa: E402
from tests.helpers import generated_county, lab_ssh  # noqa: E402


def node_resources(address: str) -> dict:
    """What the units cost a node at rest: memory of nginx (master and workers), of
    govhost's own programs (each process's proportional share, so that the pages the
    workers share with their master count once) and of the whole node, the open files of
    nginx's master, and the CPU seconds nginx and govhost's programs have used so far."""
    script = (
        "tick=$(getconf CLK_TCK); "
        "for name in nginx govhost; do "
        "  if [ $name = nginx ]; then ps=$(pgrep -x nginx); "
        "  else ps=$(pgrep -f '^/usr/bin/python3 -I /usr/local/sbin/govhost-'); fi; "
        "  rss=0; cpu=0; for p in $ps; do "
        "    r=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null); "
        "    rss=$((rss + ${r:-0})); "
        "    c=$(cut -d' ' -f14,15 /proc/$p/stat 2>/dev/null | tr ' ' +); cpu=$((cpu + ${c:-0}));"
        "  done; echo $name $rss $cpu $tick; done; "
        "m=$(cat /run/govhost/govhost-nginx.pid 2>/dev/null || pgrep -o -x nginx); "
        "echo fds $(ls /proc/$m/fd | wc -l); "
        "awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print \"used\", t - a}' /proc/meminfo")
    out = {}
    for line in lab_ssh(address, script).splitlines():
        parts = line.split()
        if parts[0] in ("nginx", "govhost"):
            who = "govhost_programs" if parts[0] == "govhost" else "nginx"
            out[f"{who}_pss_mib"] = round(int(parts[1]) / 1024)
            out[f"{who}_cpu_seconds"] = round(int(parts[2]) / int(parts[3]), 1)
        elif parts[0] == "fds":
            out["nginx_master_open_files"] = int(parts[1])
        elif parts[0] == "used":
            out["node_memory_used_mib"] = round(int(parts[1]) / 1024)
    return out


# Every process of the node, from its own /proc: each live process's CPU and what it
# collected from the children it reaped (cutime, cstime), so that a process that ended
# counts once, in its parent's. (The lab's nodes share the host's cgroup v1 tree: no node
# has a control group of its own to read.)
_NODE_CPU = ("import glob, os\n"
             "t = 0\n"
             "for f in glob.glob('/proc/[0-9]*/stat'):\n"
             "    try:\n"
             "        s = open(f).read()\n"
             "    except OSError:\n"
             "        continue\n"
             "    t += sum(int(v) for v in s[s.rindex(')') + 2:].split()[11:15])\n"
             "print(t / os.sysconf('SC_CLK_TCK'))\n")


def node_cpu(address: str) -> float:
    """CPU seconds every process of the node has used since it booted, the ones that ended
    too (this reading's own few hundredths of a second included)."""
    return float(lab_ssh(address, f"python3 -c \"{_NODE_CPU}\"").strip())


DAY = 86400


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("count", nargs="?", type=int, default=1000, help="generated units")
    ap.add_argument("--json", action="store_true", help="the figures as JSON, last line")
    ap.add_argument("--idle", type=int, default=30, help="seconds of a node at rest, measured")
    args = ap.parse_args()
    count = args.count
    if not all(n.ssh_open for n in lab.up(3)[:3]):
        sys.exit("lab nodes are not answering")
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-exporter-"))
    try:
        inv_dir = generated_county(work / "inventory", count)
        t0 = time.perf_counter()
        applied(inv_dir)
        apply_s = time.perf_counter() - t0
        county = County(inv_dir)
        prober = Prober(county, 30, workers=32)
        # Rounds not spread over the interval (as the running exporter spreads them): the
        # wall time is then what a round costs, not half the interval.
        prober.probe_once(spread=False)          # warm: inventory loaded, desired rendered
        time.sleep(min(5, args.idle))           # what the warm round started, done
        cpu0, t0 = node_cpu("10.77.0.11"), time.perf_counter()
        time.sleep(args.idle)
        cpu1, t1 = node_cpu("10.77.0.11"), time.perf_counter()
        rounds = [prober.probe_once(spread=False) for _ in range(3)]
        cpu2 = node_cpu("10.77.0.11")
        # n1's part of a round (the probes sent through it, and those another node passed
        # to it as a unit's replica), less what it would have spent at rest meanwhile
        idle_share = (cpu1 - cpu0) / (t1 - t0)
        wall = statistics.median(r.seconds for r in rounds)
        node_round_cpu = max(0.0, (cpu2 - cpu1) - idle_share * sum(r.seconds for r in rounds)) \
            / len(rounds)
        collector = GovhostCollector(county, prober)
        scrapes, text = [], ""
        for _ in range(5):
            t = time.perf_counter()
            text = scrape(collector).decode()
            scrapes.append(time.perf_counter() - t)
        # The round's own series, formatted once per round by the prober since stop 56; a
        # scrape formatted them every time before (scrape + this = the scrape before).
        formats = []
        for _ in range(5):
            t = time.perf_counter()
            round_exposition(rounds[-1])
            formats.append(time.perf_counter() - t)
        # The agent as Prometheus reads it: TLS against the county's metrics CA, basic auth.
        access = metrics.ensure(county.state_dir, county.inv.secret, county.inv.hosts,
                                county.inv.cluster.name)
        agent_times, agent_text = [], ""
        cpu3 = node_cpu("10.77.0.11")
        for _ in range(5):
            t = time.perf_counter()
            agent_text = metrics.read(access, "10.77.0.11", AGENT_PORT, timeout=30)
            agent_times.append(time.perf_counter() - t)
        node_scrape_cpu = max(0.0, (node_cpu("10.77.0.11") - cpu3)
                              - idle_share * sum(agent_times)) / len(agent_times)
        # a day: at rest, an agent scrape every 15 s (Prometheus's interval) and a probe
        # round every 30 s (the exporter's), or back to back where a round takes longer
        # than that here; and with the 300 s interval a county this size should use
        def day_at(interval: float) -> int:
            rounds_a_day = DAY / max(interval, wall)
            return round(idle_share * DAY + node_round_cpu * rounds_a_day
                         + node_scrape_cpu * DAY / 15)
        day = {"idle_cpu_share": round(idle_share, 4),
               "probe_round_cpu_seconds": round(node_round_cpu, 3),
               "agent_scrape_cpu_seconds": round(node_scrape_cpu, 3),
               "day_cpu_seconds": day_at(30), "day_cpu_seconds_at_300s": day_at(300)}
        day["day_cpu_share"] = round(day["day_cpu_seconds"] / DAY, 4)
        day["day_cpu_share_at_300s"] = round(day["day_cpu_seconds_at_300s"] / DAY, 4)
        node = node_resources("10.77.0.11")
        control_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        probes_per_round = count * 3
        cpu = statistics.median(r.cpu_seconds for r in rounds)
        up = sum(1 for per in rounds[-1].tenants.values() for r in per.values() if r.up)
        print(f"tenants: {count}, nodes: 3, probes per round: {probes_per_round}, "
              f"up in last round: {up}; apply {apply_s:.0f} s")
        print(f"{'measure':<44}{'value':>12}")
        for name, value in [
            ("probe round wall time (s, median of 3)", f"{wall:.2f}"),
            ("probe round CPU time of exporter (s)", f"{cpu:.2f}"),
            ("CPU per probe (ms)", f"{1000 * cpu / probes_per_round:.3f}"),
            ("CPU share at a 30 s interval", f"{cpu / 30:.1%}"),
            ("exporter scrape (s, median of 5)", f"{statistics.median(scrapes):.3f}"),
            ("  the round's series, once a round (s)", f"{statistics.median(formats):.3f}"),
            ("exporter series", str(series(text))),
            ("agent scrape on n1 (s, median of 5)", f"{statistics.median(agent_times):.3f}"),
            ("agent series on n1", str(series(agent_text))),
            ("control process, peak memory (MiB)", f"{control_mib:.0f}"),
            *((f"n1 {k.replace('_', ' ')}", str(v)) for k, v in node.items()),
            ("n1 CPU at rest (share of a core)", f"{day['idle_cpu_share']:.1%}"),
            ("n1 CPU of a probe round (s)", f"{day['probe_round_cpu_seconds']:.2f}"),
            ("n1 CPU of an agent scrape (s)", f"{day['agent_scrape_cpu_seconds']:.3f}"),
            ("n1 CPU a day, rest and monitoring (s)", str(day["day_cpu_seconds"])),
            ("  as a share of one core", f"{day['day_cpu_share']:.1%}"),
            ("  with probe rounds every 300 s", f"{day['day_cpu_share_at_300s']:.1%}"),
        ]:
            print(f"{name:<44}{value:>12}")
        if args.json:
            print(json.dumps({
                "bench": "exporter_scale", "units": count, "nodes": 3,
                "apply_seconds": round(apply_s, 1),
                "probes_per_round": probes_per_round, "up_in_last_round": up,
                "probe_round_seconds": round(wall, 3), "probe_round_cpu_seconds": round(cpu, 3),
                "cpu_share_at_30s": round(cpu / 30, 4),
                "exporter_scrape_seconds": round(statistics.median(scrapes), 4),
                "exporter_scrape_target_seconds": 0.5,
                "round_series_format_seconds": round(statistics.median(formats), 4),
                "scrape_before_seconds": round(statistics.median(scrapes)
                                               + statistics.median(formats), 4),
                "exporter_series": series(text),
                "agent_scrape_seconds": round(statistics.median(agent_times), 4),
                "agent_series": series(agent_text),
                "control_peak_mib": round(control_mib), "node_n1": node,
                "node_n1_cpu": day}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
