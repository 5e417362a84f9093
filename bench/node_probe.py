#!/usr/bin/env python3
"""What keepalived's probe costs a node: `govhost-node vrrp check alive ADDRESS` runs every
second, twice (alive and prompt), on every web node. Measured side by side in one run,
interleaved, ROUNDS times each, against a listener on loopback that answers 200: the probe as
the node runs it (the installed wrapper: python3, the package, a new process each time), the
same HTTP request made by curl (what the shell version of the probe ran), and an empty
python3 (the interpreter's own start, the floor of any Python probe), and, where git history
has it, the shell version of govhost-node the Python one replaced (commit 1ef6a13's parent).
Wall time per run and CPU time per run (user + system of the child).

Needs python3 at /usr/bin/python3 and curl. Usage: bench/node_probe.py [ROUNDS] [--json]
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADDRESS = "127.0.79.1"
PORT = 80


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


def _timed(argv: list[str], env: dict) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rc


def _shell_version(streaks: str) -> str | None:
    """The shell govhost-node from git history, beside the exits.py it sources."""
    try:
        text = subprocess.run(["git", "-C", str(REPO), "show",
                               "1ef6a13^:govhost_node/govhost-node"], capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    where = Path(f"{streaks}-shell")
    where.mkdir(parents=True, exist_ok=True)
    (where / "govhost-node").write_bytes(text)
    (where / "exits.py").write_bytes((REPO / "govhost_node" / "exits.py").read_bytes())
    return str(where / "govhost-node")


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    rounds = int(args[0]) if args else 50
    server = HTTPServer((ADDRESS, PORT), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    streaks = f"/tmp/govhost-bench-probe-{os.getpid()}"
    env = {**os.environ, "GOVHOST_VRRP_STREAKS": streaks}
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    ways = {
        "probe": [python, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                  "from govhost_node.node import main; main()",
                  "vrrp", "check", "alive", ADDRESS, "0"],
        "curl": ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                 "-H", "Host: govhost-probe", f"http://{ADDRESS}/health"],
        "python_empty": [python, "-c", "pass"],
    }
    old = _shell_version(streaks)
    if old is not None:
        ways["shell_probe"] = ["bash", old, "vrrp", "check", "alive", ADDRESS, "0"]
    seen: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    failed = 0
    try:
        for _ in range(rounds):
            for name, cmd in ways.items():
                wall, cpu, rc = _timed(cmd, env)
                failed += rc != 0
                seen[name].append((wall, cpu))
    finally:
        server.shutdown()
        server.server_close()
        subprocess.run(["rm", "-rf", streaks, f"{streaks}-shell"])
    res: dict = {"bench": "node_probe", "rounds": rounds, "failed": failed}
    for name, xs in seen.items():
        res[f"{name}_wall_ms"] = round(statistics.median(w for w, _ in xs) * 1000, 2)
        res[f"{name}_cpu_ms"] = round(statistics.median(c for _, c in xs) * 1000, 2)
    res["probe_cpu_ratio_to_curl"] = round(res["probe_cpu_ms"] / max(res["curl_cpu_ms"], 0.01), 2)
    if "shell_probe" in ways:
        res["probe_cpu_ratio_to_shell"] = round(
            res["probe_cpu_ms"] / max(res["shell_probe_cpu_ms"], 0.01), 2)
    # Two probes a second on every web node: the share of one core they keep busy.
    res["probe_core_share_percent"] = round(2 * res["probe_cpu_ms"] / 10, 2)
    if not as_json:
        print(f"{rounds} rounds, interleaved; median per run, wall / CPU:")
        for name in ways:
            print(f"  {name:13} {res[f'{name}_wall_ms']:7.2f} ms / {res[f'{name}_cpu_ms']:6.2f} ms")
        if "shell_probe" in ways:
            print(f"probe CPU {res['probe_cpu_ratio_to_shell']}x the shell version's")
        print(f"probe CPU {res['probe_cpu_ratio_to_curl']}x curl's; two probes a second keep "
              f"{res['probe_core_share_percent']} % of one core busy")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
