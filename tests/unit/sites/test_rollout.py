"""How the rollout reads each node's answer: a step ssh never ran, a step that ran and
failed, and a step cut short after it began, which is a failure (rolled back, the rollout
stops), never "unreachable" (which would hand the canary's part to the next node).

ssh itself is the one stand-in here: a script first on PATH runs the command it is given
locally, or (for a node marked down) exits 255 as ssh does when it cannot connect. What
the node does is a script in the test's own directory standing in for govhost-node; the
real govhost-node's steps are tested in test_release_steps.py and on the lab."""
import os
import stat
from pathlib import Path

import pytest

from controlplane.core import paths, remote
from controlplane.core.errors import GovhostError
from controlplane.core.manifest import Hosts
from controlplane.sites import rollout
from tests import helpers

SSH = """#!/bin/sh
for last; do :; done
host=""
for a; do case "$a" in root@*) host="${a#root@}";; esac; done
case " $DOWN " in *" $host "*) echo "ssh: connect to host $host: No route" >&2; exit 255;; esac
sh -c "$last"
rc=$?
# the connection broke while the command ran: ssh says 255, whatever the command did
if [ -e "$LOG.cut" ]; then rm "$LOG.cut"; echo "Connection to $host closed" >&2; exit 255; fi
exit $rc
"""
# stands in for govhost-node: logs each call; `activate` on $BREAK_ON breaks the way asked
TOOL = """#!/bin/sh
echo "$*" >> "$LOG"
if [ "$1" = activate ] && [ "$3" = "$BREAK_ON" ]; then
    case "$HOW" in
        fail) echo "probe failed" >&2; exit 1;;
        hang) sleep 30;;
        cut) touch "$LOG.cut"; exit 0;;
    esac
fi
exit 0
"""


@pytest.fixture
def lab(tmp_path, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("ssh", SSH), ("govhost-node", TOOL)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    monkeypatch.setenv("LOG", str(tmp_path / "log"))
    monkeypatch.setattr(paths, "NODE_TOOL", str(bin_ / "govhost-node"))
    control = tmp_path / "control"
    monkeypatch.setattr(remote, "CONTROL_DIR", control)
    hosts = Hosts.model_validate(helpers.hosts(3))
    return hosts, tmp_path


def _activate(hosts, tmp_path, **env):
    for k, v in env.items():
        os.environ[k] = v
    try:
        return rollout.activate(hosts, list(hosts.nodes), tmp_path / "known_hosts",
                                {n.name: "a" * 16 for n in hosts.nodes}, 5)
    finally:
        for k in env:
            del os.environ[k]


def _calls(tmp_path) -> list[str]:
    log = tmp_path / "log"
    return log.read_text().splitlines() if log.exists() else []


def test_an_unreachable_canary_hands_over_and_the_rest_follow(lab):
    hosts, tmp = lab
    canary, steps = _activate(hosts, tmp, DOWN="10.77.0.11")
    assert canary == "n2"
    assert steps["n1"].unreachable and not steps["n1"].ok
    assert steps["n2"].ok and steps["n3"].ok
    assert sorted(_calls(tmp)) == [f"activate {'a' * 16} 10.77.0.1{i} 5" for i in (2, 3)]


def test_a_failed_canary_is_rolled_back_and_stops_the_rest(lab):
    hosts, tmp = lab
    canary, steps = _activate(hosts, tmp, BREAK_ON="10.77.0.11", HOW="fail")
    assert canary == "n1" and steps["n2"] is None and steps["n3"] is None
    assert not steps["n1"].ok and not steps["n1"].unreachable
    assert "failed (rolled back): probe failed" in steps["n1"].output
    assert _calls(tmp)[-1] == "rollback"


def test_a_connection_lost_after_the_activation_began_is_a_failure_not_unreachable(lab):
    hosts, tmp = lab
    canary, steps = _activate(hosts, tmp, BREAK_ON="10.77.0.11", HOW="cut")
    assert canary == "n1" and steps["n2"] is None        # not handed on to n2
    assert not steps["n1"].ok and not steps["n1"].unreachable
    assert "did not finish (rolled back): Connection to 10.77.0.11 closed" in steps["n1"].output
    assert _calls(tmp)[-1] == "rollback"


def test_an_activation_that_outlives_its_time_is_rolled_back_and_stops_the_rest(
        lab, monkeypatch):
    hosts, tmp = lab
    monkeypatch.setattr(rollout, "ACTIVATE_SECONDS", 2)
    canary, steps = _activate(hosts, tmp, BREAK_ON="10.77.0.11", HOW="hang")
    assert canary == "n1" and steps["n2"] is None and steps["n3"] is None
    assert "did not finish (rolled back): no answer within 2 s" in steps["n1"].output
    assert _calls(tmp)[-1] == "rollback"


def test_stage_sends_the_archive_and_reads_exit_codes(lab):
    hosts, tmp = lab
    archive = tmp / "n1.tar.gz"
    archive.write_bytes(b"x" * 100_000)
    payloads = {
        "n1": rollout.Payload(f"wc -c > {tmp}/got; exit 4", archive),
        "n2": rollout.Payload("echo 'nginx -t refused: vhosts/jiaoyu.conf' >&2; exit 3", None),
        "n3": rollout.Payload("exit 0", None)}
    steps = rollout.stage(hosts, list(hosts.nodes), tmp / "known_hosts", payloads)
    assert (tmp / "got").read_text().strip() == "100000"
    assert (steps["n1"].rc, steps["n2"].rc, steps["n3"].rc) == (4, 3, 0)
    assert steps["n2"].output == "nginx -t refused: vhosts/jiaoyu.conf"


def test_the_sockets_directory_must_be_this_accounts_alone(tmp_path, monkeypatch):
    d = tmp_path / "sockets"
    monkeypatch.setattr(remote, "CONTROL_DIR", d)
    assert remote._control_dir() == d and stat.S_IMODE(d.stat().st_mode) == 0o700
    d.chmod(0o777)
    with pytest.raises(GovhostError, match="not a directory of this account's alone"):
        remote._control_dir()
    d.chmod(0o700)
    os.chown(d, 12345, 12345)
    with pytest.raises(GovhostError, match="owner uid 12345"):
        remote._control_dir()
    d.rmdir()
    d.symlink_to(tmp_path)
    with pytest.raises(GovhostError):
        remote._control_dir()


def test_a_node_program_never_exits_with_ssh_s_own_status():
    text = (Path(__file__).resolve().parents[3] / "govhost_node" / "node.py").read_text()
    assert "sys.exit(code if 0 <= code < 255 else 1)" in text
