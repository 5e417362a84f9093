"""A node's backup program pointed at a real restic repository in the test's directory
(the repository is reached by path, where a node reaches it over SFTP): shared by the tests
that run `govhost_node.backup` for real."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from govhost_node import backup


def point_at_repository(tmp_path: Path, monkeypatch, homes: dict[str, Path], password: str,
                        node: str = "n1") -> Path:
    """A new repository, and the node's backup.json naming it and the units' `homes`;
    the program's spec, state and status under `tmp_path`. Returns the repository."""
    repo = tmp_path / "repo"
    subprocess.run(["restic", "-r", str(repo), "init"], check=True, capture_output=True,
                   env={**os.environ, "RESTIC_PASSWORD": password})
    spec = {"node": node, "password": password,
            "repository": {"url": str(repo), "path": str(repo), "user": "govhost-backup",
                           "address": "127.0.0.1", "port": 22, "local": False},
            "files": [{"tenant": t, "home": str(h), "schedule": "02:30"}
                      for t, h in homes.items()],
            "databases": []}
    (tmp_path / "backup.json").write_text(json.dumps(spec))
    state = tmp_path / "state"
    monkeypatch.setattr(backup, "SPEC", str(tmp_path / "backup.json"))
    monkeypatch.setattr(backup, "STATE", str(state))
    monkeypatch.setattr(backup, "STATUS", str(state / "status.json"))
    return repo


def night(capsys, *tags: str, always: bool = False) -> dict[str, dict]:
    """`govhost-backup run` of every unit: each unit's result line."""
    backup.run(argparse.Namespace(schedule=None, tenant=None, tag=list(tags) or None,
                                  run=None, jobs=2, always=always))
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    return {r["tenant"]: r for r in lines if r.get("event") == "result"}
