#!/usr/bin/env python3
"""How fast the control plane runs on the Python that runs it: this checkout's .venv (the
interpreter running this bench) beside each `--against PYTHON`, in one run.

Every `govhost` command is a new process: it starts Python, imports the control plane
(pydantic builds the manifests' models, typer the command tree) and only then does its
work, which is pure Python too (load, place, render). So the build of the interpreter is
in every figure: Debian's python3 is built with profile-guided and link-time optimisation,
a Python built from source without them (pyenv's default) is not. scripts/setup.sh makes
the .venv from Debian's /usr/bin/python3 for that reason; this bench measures the gap.

For each interpreter, ROUNDS times each (median, and the ratio to the first interpreter):
  startup   `python -c pass`
  import    `python -c "import cli"`: what every govhost command pays before its work
  plan      load the example county and make its plan (the pure core, timed inside the
            process after its imports), as `govhost plan` computes it

An `--against` interpreter gets a scratch venv of its own (`-m venv --system-site-packages`,
then this checkout installed in it with pip, about a minute; pip needs its package index).
Nothing outside the scratch directory is written but the compiled files Python keeps.

Usage: bench/python_build.py [ROUNDS] [--against PYTHON]... [--json]
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

REPO = Path(__file__).resolve().parent.parent

PLAN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from controlplane.core import inventory
from controlplane.sites.plan import make_plan
t = time.perf_counter()
inv = inventory.load(Path({inv!r}), Path({state!r}))
plan = make_plan(inv, frozenset(), {{}}, {{}})
assert len(plan.placement) == len(inv.tenants)
print(time.perf_counter() - t)
"""


def _wall(argv: list[str], rounds: int) -> float:
    """The median wall time of `argv`, run `rounds` times (after one run that is not kept:
    it writes the compiled files a second run reads)."""
    times = []
    for i in range(rounds + 1):
        t = time.perf_counter()
        subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _inside(python: str, script: str, rounds: int) -> float:
    """The median of what `script` prints (its own timing), run `rounds` times."""
    times = []
    for i in range(rounds + 1):
        proc = subprocess.run([python, "-c", script], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{python}: the timed work failed:\n{proc.stderr[-2000:]}")
        out = proc.stdout
        if i:
            times.append(float(out.strip().splitlines()[-1]))
    return statistics.median(times)


def _venv_of(python: str, work: Path) -> str:
    """A venv of `python` with this checkout installed: what setup.sh makes, elsewhere."""
    dest = work / f"venv-{len(list(work.glob('venv-*')))}"
    subprocess.run([python, "-m", "venv", "--system-site-packages", str(dest)], check=True)
    subprocess.run([str(dest / "bin" / "python"), "-m", "pip", "install", "-q", "-e",
                    str(REPO)], check=True, stdout=subprocess.DEVNULL)
    return str(dest / "bin" / "python")


def _version(python: str) -> str:
    """Its version, and whether its executable calls into a shared libpython (a build from
    source with --enable-shared, pyenv's default: every call through the PLT, no link-time
    optimisation across it) or has the interpreter built in (Debian's python3)."""
    exe = subprocess.run([python, "-c", "import os, sys; print(os.path.realpath(sys.executable)); "
                          "print(sys.version.split()[0])"], capture_output=True, text=True,
                         check=True).stdout.split()
    libs = subprocess.run(["ldd", exe[0]], capture_output=True, text=True).stdout
    return f"{exe[1]}, " + ("shared libpython" if "libpython" in libs else "interpreter built in")


def measure(python: str, rounds: int, work: Path) -> dict:
    inv = work / "inventory"
    state = work / "state"
    return {
        "python": python,
        "version": _version(python),
        "startup_s": round(_wall([python, "-c", "pass"], rounds), 4),
        "import_s": round(_wall([python, "-c", "import cli"], rounds), 4),
        "plan_s": round(_inside(python, PLAN.format(repo=str(REPO), inv=str(inv),
                                                    state=str(state)), rounds), 4),
    }


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    others: list[str] = []
    rest: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--against":
            others.append(next(it))
        elif not a.startswith("--"):
            rest.append(a)
    rounds = int(rest[0]) if rest else 7
    work = Path(tempfile.mkdtemp(prefix="govhost-bench-python-"))
    try:
        shutil.copytree(REPO / "inventory", work / "inventory",
                        ignore=shutil.ignore_patterns(".govhost"))
        (work / "state").mkdir(mode=0o700)
        pythons = [sys.executable] + [_venv_of(p, work) for p in others]
        runs = [measure(p, rounds, work) for p in pythons]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = runs[0]
    for run in runs[1:]:
        run["x_this_venv"] = {k[:-2]: round(run[k] / first[k], 2)
                              for k in ("startup_s", "import_s", "plan_s") if first[k]}
    result = {"bench": "python_build", "rounds": rounds, "runs": runs}
    if not as_json:
        for run in runs:
            ratio = run.get("x_this_venv", {})
            print(f"{run['python']}  ({run['version']})")
            for k in ("startup", "import", "plan"):
                x = f"   {ratio[k]:.2f}x this venv" if k in ratio else ""
                print(f"  {k:8} {run[k + '_s'] * 1000:8.1f} ms{x}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    main(sys.argv[1:])
