"""PHP tenants on the real lab: php-fpm pools running as the tenant, MariaDB per tenant on the
db node, and isolation between tenants that share a node. Real php-fpm, real MariaDB, real
nginx, real SFTP."""
import base64
import json
import shutil
from urllib.parse import quote

import pytest

from controlplane.core import accounts
from tests.helpers import example_inventory

from .conftest import govhost, with_county_keys
from .test_apply_lab import NODES, apply_json, on_node
from .test_tenants_lab import _key, page, reset_content, sftp, upload

# renshe's script: its own DB, then everything another tenant has that it might guess at.
PROBE_PHP = r"""<?php
header("Content-Type: application/json");
$me = json_decode(file_get_contents("/srv/govhost/sites/renshe/var/db.json"), true);
$db = new mysqli($me["host"], $me["user"], $me["password"], $me["database"], $me["port"]);
$db->query("CREATE TABLE IF NOT EXISTS visits (id INT AUTO_INCREMENT PRIMARY KEY)");
$db->query("INSERT INTO visits () VALUES ()");
$out = ["user" => posix_getpwuid(posix_geteuid())["name"],
        "visits" => (int)$db->query("SELECT COUNT(*) FROM visits")->fetch_row()[0],
        "memory_limit" => ini_get("memory_limit"),
        "upload_max_filesize" => ini_get("upload_max_filesize"),
        "open_basedir" => ini_get("open_basedir"),
        "read" => [], "exec" => function_exists("shell_exec") && is_callable("shell_exec")];
foreach (json_decode(base64_decode($_GET["paths"] ?? ""), true) ?? [] as $p) {
    $out["read"][$p] = @file_get_contents($p) !== false || @scandir($p) !== false;
}
// Another tenant's database, with renshe's own credentials.
try {
    $other = new mysqli($me["host"], $me["user"], $me["password"], "gh_zhujian", $me["port"]);
    $out["other_db"] = true;
} catch (mysqli_sql_exception $e) {
    $out["other_db"] = false;
}
// Writing into files/ is allowed (that is what it is for); running PHP from there is not.
file_put_contents("/srv/govhost/sites/renshe/files/evil.php", "<?php echo 'ran';");
file_put_contents("/srv/govhost/sites/renshe/files/note.txt", "written by php");
echo json_encode($out);
"""


