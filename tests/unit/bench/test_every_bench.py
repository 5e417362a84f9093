"""Every bench in bench/ (issue 37): it imports (so every name of the control plane it uses
still exists), has a `main`, takes `--json`, and its docstring says how to run it.

A bench that runs only on the lab is run at a tiny size only where the suite's time budget
holds it (the other tests in this directory run the loopback benches); for the rest this
test is what keeps a rename in the control plane from breaking them silently. It imports a
bench without running it (`main` is only called under `__main__`)."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# bench/_common.py is what the lab benches share, not a bench
BENCHES = sorted(p for p in (REPO / "bench").glob("*.py") if not p.name.startswith("_"))


def _load(path: Path):
    if str(path.parent) not in sys.path:            # as when run: bench/ is on the path
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benches_are_all_here():
    assert len(BENCHES) >= 20


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: p.stem)
def test_a_bench_imports_takes_json_and_says_how_to_run_it(path):
    module = _load(path)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    source = path.read_text(encoding="utf-8")
    # its own flag, not a --json it passes to govhost
    assert re.search(r"""add_argument\(\s*["']--json["']|["']--json["'] (not )?in """
                     r"""(sys\.)?argv""", source), f"{path.name} does not take --json"
    doc = module.__doc__ or ""
    assert "--json" in doc and ("Usage" in doc or "usage" in doc or f"{path.name}" in doc), \
        f"{path.name}'s docstring does not say how to run it with --json"
    # its figures say which bench printed them (the lab test of every bench checks the name)
    assert f'"bench": "{path.stem}"' in source, f"{path.name}'s JSON does not name the bench"
