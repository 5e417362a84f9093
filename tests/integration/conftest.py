"""The lab cluster, brought up once per session: real sshd, nginx and Ansible."""
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.lab import machines as lab
from tests.helpers import example_inventory

REPO = Path(__file__).resolve().parents[2]


def lab_possible() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("unshare", "nginx", "ssh", "curl"):
        if not shutil.which(tool):
            return f"{tool} is not installed (run scripts/setup.sh)"
    return None


def pytest_collection_modifyitems(items):
    """Machine-node tests run last: they take the lab's addresses over from the overlay
    nodes the other modules share. The benches just before them: each applies a county of
    its own, after which the example county is a new release on every node again."""
    items.sort(key=lambda item: (item.get_closest_marker("machines") is not None,
                                 item.get_closest_marker("benches") is not None))


# One test run on the lab at a time. CI may start on the machine a developer's session is
# still using (it did: CI's run shared the lab nodes a developer had left up).
LAB_TURN = Path("/run/lock/govhost-lab-tests.lock")


@pytest.fixture(scope="session")
def lab_turn():
    """Wait for the lab: held for the whole session by the first fixture that brings nodes
    up, so a second run (another developer's, or CI's) waits instead of sharing them."""
    LAB_TURN.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LAB_TURN, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def lab_cluster(lab_turn):
    why = lab_possible()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"lab tests cannot run in CI: {why}")
        pytest.skip(why)
    was_running = {n.name for n in lab.nodes() if n.running}
    # CI starts from fresh nodes: nodes left up by someone else hold their day's visitors,
    # their messages (an hour's per-unit limit) and whatever else their tests did. A
    # developer's rerun keeps the running nodes: it saves their start.
    if os.environ.get("CI") or any(n.running and n.kind != "overlay" for n in lab.nodes()):
        lab.down()        # (or machine nodes left by a run of the machine tests)
        was_running = set()
    # The fast mode: the host's root under an overlay. The machine tests use real machines.
    nodes = lab.up(3, "overlay")
    assert all(n.ssh_open for n in nodes[:3])
    yield nodes
    if not was_running:
        lab.down()


# The keys a county's state directory makes on first use: its secret (every derived password,
# so every config file), the metrics CA and the backup key.
COUNTY_KEYS = ("secret", "metrics", "backup_ed25519", "backup_ed25519.pub")


@pytest.fixture(scope="session")
def county_keys(tmp_path_factory) -> Path:
    """One set of county keys for the session's fresh counties, made at the start by a plan
    of a scratch copy of the example (a plan makes them on first use, as an apply does)."""
    keys = tmp_path_factory.mktemp("county-keys")
    scratch = example_inventory(tmp_path_factory.mktemp("keys-maker") / "inventory")
    govhost(scratch, "plan", "--json", check=True)
    _copy_keys(scratch / ".govhost", keys)
    assert (keys / "secret").exists(), "a plan made no county secret"
    return keys


def with_county_keys(dest: Path, county_keys: Path) -> Path:
    """The session's county keys in the county at `dest` (before its first command): a
    module's county then renders, for what it shares with the example, the files the nodes
    already hold, and its first apply changes only what the module changed (a county with a
    secret of its own changes every file: its first apply took 20-30 s in each module)."""
    state = dest / ".govhost"
    state.mkdir(mode=0o700, exist_ok=True)
    _copy_keys(county_keys, state)
    return dest


@pytest.fixture
def county(lab_cluster, tmp_path, county_keys):
    """A private copy of the example inventory with its own state store, holding the same
    keys as the other tests' copies: an unchanged county then renders the release the nodes
    already hold, and a test's first apply is a check, not a new release on every node
    (about 20 s each). The state store itself is new: nothing else is carried over."""
    return with_county_keys(example_inventory(tmp_path / "inventory"), county_keys)


def _copy_keys(src: Path, dest: Path) -> None:
    for name in COUNTY_KEYS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name)
        elif (src / name).exists():
            shutil.copy2(src / name, dest / name)


def govhost(inventory: Path, *args: str, check: bool = False, timeout: int = 600):
    proc = subprocess.run(["govhost", "--inventory", str(inventory), *args],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"govhost {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def machines(lab_turn):
    """Three freshly installed servers: every node starts from the bare image on an empty
    disk. Brought up once: the machine module bootstraps and tries them, the security
    module then tightens the same county on them (a second set of bare servers would
    cost another bootstrap, about five minutes)."""
    why = lab_possible() or next((f"{t} is not installed (run scripts/setup.sh)" for t in
                                  ("systemd-nspawn", "mmdebstrap") if not shutil.which(t)), None)
    if why:
        pytest.skip(why)
    if any(n.running and n.kind != "machine" for n in lab.nodes()):
        lab.down()          # the overlay lab of the other modules shares the addresses
    for n in lab.nodes():
        if n.kind == "machine":
            lab.wipe(n.name)
    nodes = lab.up(3, "machine", "bare")
    assert all(n.ssh_open and n.kind == "machine" for n in nodes[:3])
    yield nodes
    lab.down()


@pytest.fixture(scope="session")
def machine_county(machines, tmp_path_factory):
    """The example county for the machines: a private copy of the inventory, not yet
    applied (the first test that needs it applied does so)."""
    dest = tmp_path_factory.mktemp("machines") / "inventory"
    example_inventory(dest)
    return dest
