"""`govhost user add|list|disable|enable|reset` on a copy of the example county (no nodes
needed): what is printed once, what the list shows, refusals naming what to do."""
import json
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest

from controlplane.core.county import County
from controlplane.people.store import People
from tests.helpers import example_inventory

REPO = Path(__file__).resolve().parents[3]


def _govhost(inv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from cli import main; main()",
                           "--inventory", str(inv), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def inv(tmp_path):
    dest = tmp_path / "inventory"
    example_inventory(dest)
    return dest


def test_add_list_disable_reset(inv):
    r = _govhost(inv, "user", "add", "lisi", "--display", "李四", "--unit", "jiaoyu",
                 "--role", "reviewer", "--role", "editor", "--json")
    assert r.returncode == 0, r.stderr
    issued = json.loads(r.stdout)
    assert issued["roles"] == ["editor", "reviewer"] and len(issued["password"]) == 16
    assert issued["totp_uri"].startswith("otpauth://totp/")
    c = County(inv)
    people = People(c.open_state(), c.inv.secret, c.inv.cluster.name)
    code = pyotp.TOTP(issued["totp_secret"]).now()
    assert people.login("lisi", issued["password"], code, "127.0.0.1").ok

    text = _govhost(inv, "user", "add", "wang", "--display", "王芳", "--unit", "chahe",
                    "--role", "editor")
    assert text.returncode == 0, text.stderr
    assert "password (to be changed at the first login)" in text.stdout
    assert "second factor" not in text.stdout              # editors log in with a password
    listed = {u["name"]: u for u in json.loads(_govhost(inv, "user", "list", "--json").stdout)}
    assert listed["lisi"]["second_factor"] and listed["lisi"]["last_login"]
    assert listed["wang"]["unit"] == "chahe" and listed["wang"]["must_change_password"]

    assert _govhost(inv, "user", "disable", "wang").returncode == 0
    assert {u["name"]: u["disabled"] for u in json.loads(
        _govhost(inv, "user", "list", "--json").stdout)}["wang"] is True
    reset = json.loads(_govhost(inv, "user", "reset", "lisi", "--json").stdout)
    assert reset["password"] != issued["password"] and reset["totp_secret"] != \
        issued["totp_secret"]
    actions = [e["action"] for e in people.st.audit_log(20)]
    assert {"user.add", "user.disable", "user.reset", "user.login"} <= set(actions)


@pytest.mark.parametrize("args,expect", [
    (["user", "add", "x1", "--display", "某", "--unit", "nosuch", "--role", "editor"],
     "no unit named 'nosuch'"),
    (["user", "add", "x1", "--display", "某", "--role", "editor"], "give --unit"),
    (["user", "add", "x1", "--display", "某", "--unit", "jiaoyu", "--role", "operator"],
     "works for the county"),
    (["user", "reset", "ghost"], "no person named 'ghost'"),
])
def test_refusals_say_what_is_wrong(inv, args, expect):
    r = _govhost(inv, *args)
    assert r.returncode == 1 and expect in r.stderr, r.stderr
