"""restic's JSON summary, read from a real `restic backup --json` (the node's backups and the
control machine's backup of its own state share this reader)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from govhost_node.backup import restic_summary

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic not installed")


def _restic(repo, *args, password="pw"):
    env = {**os.environ, "RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD": password,
           "RESTIC_CACHE_DIR": str(repo.parent / "cache")}
    return subprocess.run(["restic", *args], env=env, capture_output=True, timeout=120)


def test_summary_of_a_real_backup_names_its_snapshot_and_counts(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "site"
    src.mkdir()
    for i in range(3):
        (src / f"page{i}.html").write_text(f"<p>第{i}页</p>\n" * 50)
    assert _restic(repo, "init").returncode == 0
    r = _restic(repo, "backup", "--json", str(src))
    assert r.returncode == 0, r.stderr
    summary = restic_summary(r.stdout + b"not json\n")
    assert summary["message_type"] == "summary"
    assert summary["total_files_processed"] == 3
    snaps = _restic(repo, "snapshots", "--json")
    assert summary["snapshot_id"] in snaps.stdout.decode()


def test_a_failed_backup_has_no_summary(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("x")
    assert _restic(repo, "init").returncode == 0
    r = _restic(repo, "backup", "--json", str(src), password="wrong")
    assert r.returncode != 0
    assert restic_summary(r.stdout) == {}
