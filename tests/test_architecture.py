"""The layout holds: layers and pure parts as `.importlinter` says, and no import cycles.

A cycle between two modules (even through an import inside a function) means neither can be
read, tested or moved without the other; `lint-imports` checks the layers between packages,
this checks every module against every other.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

import grimp

REPO = Path(__file__).resolve().parent.parent


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_cycles_and_only_cycles():
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []
    assert sorted(cycles({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]})) == [["a", "b"],
                                                                                ["c", "d"]]


def test_no_module_imports_itself_back():
    sys.path.insert(0, str(REPO))
    graph = grimp.build_graph("controlplane", "commands")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_and_pure_parts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    r = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_ruff_finds_no_unused_import_or_unsorted_imports():
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([exe, "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _applies_outside_the_service(path: Path) -> list[str]:
    """Where a module reaches `sites.apply.apply` itself (a call, or handing it in)."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "controlplane.sites.apply":
            found += [f"{path}:{node.lineno} imports apply" for a in node.names
                      if a.name == "apply"]
        if isinstance(node, ast.ImportFrom) and node.module == "controlplane.sites":
            aliases |= {a.asname or a.name for a in node.names if a.name == "apply"}
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names
                        if a.name == "controlplane.sites.apply" and a.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "apply" and \
                isinstance(node.value, ast.Name) and node.value.id in aliases:
            found.append(f"{path}:{node.lineno} uses {node.value.id}.apply")
    return found


def test_every_apply_goes_through_the_apply_service():
    """What follows an apply (the county search, the word lists) is in converge.service; an
    apply started anywhere else (console, node lifecycle, certificates, launch) must not skip
    it by calling sites.apply.apply itself."""
    allowed = {REPO / "controlplane" / "converge" / "service.py",
               REPO / "controlplane" / "sites" / "apply.py"}
    found = [f for d in ("controlplane", "commands") for p in sorted((REPO / d).rglob("*.py"))
             if p not in allowed for f in _applies_outside_the_service(p)]
    found += _applies_outside_the_service(REPO / "cli.py")
    assert found == []
    # and the check sees what it is looking for
    assert _applies_outside_the_service(REPO / "controlplane" / "converge" / "service.py")
