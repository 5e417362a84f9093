"""The rules of `govhost security check` (pure), and the door expectations they judge by
held against the firewall that is really rendered."""
from __future__ import annotations

import datetime
import ipaddress
import pwd
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core import paths
from controlplane.security import findings as rules
from controlplane.security.findings import Door, Served
from controlplane.sites import firewall
from controlplane.sites.waf import NotBlocking
from tests.unit.sites.test_firewall import _hosts  # the same three nodes and roles

# -- doors -------------------------------------------------------------------------------

def _door(expected: bool, result: str) -> Door:
    return Door("n1", 9100, "192.0.2.99", "public", expected, result)


def test_a_door_open_that_must_be_closed_is_critical_and_one_closed_that_must_be_open_warns():
    crit = rules.doors([_door(False, "open")], firewall=True)
    assert [(f.severity, f.where) for f in crit] == [("critical", "n1:9100")]
    assert "govhost apply" in crit[0].todo
    no_fw = rules.doors([_door(False, "open")], firewall=False)
    assert "add `firewall:`" in no_fw[0].todo
    warn = rules.doors([_door(True, "dropped")], firewall=True)
    assert [f.severity for f in warn] == ["warning"]
    refused = rules.doors([_door(False, "refused")], firewall=True)
    assert [f.severity for f in refused] == ["warning"]


def test_doors_as_they_should_be_give_nothing():
    assert rules.doors([_door(True, "open"), _door(True, "refused"), _door(False, "dropped")],
                       firewall=True) == []


# -- sshd --------------------------------------------------------------------------------

OPERATOR = {"port": ["22", "2222"], "passwordauthentication": ["no"],
            "permitemptypasswords": ["no"], "kbdinteractiveauthentication": ["no"],
            "permitrootlogin": ["without-password"], "x11forwarding": ["no"],
            "maxauthtries": ["6"], "allowtcpforwarding": ["yes"], "forcecommand": ["none"],
            "chrootdirectory": ["none"]}
UNIT = {**OPERATOR, "forcecommand": ["internal-sftp -d /upload -P symlink,hardlink"],
        "chrootdirectory": ["%h"], "allowtcpforwarding": ["no"]}
GOOD = {"operator@22": OPERATOR, "unit@22": {**UNIT, "denygroups": ["govhost-sftp"]},
        "operator@2222": {**OPERATOR, "allowgroups": ["govhost-sftp"]},
        "unit@2222": {**UNIT, "allowgroups": ["govhost-sftp"]}}


def test_a_node_with_keys_only_sshd_and_confined_units_gives_nothing():
    assert rules.sshd("n1", GOOD, 22, 2222) == []


def test_a_unit_sftp_that_may_make_links_is_critical():
    for force in ("internal-sftp -d /upload", "internal-sftp -d /upload -P symlink",
                  "internal-sftp -P hardlink -d /upload"):
        loose = {**GOOD, "unit@2222": {**UNIT, "forcecommand": [force],
                                       "allowgroups": ["govhost-sftp"]}}
        got = {(f.severity, f.where, f.what) for f in rules.sshd("n1", loose, 22, 2222)}
        assert ("critical", "n1 unit@2222",
                "a unit's SFTP account may make links in its upload area") in got, force
    tight = {**GOOD, "unit@2222": {**UNIT, "forcecommand": ["internal-sftp -P symlink,rename"
                                                            ",hardlink -d /upload"],
                                   "allowgroups": ["govhost-sftp"]}}
    assert rules.sshd("n1", tight, 22, 2222) == []


def test_links_in_upload_areas_are_named_with_what_to_do():
    got = rules.upload_links("n2", [{"unit": "jiaoyu", "path": "docs", "kind": "symlink",
                                     "target": "/etc/cron.d"},
                                    {"unit": "chahe", "path": "a.html", "kind": "hardlink",
                                     "target": ""}])
    assert [(f.severity, f.area, f.where) for f in got] == [
        ("critical", "uploads", "n2 jiaoyu:docs"), ("critical", "uploads", "n2 chahe:a.html")]
    assert "pointing to /etc/cron.d" in got[0].what
    assert "rm /srv/govhost/sites/jiaoyu/upload/docs" in got[0].todo
    assert rules.upload_links("n2", []) == []


