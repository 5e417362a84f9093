#!/usr/bin/env python3
"""A node's unit accounts at scale: N units' accounts made by govhost_node.accounts (every
new account written in one locked pass over the four account files) against the commands a
node ran before stop 58 for each new unit (groupadd and useradd choosing their own ids, passwd
--lock, gpasswd --add for the web user), side by side in one run, each in a scratch copy of
this machine's account files (the tools' `--root`; this machine's own accounts are never
touched). Prints the whole time, and the time a unit took among the last tenth (the cost
grows with the accounts already there), for both, and then a second run with nothing to do.

A 5,000-unit county on 3 nodes puts about 3,300 units on a node; its first apply took 702 s,
most of it in these commands (stop 56). Needs only the shadow tools (Debian's `passwd`).

Usage: bench/accounts_scale.py [N] [--json]
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from govhost_node.accounts import ID_RANGE, SITES, Accounts, converge_accounts  # noqa: E402

SFTP, WEB = "govhost-sftp", "www-data"


def scratch(parent: Path, name: str) -> Path:
    root = parent / name
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "shadow", "group", "gshadow", "login.defs"):
        shutil.copy2(f"/etc/{f}", root / "etc" / f)
    return root


def units(n: int) -> list[dict]:
    return [{"name": f"u{i:05d}", "user": f"gh-u{i:05d}", "sections": []} for i in range(n)]


def _quiet(*cmd: str) -> None:
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")


def before(root: Path, todo: list[dict]) -> list[float]:
    """What tenants.py ran for each new unit before stop 58, timed per unit."""
    r = ["--root", str(root)]
    _quiet("groupadd", *r, *ID_RANGE[4:8], SFTP)
    times = []
    for t in todo:
        t0 = time.perf_counter()
        _quiet("groupadd", *r, *ID_RANGE[4:8], t["user"])
        _quiet("useradd", *r, *ID_RANGE, "--no-create-home", "--home-dir",
               f"{SITES}/{t['name']}", "--shell", "/usr/sbin/nologin", "--gid", t["user"],
               "--groups", SFTP, t["user"])
        _quiet("passwd", *r, "--lock", t["user"])
        _quiet("gpasswd", "-Q", str(root), "--add", WEB, t["user"])
        times.append(time.perf_counter() - t0)
    return times


class Counting(Accounts):
    """Accounts that counts the shadow tools it runs."""
    commands = 0

    def _must(self, *cmd: str) -> None:
        self.commands += 1
        super()._must(*cmd)


def main(argv: list[str]) -> dict:
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    n = int(args[0]) if args else 1000
    todo = units(n)
    tmp = Path(tempfile.mkdtemp(prefix="govhost-bench-accounts-"))
    try:
        t0 = time.perf_counter()
        old = before(scratch(tmp, "before"), todo)
        old_s = time.perf_counter() - t0
        root = scratch(tmp, "now")
        t0 = time.perf_counter()
        acc = Counting(str(root))
        converge_accounts(acc, todo, SFTP, WEB)
        new_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = Counting(str(root))
        converge_accounts(again, todo, SFTP, WEB)
        again_s = time.perf_counter() - t0
        made = acc.done["users_made"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tenth = max(1, n // 10)
    res = {"bench": "accounts_scale", "units": n, "users_made": made,
           "now_s": round(new_s, 4), "before_s": round(old_s, 2),
           "before_ratio_to_now": round(old_s / new_s, 1),
           "before_last_tenth_ms_per_unit": round(sum(old[-tenth:]) / tenth * 1000, 1),
           "before_first_tenth_ms_per_unit": round(sum(old[:tenth]) / tenth * 1000, 1),
           "now_ms_per_unit": round(new_s / n * 1000, 3),
           "nothing_to_do_s": round(again_s, 3),
           "commands_now": acc.commands, "commands_before": 4 * n + 1,
           "nothing_to_do_commands": again.commands}
    if not as_json:
        print(f"{n} units' accounts, each in a scratch copy of /etc's account files:\n"
              f"  govhost_node.accounts  {res['now_s']:8.4f} s  ({res['now_ms_per_unit']} ms "
              f"a unit)\n"
              f"  before stop 58         {res['before_s']:8.2f} s  ({res['before_ratio_to_now']}x;"
              f" {res['before_first_tenth_ms_per_unit']} ms a unit in the first tenth, "
              f"{res['before_last_tenth_ms_per_unit']} ms in the last)\n"
              f"  again, nothing to do   {res['nothing_to_do_s']:8.3f} s  "
              f"({res['nothing_to_do_commands']} commands; made with {res['commands_now']} "
              f"against {res['commands_before']})")
    return res


if __name__ == "__main__":
    out = main(sys.argv[1:])
    if "--json" in sys.argv[1:]:
        print(json.dumps(out))
