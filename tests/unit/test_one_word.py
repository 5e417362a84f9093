"""One word for a department or township: `unit`. Every help text of the CLI says it (the
manifest directory keeps its name, `tenants/`, and so do the interfaces scripts and
dashboards read: JSON keys, metric labels, node paths; docs/architecture.md's glossary);
`govhost tenant …` keeps working, hidden, for scripts written before."""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import typer

from cli import app
from tests.helpers import example_inventory

REPO = Path(__file__).resolve().parents[2]


def _helps(cmd, path: tuple[str, ...] = ("govhost",)):
    ctx = cmd.context_class(cmd, info_name=" ".join(path))     # (typer carries its own click)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):                   # typer's rich help prints
        returned = cmd.get_help(ctx)
    yield path, (returned or "") + printed.getvalue()
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                yield from _helps(sub, (*path, name))


def test_no_help_text_says_tenant():
    root = typer.main.get_command(app)
    seen, unit_said, said = 0, 0, []
    for path, text in _helps(root):
        seen += 1
        # the inventory's directory is named tenants/: a path, not a word
        words = re.sub(r"tenants/", "", text)
        if re.search(r"\btenants?\b", words, re.I):
            said.append(" ".join(path))
        unit_said += bool(re.search(r"\bunits?\b", words, re.I))
    assert seen > 60, seen                       # it walked the whole CLI
    assert unit_said > 20, unit_said             # and read what each help says
    assert not said, f"help that says tenant instead of unit: {said}"


def test_the_old_command_name_still_works_for_scripts(tmp_path):
    inv = tmp_path / "inventory"
    example_inventory(inv)

    def listed(group: str) -> list:
        r = subprocess.run([sys.executable, "-c", "from cli import main; main()",
                            "--inventory", str(inv), group, "list", "--json"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    units = listed("unit")
    assert len(units) >= 10 and units == listed("tenant")