def test_password_logins_root_passwords_and_a_missing_port_are_each_named():
    bad = {**OPERATOR, "passwordauthentication": ["yes"], "permitrootlogin": ["yes"],
           "x11forwarding": ["yes"], "maxauthtries": ["10"], "port": ["22"]}
    got = {(f.severity, f.where, f.what)
           for f in rules.sshd("n1", {"operator@22": bad}, 22, 2222)}
    assert got == {("critical", "n1 operator@22", "sshd passwordauthentication is yes"),
                   ("critical", "n1 operator@22", "sshd permitrootlogin is yes"),
                   ("warning", "n1 operator@22", "sshd x11forwarding is yes"),
                   ("warning", "n1 operator@22", "sshd maxauthtries is 10"),
                   ("warning", "n1", "sshd does not listen on port(s) 2222")}


def test_a_unit_account_not_confined_or_on_the_operators_port_is_named():
    loose = {**GOOD, "unit@2222": {**OPERATOR, "allowgroups": ["govhost-sftp"]},
             "unit@22": UNIT, "operator@2222": OPERATOR}
    got = {(f.severity, f.where, f.what) for f in rules.sshd("n1", loose, 22, 2222)}
    assert ("critical", "n1 unit@2222",
            "a unit's account is not confined to chrooted SFTP") in got
    assert ("critical", "n1 unit@2222",
            "a unit's account may forward TCP connections") in got
    assert ("warning", "n1 unit@22",
            "units' accounts may log in on the operators' SSH port") in got
    assert ("warning", "n1 operator@2222",
            "operators may log in on the units' public SFTP port") in got


def test_sshd_that_cannot_be_read_is_a_warning_not_a_pass():
    got = rules.sshd("n1", {"error": ["sshd: not found"]}, 22, 22)
    assert [f.severity for f in got] == ["warning"] and "sshd: not found" in got[0].what
    got = rules.sshd("n1", {"operator@22": {"error": ["bad config"]}}, 22, 22)
    assert [f.severity for f in got] == ["warning", "warning"]     # and the port unknown


# -- secrets -----------------------------------------------------------------------------

def test_a_planted_world_readable_key_is_critical_with_the_chmod_to_run():
    entries = [{"path": "/etc/govhost/metrics/node.key", "mode": "0644", "owner": "root",
                "want_owner": "root"},
               {"path": "/etc/ssh/ssh_host_ed25519_key", "mode": "0600", "owner": "root",
                "want_owner": "root"}]
    got = rules.secrets("n2", entries)
    assert len(got) == 1
    assert got[0].severity == "critical"
    assert got[0].where == "n2:/etc/govhost/metrics/node.key"
    assert got[0].todo.startswith("chmod 600 /etc/govhost/metrics/node.key")


def test_group_readable_counts_and_a_wrong_owner_warns():
    got = rules.secrets("n1", [{"path": "/srv/govhost/sites/a/var/db.json", "mode": "0640",
                                "owner": "root", "want_owner": "u-a"}])
    assert sorted(f.severity for f in got) == ["critical", "warning"]
    assert any("chown u-a" in f.todo for f in got)


# -- tls ---------------------------------------------------------------------------------

def test_tls_findings_per_fault():
    served = [Served("a.gov.cn", "n1", days_left=80),
              Served("b.gov.cn", "n1", error="connection refused"),
              Served("c.gov.cn", "n1", covers=False, days_left=80),
              Served("d.gov.cn", "n1", days_left=-1),
              Served("e.gov.cn", "n1", days_left=13.5),
              Served("f.gov.cn", "n1", days_left=80, old_protocols=("TLS 1.0",))]
    got = {(f.where.split("@")[0], f.severity) for f in rules.tls(served)}
    assert got == {("b.gov.cn", "critical"), ("c.gov.cn", "critical"),
                   ("d.gov.cn", "critical"), ("e.gov.cn", "warning"),
                   ("f.gov.cn", "critical")}