@pytest.fixture(scope="module")
def php(lab_cluster, tmp_path_factory, county_keys):
    """The example county with SFTP keys for the two PHP tenants; zhujian on every node, so it
    shares a node with renshe whatever the placement."""
    root = tmp_path_factory.mktemp("php")
    inv = root / "inventory"
    with_county_keys(example_inventory(inv), county_keys)
    keys = {n: _key(root, n) for n in ("renshe", "zhujian")}
    for name in keys:
        with (inv / "tenants" / f"{name}.yaml").open("a") as f:
            f.write(f"sftp: {{keys: ['{keys[name][1]}']}}\n")
    with (inv / "tenants" / "zhujian.yaml").open("a") as f:
        f.write("replicas: 3\n")
    for t in ("renshe", "zhujian"):
        reset_content(t)
    apply_json(inv)
    placement = json.loads(govhost(inv, "plan", "--json", check=True).stdout)["placement"]
    tn = {"inv": inv, "keys": {n: k[0] for n, k in keys.items()}, "placement": placement,
          "root": root}
    upload(tn, "zhujian", {"index.php": "<?php echo 'zhujian ' . getmypid();",
                           "config.php": "<?php $secret = 'zhujian-db-password';"})
    upload(tn, "renshe", {"index.php": PROBE_PHP, "uploads/shell.php.txt": "not code"})
    for t in ("renshe", "zhujian"):
        proc = govhost(inv, "publish", t, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    yield tn
    for t in ("renshe", "zhujian"):
        reset_content(t)


def _run(tn, paths: list[str], node: str = "n1") -> dict:
    # The hostile unit's own code reads the paths: encoded, as such code would take them,
    # since the WAF in front (blocking by default) is not the door this module tries.
    arg = base64.b64encode(json.dumps(paths).encode()).decode()
    code, body = page("renshe", NODES[node], "/index.php?paths=" + quote(arg))
    assert code == 200, body
    return json.loads(body)


def test_php_site_runs_as_its_user_through_every_node_and_reaches_its_database(php):
    assert php["placement"]["renshe"] == [php["placement"]["renshe"][0]]   # PHP default: 1
    seen = []
    for node in NODES:                       # the other nodes forward to the replica
        out = _run(php, [], node)
        assert out["user"] == accounts.user_name("renshe")
        seen.append(out["visits"])
    assert seen == sorted(seen) and len(set(seen)) == 3         # each request wrote a row
    assert out["memory_limit"] == "128M" and out["upload_max_filesize"] == "20M"
    assert out["open_basedir"] == "/srv/govhost/sites/renshe/"
    code, body = page("renshe", NODES["n2"], "/")                # / runs index.php too
    assert code == 200 and json.loads(body)["user"] == "gh-renshe"


def test_php_cannot_read_another_tenants_files_or_database(php):
    node = php["placement"]["renshe"][0]
    assert node in php["placement"]["zhujian"]                  # they share this node
    guesses = ["/srv/govhost/sites/zhujian/var/db.json",
               "/srv/govhost/sites/zhujian/current/config.php",
               "/srv/govhost/sites/zhujian/releases",
               "/srv/govhost/sites/zhujian/upload/config.php",
               "/etc/passwd", "/etc/govhost/current/tenants.json"]
    out = _run(php, guesses, node)
    assert out["read"] == {p: False for p in guesses}
    assert out["exec"] is False and out["other_db"] is False
    # Not only open_basedir: the filesystem itself refuses renshe's user, so code that found a
    # way around PHP's checks would still be stopped.
    address = NODES[node]
    for path in guesses[:4]:
        res = on_node(address, f"runuser -u gh-renshe -- cat {path} >/dev/null 2>&1 "
                               f"|| runuser -u gh-renshe -- ls {path} >/dev/null 2>&1; echo $?")
        assert res != "0", f"gh-renshe can read {path}"
    # ...while nginx still serves zhujian's pages, and its PHP runs as zhujian
    code, body = page("zhujian", address, "/")
    assert code == 200 and body.startswith("zhujian ")


def test_php_never_runs_from_the_writable_files_area(php):
    out = _run(php, [])
    assert out["user"] == "gh-renshe"
    for node, address in NODES.items():
        code, body = page("renshe", address, "/files/evil.php")
        assert code == 403 and "ran" not in body, node
        code, body = page("renshe", address, "/files/note.txt")
        assert (code, body) == (200, "written by php"), node
        # a file that only looks like PHP is content, not code
        code, body = page("renshe", address, "/uploads/shell.php.txt")
        assert (code, body) == (200, "not code"), node
        # PATH_INFO tricks do not run a non-PHP file as PHP
        code, _ = page("renshe", address, "/uploads/shell.php.txt/x.php")
        assert code == 404, node


def test_credentials_reach_the_tenant_only_and_the_pool_socket_only_nginx(php):
    node = NODES[php["placement"]["renshe"][0]]
    mode = on_node(node, "stat -c '%a %U' /srv/govhost/sites/renshe/var/db.json "
                         "/run/govhost/php/renshe.sock /etc/govhost/current/tenants.json")
    assert mode.splitlines() == ["600 gh-renshe", "600 www-data", "600 root"]
    dest = php["root"] / "db.json"
    res = sftp(php, "renshe", "renshe", f"get /var/db.json {dest}\n")
    assert res.returncode == 0, res.stderr
    creds = json.loads(dest.read_text())
    assert creds["database"] == "gh_renshe" and creds["host"] == NODES["n2"]
    # zhujian's own account on the same node cannot fetch renshe's credentials
    res = sftp(php, "zhujian", "zhujian",
               f"get /srv/govhost/sites/renshe/var/db.json {php['root'] / 'x'}\n"
               f"get ../renshe/var/db.json {php['root'] / 'y'}\n")
    assert not (php["root"] / "x").exists() and not (php["root"] / "y").exists()
    # The database's view: renshe's user, from the replica nodes only, on its own database.
    grants = on_node(NODES["n2"], "mariadb -N -e \"SELECT CONCAT(User,'@',Host) FROM mysql.user "
                                  "WHERE User='gh_renshe' ORDER BY Host\"")
    allowed = {NODES[n] for n in php["placement"]["renshe"]}
    assert set(grants.split()) == {f"gh_renshe@{h}" for h in allowed}


def test_a_second_apply_changes_nothing_and_a_stopped_php_fpm_is_reported_and_restarted(php):
    again = apply_json(php["inv"])
    assert {n["result"] for n in again["nodes"]} == {"unchanged"}
    status = json.loads(govhost(php["inv"], "status", "--json", check=True).stdout)
    rows = {n["node"]: n for n in status["nodes"]}
    for node in php["placement"]["renshe"] + php["placement"]["zhujian"]:
        assert rows[node]["php_running"] is True
    assert not [p for p in status["problems"] if "PHP" in p["what"]]
    # php-fpm stopped by hand: status says so, and the next apply starts it again
    address = NODES[php["placement"]["renshe"][0]]
    on_node(address, "kill $(cat /run/govhost-php-fpm.pid); sleep 0.5")
    status = json.loads(govhost(php["inv"], "status", "--json").stdout)
    assert any("PHP-FPM is not running" in p["what"] for p in status["problems"])
    healed = {n["node"]: n["result"] for n in apply_json(php["inv"])["nodes"]}
    assert healed[php["placement"]["renshe"][0]] != "unchanged"
    assert _run(php, [])["user"] == "gh-renshe"


def test_a_changed_pool_limit_is_live_after_apply_and_back_after_the_next(php, tmp_path):
    inv = tmp_path / "inventory"
    shutil.copytree(php["inv"], inv)
    manifest = inv / "tenants" / "renshe.yaml"
    manifest.write_text(manifest.read_text().replace("memory_mb: 128", "memory_mb: 96"))
    apply_json(inv)                                       # exit 0: converged
    assert _run(php, [])["memory_limit"] == "96M"          # php-fpm re-read its pools
    apply_json(php["inv"])
    assert _run(php, [])["memory_limit"] == "128M"


def test_removed_php_tenant_keeps_its_database_in_the_archive(php):
    inv = php["inv"]
    _run(php, [])                                           # at least one row in visits
    manifest = inv / "tenants" / "renshe.yaml"
    kept = manifest.read_text()
    manifest.unlink()
    try:
        apply_json(inv)
        # the manifest is gone: its database user is dropped at once, the data is kept
        users = on_node(NODES["n2"], "mariadb -N -e \"SELECT COUNT(*) FROM mysql.user "
                                     "WHERE User='gh_renshe'\"")
        assert users == "0"
        res = json.loads(govhost(inv, "unit", "remove", "renshe", "--yes", "--json",
                                 check=True).stdout)
        db = res["nodes"]["n2"]["database"]
        assert db["removed"] == "gh_renshe"
        dump = on_node(NODES["n2"], f"stat -c %a {db['archive']}; zcat {db['archive']} | "
                                    "grep -c 'INSERT INTO `visits`'")
        mode, inserts = dump.split()
        assert mode == "600" and int(inserts) >= 1
        assert on_node(NODES["n2"], "mariadb -N -e \"SHOW DATABASES LIKE 'gh_renshe'\"") == ""
        # zhujian, on the same database server, is untouched
        assert page("zhujian", NODES["n1"], "/")[1].startswith("zhujian ")
    finally:
        manifest.write_text(kept)
        apply_json(inv)
