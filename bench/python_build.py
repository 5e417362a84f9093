#!/usr/bin/env python3
"""How fast the control plane runs on the Python that runs it: the interpreter of this
checkout's .venv (the one running this bench) beside each `--against PYTHON`, in one run.

Every `govhost` command is a new process: it starts Python, imports the control plane
(pydantic builds the manifests' models, typer the command tree), imports what its own work
needs and does the work, all of it Python. So the interpreter's build is in every figure.
scripts/setup.sh makes the .venv from Debian's /usr/bin/python3 (its interpreter built into
the executable, from Debian's optimised build); pyenv's default build is made without
--enable-optimizations or --with-lto and links a shared libpython. This bench measures the
gap; it does not split it into its causes.

Only the interpreter differs between the sides: each runs with `-S` (no site-packages of its
own) and the same PYTHONPATH, the checkout and the library directories of this .venv (its
site-packages and the Debian ones it sees), so both import the very same libraries (the
same pydantic, the same PyYAML). Each interpreter keeps its own standard library. Rounds
alternate between the interpreters (this host's speed drifts within a run).

For each interpreter, ROUNDS times each (median, and the ratio to this .venv's):
  startup   `python -c pass`
  import    `python -c "import cli"`: the command tree and what it imports at the start
  plan      load the example county and make its plan (the pure core, timed inside the
            process after its imports), as `govhost plan` computes it
  tests     with `--tests PATH`: `pytest -q PATH`, whole, twice each (alternating)

Nothing is written outside a scratch directory but the compiled files Python keeps.

Usage: bench/python_build.py [ROUNDS] [--against PYTHON]... [--tests PATH] [--json]
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLAN = """
import sys, time
from pathlib import Path
from controlplane.core import inventory
from controlplane.sites.plan import make_plan
t = time.perf_counter()
inv = inventory.load(Path({inv!r}), Path({state!r}))
plan = make_plan(inv, frozenset(), {{}}, {{}})
assert len(plan.placement) == len(inv.tenants)
print(time.perf_counter() - t)
"""


def library_path() -> str:
    """The checkout, then every library directory of this interpreter's path (not its
    standard library): what the other side imports too."""
    stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    libs = [p for p in sys.path if p and os.path.isdir(p) and p not in stdlib
            and not p.endswith(("lib-dynload", ".zip")) and p != str(REPO)]
    return os.pathsep.join([str(REPO), *libs])


def _run(python: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([python, "-S", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"{python} {' '.join(args)[:60]} failed:\n{proc.stderr[-2000:]}")
    return proc


def _wall(python: str, args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    _run(python, args, env)
    return time.perf_counter() - t


def _version(python: str) -> str:
    """Its version, and whether its executable calls into a shared libpython."""
    exe = subprocess.run([python, "-S", "-c", "import os, sys; print(os.path.realpath("
                          "sys.executable)); print(sys.version.split()[0])"],
                         capture_output=True, text=True, check=True).stdout.split()
    libs = subprocess.run(["ldd", exe[0]], capture_output=True, text=True).stdout
    return f"{exe[1]}, " + ("shared libpython" if "libpython" in libs else "interpreter built in")


def _argv(argv: list[str]) -> tuple[int, list[str], str | None, bool]:
    others: list[str] = []
    tests: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--against", "--tests"):
            if i + 1 >= len(argv):
                sys.exit(f"{a} needs a value (usage: see this bench's docstring)")
            if a == "--against":
                others.append(argv[i + 1])
            else:
                tests = argv[i + 1]
            i += 2
            continue
        if not a.startswith("--"):
            rest.append(a)
        i += 1
    return (int(rest[0]) if rest else 7), others, tests, "--json" in argv


def main(argv: list[str]) -> dict:
    rounds, others, tests, as_json = _argv(argv)
    pythons = [sys.executable] + others
    env = {**os.environ, "PYTHONPATH": library_path()}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-python-"))
    try:
        shutil.copytree(REPO / "inventory", work / "inventory",
                        ignore=shutil.ignore_patterns(".govhost"))
        (work / "state").mkdir(mode=0o700)
        plan = PLAN.format(inv=str(work / "inventory"), state=str(work / "state"))
        times: dict[str, dict[str, list[float]]] = {
            p: {"startup": [], "import": [], "plan": [], "tests": []} for p in pythons}
        for p in pythons:                       # compiled files written, the plan's secret
            _run(p, ["-c", "import cli"], env)
            _run(p, ["-c", plan], env)
        for _ in range(rounds):
            for p in pythons:
                times[p]["startup"].append(_wall(p, ["-c", "pass"], env))
                times[p]["import"].append(_wall(p, ["-c", "import cli"], env))
                times[p]["plan"].append(float(_run(p, ["-c", plan], env).stdout.split()[-1]))
        for _ in range(2 if tests else 0):
            for p in pythons:
                times[p]["tests"].append(_wall(p, ["-m", "pytest", "-q", "-p",
                                                   "no:cacheprovider", tests], env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = []
    for p in pythons:
        run: dict = {"python": p, "version": _version(p)}
        for k, v in times[p].items():
            if v:
                run[f"{k}_s"] = round(statistics.median(v), 4)
        runs.append(run)
    first = runs[0]
    for run in runs[1:]:
        run["x_this_venv"] = {k[:-2]: round(run[k] / first[k], 2)
                              for k in first if k.endswith("_s") and first[k]}
    result = {"bench": "python_build", "rounds": rounds, "tests": tests, "runs": runs}
    if not as_json:
        for run in runs:
            ratio = run.get("x_this_venv", {})
            print(f"{run['python']}  ({run['version']})")
            for k in ("startup", "import", "plan", "tests"):
                if f"{k}_s" in run:
                    x = f"   {ratio[k]:.2f}x this venv" if k in ratio else ""
                    print(f"  {k:8} {run[k + '_s'] * 1000:10.1f} ms{x}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