# -- waf and updates ---------------------------------------------------------------------

def test_waf_off_and_stated_detect_warn_units_waiting_for_launch_are_one_note():
    today = datetime.date(2026, 12, 4)
    got = rules.waf([NotBlocking("a", "off", "off"),
                     NotBlocking("b", "detect", "before-launch"),
                     NotBlocking("c", "detect", "stated", "the exam form's rich text",
                                 datetime.date(2026, 12, 18)),
                     NotBlocking("e", "detect", "before-launch")], today)
    by_unit = {f.where: f for f in got}
    assert set(by_unit) == {"a", "b, e", "c"}
    assert by_unit["a"].severity == "warning" and "waf replay" in by_unit["a"].todo
    assert by_unit["b, e"].severity == "info"
    assert by_unit["b, e"].what == "WAF detecting only until launch (2 units)"
    assert by_unit["c"].severity == "warning"
    assert by_unit["c"].what == ("WAF detecting only until 2026-12-18 (14 days left): "
                                 "the exam form's rich text")


def test_updates_pending_and_reboot_say_which_command_to_run():
    got = rules.updates("n2", 3, True)
    assert [f.severity for f in got] == ["warning", "warning"]
    assert "govhost node upgrade n2" in got[0].todo
    assert "govhost node reboot n2" in got[1].todo
    assert rules.updates("n2", 0, False) == []
    assert [f.severity for f in rules.updates("n2", None, False)] == ["info"]


def test_summary_counts_every_severity():
    fs = rules.doors([_door(False, "open"), _door(True, "dropped")], True)
    assert rules.summary(fs) == {"critical": 1, "warning": 1, "info": 0}


# -- expectations against the rendered firewall ------------------------------------------

def _accepts(text: str, source: str, port: int) -> bool:
    """What the rendered rules do with a new TCP connection to the node's own address from
    `source` on `port`: the first `accept` that matches, else the final drop. A small reader
    of exactly the rule forms firewall.render writes (the meter only drops floods)."""
    sets: dict[str, list] = {}
    for name, body in re.findall(r"set (\w+) \{ type \w+; flags interval;(.*)\}\n", text):
        elems = re.search(r"elements = \{ ([^}]*) \}", body)
        sets[name] = ([ipaddress.ip_network(e.strip()) for e in elems.group(1).split(",")]
                      if elems else [])
    addr = ipaddress.ip_address(source)
    fam = "4" if addr.version == 4 else "6"
    for line in text.splitlines():
        m = re.fullmatch(r"\s*tcp dport (\{ [\d, ]+ \}|\d+)(?: ip6? saddr @(\w+))? accept", line)
        if not m:
            continue
        ports = {int(p) for p in re.findall(r"\d+", m.group(1))}
        if port not in ports:
            continue
        if m.group(2) is None:
            return True
        if m.group(2).endswith(fam) and any(addr in n for n in sets[m.group(2)]):
            return True
    return False


SOURCES = ["192.0.2.10", "192.0.2.11", "198.51.100.7", "203.0.113.1", "203.0.113.2",
           "203.0.113.3", "8.8.4.4"]


@settings(max_examples=200, deadline=None)
@given(node=st.integers(0, 2), source=st.sampled_from(SOURCES),
       port=st.sampled_from([22, 2222, 80, 443, paths.NODE_EXPORTER_PORT, paths.AGENT_PORT,
                             paths.SEARCH_PORT, paths.MESSAGES_PORT, 3306, 5432]),
       db=st.lists(st.sampled_from(["203.0.113.1/32", "203.0.113.2/32"]), unique=True))
def test_the_expectation_is_what_the_rendered_rules_do(node, source, port, db):
    hosts = _hosts()
    n = hosts.nodes[node]
    text = firewall.render(hosts, n, db).decode()
    assert firewall.allowed(hosts, n, db, source, port) == _accepts(text, source, port)


