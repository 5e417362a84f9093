"""The node package installs itself: the real self-extracting file bootstrap sends, run with
sh under a test directory standing for the node's / (no systemd there; the lab's machine
tests run it on real systemd nodes)."""
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from controlplane.sites import bootstrap
from govhost_node import install
from govhost_node.layout import Layout

REPO = Path(__file__).resolve().parents[3]


def run_installer(script: Path, root: Path, version: str = "boot-1") -> list[str]:
    proc = subprocess.run(["sh", str(script), "--under", str(root), "--address", "10.77.0.11",
                           "--roles", "web", "--bootstrap-version", version],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.removeprefix("changed: ") for line in proc.stdout.splitlines()]


@pytest.fixture
def package(tmp_path) -> Path:
    dest = tmp_path / "pkg" / "govhost_node"
    shutil.copytree(REPO / "govhost_node", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def changed_copy(package: Path, mark: str) -> Path:
    dest = package.parent.parent / mark / "govhost_node"
    shutil.copytree(package, dest)
    with open(dest / "node.py", "a") as f:
        f.write(f"\n# {mark}\n")
    return dest


def test_a_first_run_installs_everything_and_a_second_changes_nothing(tmp_path, package):
    root = tmp_path / "root"
    script = bootstrap.installer(tmp_path / "node-package.sh", package)
    first = run_installer(script, root)
    version = install.version_of(str(package))
    assert f"installed version {version}" in first
    assert any(c.startswith("commands govhost-node ") for c in first)
    assert "bootstrap version boot-1" in first
    lay = Layout.under(str(root))
    assert Path(f"{lay.lib}/current").readlink() == Path(f"versions/{version}")
    assert Path(lay.bootstrap_version).read_text() == "boot-1\n"
    for d in (lay.releases, f"{lay.logs}/tenants", lay.sites):
        assert Path(d).is_dir()
    # compiled before any command names it
    assert list(Path(f"{lay.lib}/versions/{version}/govhost_node/__pycache__").glob("*.pyc"))
    assert run_installer(script, root) == []
    # a command runs the installed version (govhost-unpack without arguments: its usage)
    proc = subprocess.run([f"{lay.sbin}/govhost-unpack"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: govhost-unpack" in proc.stderr
    assert f"versions/{version}" in Path(f"{lay.sbin}/govhost-unpack").read_text()
    # the file extracted itself into a temporary directory and left nothing there
    assert not list(Path("/tmp").glob("govhost-node-package.*"))


def test_an_upgrade_keeps_the_version_before_and_the_next_one_prunes_the_rest(tmp_path,
                                                                               package):
    root = tmp_path / "root"
    lay = Layout.under(str(root))
    one, two, three = package, changed_copy(package, "two"), changed_copy(package, "three")
    v = {p: install.version_of(str(p)) for p in (one, two, three)}
    assert len(set(v.values())) == 3
    run_installer(bootstrap.installer(tmp_path / "1.sh", one), root)
    up = run_installer(bootstrap.installer(tmp_path / "2.sh", two), root)
    assert f"current: versions/{v[one]} -> versions/{v[two]}" in up
    assert sorted(p.name for p in Path(f"{lay.lib}/versions").iterdir()) == sorted(
        [v[one], v[two]])
    for name in install.COMMANDS:
        assert f"versions/{v[two]}\"" in Path(f"{lay.sbin}/{name}").read_text()
    third = run_installer(bootstrap.installer(tmp_path / "3.sh", three), root)
    assert f"removed versions/{v[one]}" in third
    assert sorted(p.name for p in Path(f"{lay.lib}/versions").iterdir()) == sorted(
        [v[two], v[three]])
    # and back to the one before: nothing to install, the other stays
    back = run_installer(bootstrap.installer(tmp_path / "2b.sh", two), root)
    assert f"installed version {v[two]}" not in back
    assert sorted(p.name for p in Path(f"{lay.lib}/versions").iterdir()) == sorted(
        [v[two], v[three]])


def test_a_version_left_half_made_is_made_again(tmp_path, package):
    root = tmp_path / "root"
    lay = Layout.under(str(root))
    script = bootstrap.installer(tmp_path / "node-package.sh", package)
    run_installer(script, root)
    version = install.version_of(str(package))
    Path(f"{lay.lib}/versions/{version}/govhost_node/node.py").unlink()
    again = run_installer(script, root)
    assert f"installed version {version}" in again
    assert install.version_of(f"{lay.lib}/versions/{version}/govhost_node") == version


def test_the_same_files_make_the_same_file_and_versions_follow_the_package(tmp_path, package):
    a = bootstrap.installer(tmp_path / "a.sh", package).read_bytes()
    time.sleep(1.1)         # gzip would put the time in its header
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "node.cpython-311.pyc").write_bytes(b"compiled")
    b = bootstrap.installer(tmp_path / "b.sh", package).read_bytes()
    assert a == b
    assert bootstrap.version(package) != bootstrap.version(changed_copy(package, "other"))
    # A node given `db` in hosts.yaml is bootstrapped again (MariaDB's server); a role that
    # installs nothing of its own does not cost a bootstrap.
    web = bootstrap.version(package, ["web"])
    assert bootstrap.version(package, ["web", "db"]) != web
    assert bootstrap.version(package, ["web", "backup"]) == web == bootstrap.version(package)
    # ... and one that leaves `db` is not: bootstrap would stop its MariaDB before the new
    # release is proven
    db = bootstrap.version(package, ["web", "db"])
    assert bootstrap.current(db, ["web", "db"], package) and bootstrap.current(db, ["web"], package)
    assert not bootstrap.current(web, ["web", "db"], package)
    assert not bootstrap.current(None, ["web"], package)
    # the units are part of the package (and of its version)
    assert "units/govhost-nginx.service" in install.files_of(str(package))


def test_the_agent_listens_on_the_node_address_only():
    assert install.listen_line("10.77.0.11") == "GOVHOST_LISTEN=10.77.0.11\n"
    assert install.listen_line("fd00:77::11") == "GOVHOST_LISTEN=[fd00:77::11]\n"


def test_a_command_runs_isolated_and_a_traceback_names_the_installed_file(tmp_path, package):
    root = tmp_path / "root"
    run_installer(bootstrap.installer(tmp_path / "node-package.sh", package), root)
    lay = Layout.under(str(root))
    version = install.version_of(str(package))
    # a module planted where the command starts, or on PYTHONPATH, is not imported
    plant = tmp_path / "plant"
    (plant / "govhost_node").mkdir(parents=True)
    (plant / "govhost_node" / "__init__.py").write_text("raise SystemExit('planted')\n")
    proc = subprocess.run([f"{lay.sbin}/govhost-unpack"], cwd=plant, capture_output=True,
                          text=True, env={"PYTHONPATH": str(plant), "PATH": "/usr/bin:/bin"})
    assert "planted" not in proc.stderr and "usage: govhost-unpack" in proc.stderr
    import marshal
    pyc = next(Path(f"{lay.lib}/versions/{version}/govhost_node/__pycache__").glob(
        "unpack.*.pyc"))
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename == f"{lay.lib}/versions/{version}/govhost_node/unpack.py"


def test_a_mariadb_holding_unit_databases_is_never_taken_for_a_distro_default(tmp_path):
    """A node that left `db` keeps serving its units' databases until the operator moves
    them: bootstrap disables MariaDB only where it holds none (`gh_*` in its data directory,
    a real directory, not a link someone planted)."""
    data = tmp_path / "mysql"
    assert not install.holds_databases(str(data))            # no MariaDB data at all
    (data / "mysql").mkdir(parents=True)
    (data / "performance_schema").mkdir()
    assert not install.holds_databases(str(data))            # MariaDB's own only
    (data / "gh_elsewhere").symlink_to(tmp_path)
    assert not install.holds_databases(str(data))
    (data / "gh_jiaoyu").mkdir()
    assert install.holds_databases(str(data))
