"""PHP pools, tenant databases and the cluster secret: pure rendering, plus the real
`php-fpm -t` on the rendered pools."""
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from controlplane.core import accounts, inventory, secrets
from controlplane.core.errors import ManifestError
from controlplane.sites.apply import pack
from controlplane.sites.plan import make_plan
from tests.helpers import hosts, tenant, write_inventory


def _county(root: Path, db_role: bool = True, **php_extra) -> Path:
    doc = hosts(3)
    if db_role:
        doc["nodes"][1]["roles"] = ["web", "db"]
    return write_inventory(root, [
        tenant("renshe", site={"type": "php", "database": True,
                               "php": {"max_children": 3, "memory_mb": 96, "upload_mb": 8}},
               **php_extra),
        tenant("wiki", site={"type": "php"}),
        tenant("jiaoyu"),
    ], host_doc=doc)


def test_php_pool_rendered_on_its_replica_only_and_runs_as_the_tenant(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv"))
    plan = make_plan(inv, frozenset(), {}, {})
    assert len(plan.placement["renshe"]) == 1 and len(plan.placement["jiaoyu"]) == 2
    home = plan.placement["renshe"][0]
    for node, rel in plan.releases.items():
        assert ("php-fpm/renshe.conf" in rel.files) == (node == home)
        assert ("php-fpm.conf" in rel.files) == any(
            n.startswith("php-fpm/") for n in rel.files)
        vhost = rel.files["vhosts/renshe.conf"].decode()
        if node == home:
            assert "fastcgi_pass unix:/run/govhost/php/renshe.sock;" in vhost
            assert "alias /srv/govhost/sites/renshe/files/;" in vhost
            assert "client_max_body_size 8m;" in vhost
        else:
            assert "fastcgi" not in vhost and "proxy_pass http://govhost_t_renshe" in vhost
        assert "fastcgi" not in rel.files["vhosts/jiaoyu.conf"].decode()
    pool = plan.releases[home].files["php-fpm/renshe.conf"].decode()
    for line in ("user = gh-renshe", "group = gh-renshe", "listen.owner = www-data",
                 "listen.mode = 0600", "pm = ondemand", "pm.max_children = 3",
                 "php_admin_value[memory_limit] = 96M", "php_admin_value[post_max_size] = 8M",
                 "php_admin_value[open_basedir] = /srv/govhost/sites/renshe/"):
        assert line in pool.splitlines(), line


def test_databases_only_on_the_db_node_with_replica_hosts_and_derived_passwords(tmp_path):
    root = _county(tmp_path / "inv")
    inv = inventory.load(root)
    plan = make_plan(inv, frozenset(), {}, {})
    assert [n for n, r in plan.releases.items() if "databases.json" in r.files] == ["n2"]
    import json
    spec = json.loads(plan.releases["n2"].files["databases.json"])
    assert spec["bind"] == "10.77.0.12"
    (entry,) = spec["databases"]                     # wiki has no database
    addresses = {f"10.77.0.1{n[1:]}" for n in plan.placement["renshe"]}
    assert entry["database"] == entry["user"] == "gh_renshe"
    assert set(entry["hosts"]) == addresses
    assert re.fullmatch(r"[a-z2-7]{32}", entry["password"])
    # the replica's tenants.json hands the same credentials to the tenant
    home = plan.placement["renshe"][0]
    spec = json.loads(plan.releases[home].files["tenants.json"])
    renshe = next(t for t in spec["tenants"] if t["name"] == "renshe")
    assert renshe["db"]["password"] == entry["password"] and renshe["php"] is True
    # stable across loads, different per tenant and per secret
    again = inventory.load(root)
    assert accounts.db_credentials(again, again.tenant("renshe"))["password"] == entry["password"]
    assert secrets.derive(inv.secret, "mariadb:wiki") != entry["password"]
    assert secrets.derive(b"x" * 64, "mariadb:renshe") != entry["password"]


def test_client_hosts_on_real_addresses_are_exactly_the_replicas():
    assert accounts._client_hosts(["10.20.0.11", "10.20.0.12"]) == ["10.20.0.11", "10.20.0.12"]
    # no loopback added for anyone: the lab's nodes have their own addresses too
    assert accounts._client_hosts(["10.77.0.13", "10.77.0.13"]) == ["10.77.0.13"]


def test_release_archive_keeps_secrets_root_only(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv"))
    rel = make_plan(inv, frozenset(), {}, {}).releases["n2"]
    with tarfile.open(fileobj=io.BytesIO(pack(rel)), mode="r:gz") as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["tenants.json"] == modes["databases.json"] == 0o600
    assert modes["nginx.conf"] == 0o644


def test_database_without_a_db_node_is_refused_naming_file_and_field(tmp_path):
    with pytest.raises(ManifestError) as exc:
        inventory.load(_county(tmp_path / "inv", db_role=False))
    text = str(exc.value)
    assert "tenants/renshe.yaml" in text and "site.database" in text and "'db' role" in text
    assert not (tmp_path / "inv" / ".govhost" / "secret").exists()   # nothing written


def test_php_replicas_default_to_one_unless_asked(tmp_path):
    inv = inventory.load(_county(tmp_path / "inv", replicas=2))
    assert inv.replicas(inv.tenant("renshe")) == 2 and inv.replicas(inv.tenant("wiki")) == 1


def test_long_names_fit_mariadb_and_stay_unique():
    a, b = "a" * 62 + "x", "a" * 62 + "y"
    assert len(accounts.db_name(a)) <= 64 and accounts.db_name(a) != accounts.db_name(b)
    assert accounts.db_name("shui-li") == "gh_shui_li"


def test_secret_file_is_private_created_once_and_refused_when_readable(tmp_path):
    state = tmp_path / "state"
    first = secrets.ensure(state)
    path = state / secrets.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and secrets.ensure(state) == first
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        secrets.ensure(state)


@pytest.mark.skipif(os.geteuid() != 0 or not any(Path("/usr/sbin").glob("php-fpm*")),
                    reason="needs root and php-fpm (scripts/setup.sh installs it)")
def test_php_fpm_accepts_the_rendered_pools(tmp_path):
    """The real `php-fpm -t`, as govhost-node stage runs it, on the rendered release (with
    the pool users swapped for accounts that exist on this machine)."""
    inv = inventory.load(_county(tmp_path / "inv"))
    plan = make_plan(inv, frozenset(), {}, {})
    home = plan.placement["renshe"][0]
    dest = tmp_path / "release"
    for name, data in plan.releases[home].files.items():
        if name == "php-fpm.conf" or name.startswith("php-fpm/"):
            text = data.decode().replace("= gh-renshe", "= nobody").replace(
                "= gh-wiki", "= nobody").replace("group = nobody", "group = nogroup")
            text = text.replace("/run/govhost/php/", f"{tmp_path}/sock-")
            text = re.sub(r"(?m)^chdir = .*$", f"chdir = {tmp_path}", text)
            text = text.replace("pid = /run/govhost-php-fpm.pid", f"pid = {tmp_path}/fpm.pid")
            text = text.replace("/var/log/govhost/php-fpm.log", f"{tmp_path}/fpm.log")
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(text)
    fpm = sorted(Path("/usr/sbin").glob("php-fpm*"))[-1]
    out = subprocess.run([str(fpm), "-t", "-p", str(dest), "-y", str(dest / "php-fpm.conf")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr
    shutil.rmtree(dest)