def test_the_matrix_by_name():
    """The doors an operator reads in the issue: public sees web, SFTP; management sees SSH
    and metrics; the db only from PHP replicas; the backup SSH only from nodes."""
    hosts = _hosts()
    n1, n2, n3 = hosts.nodes
    db = ["203.0.113.1/32"]
    public, mgmt = "8.8.4.4", "198.51.100.7"

    def a(node, source, port):
        return firewall.allowed(hosts, node, db, source, port)

    assert a(n1, public, 443) and a(n1, public, 80) and a(n1, public, 2222)
    assert not a(n1, public, 22) and not a(n1, public, 9100) and not a(n1, public, 9273)
    assert a(n1, mgmt, 22) and a(n1, mgmt, 9100) and a(n1, mgmt, 9273)
    assert not a(n3, public, 443) and a(n3, mgmt, 443)
    assert a(n2, "203.0.113.1", 3306) and not a(n2, "203.0.113.3", 3306)
    assert not a(n2, mgmt, 3306) and not a(n2, public, 3306)
    assert a(n1, "203.0.113.3", 22) and not a(n2, "203.0.113.3", 22)
    assert firewall.checked_ports(hosts) == tuple(sorted(
        {22, 2222, 80, 443, paths.NODE_EXPORTER_PORT, paths.AGENT_PORT, paths.SEARCH_PORT,
         paths.MESSAGES_PORT, 3306}))
    # the peers' door of the message service: the cluster's nodes only
    assert a(n1, "203.0.113.2", paths.MESSAGES_PORT)
    assert not a(n1, public, paths.MESSAGES_PORT) and not a(n1, mgmt, paths.MESSAGES_PORT)


def test_a_console_running_as_root_is_critical_and_found_by_its_command_line(tmp_path):
    """A console from before the split (one process, any account), a web process as root
    or as its broker's account are critical; a web process as an account other than
    govhost-console is a warning; a broker as root with its web process as govhost-console
    is what is meant. Found however it was started (govhost, python -m cli)."""
    from controlplane.security import check
    web = paths.CONSOLE_WEB_NAME
    me = pwd.getpwnam(paths.CONSOLE_ACCOUNT).pw_uid
    for pid, ppid, uid, name, argv in (
            (101, 1, 0, "govhost", ["/srv/.venv/bin/python", "/srv/.venv/bin/govhost",
                                    "--inventory", "inv", "console", "--http"]),
            (102, 1, 0, "govhost", ["/usr/bin/govhost", "console", "install"]),
            (103, 1, 998, "govhost", ["govhost", "console"]),          # unsplit, not root
            (104, 1, 0, "nginx", ["nginx: master process"]),
            (105, 1, 0, "govhost", ["govhost", "console"]),            # the broker, root
            (106, 105, me, web, ["govhost", "console"]),               # its web process
            (107, 1, 0, "python", ["python3", "-m", "cli", "--inventory", "install",
                                   "console"]),
            (108, 107, 0, web, ["python3", "-m", "cli", "console"]),   # a web process as root
            (109, 1, 0, "govhost", ["govhost", "console"]),
            (110, 109, 0 if me != 65534 else 1, web, ["govhost", "console"])):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (d / "status").write_text(f"Name:\t{name}\nPPid:\t{ppid}\n"
                                  f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
                                  f"Gid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    # 110 runs as nobody: another account than the console's own
    (tmp_path / "110" / "status").write_text(
        f"Name:\t{web}\nPPid:\t109\nUid:\t65534\t65534\t65534\t65534\n"
        "Gid:\t65534\t65534\t65534\t65534\n")
    found = check.console_processes(tmp_path)
    assert [(p["pid"], p["part"]) for p in found] == [
        (101, "broker"), (103, "broker"), (105, "broker"), (106, "web"), (107, "broker"),
        (108, "web"), (109, "broker"), (110, "web")]
    got = rules.console(found)
    assert [(f.severity, f.where, f.what) for f in got] == [
        ("critical", "control pid 101", "govhost console runs as root"),
        ("critical", "control pid 103", "govhost console runs without a web process of its own"),
        ("critical", "control pid 108", "the console's web process runs as root or as its broker"),
        ("warning", "control pid 110", "the console's web process runs as nobody, not "
                                       f"{paths.CONSOLE_ACCOUNT}")]