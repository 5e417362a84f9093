"""The node's side of a config release, as the control machine's playbooks run it:

- `receive ID [BASE]`: the release arrives on stdin as a tar.gz, whole or only what changed
  since release BASE (whose files are hard-linked in), and every file is checked against
  the release's digest list;
- `stage ID`: tenant accounts and log directories, then `nginx -t` (and php-fpm -t, nft -c,
  keepalived -t where the release has them) of the received release; only then is it
  complete;
- `activate ID [ADDR [KEEP]]`: `current` switches to ID atomically and the services follow
  it; with ADDR nginx is probed there, with KEEP old releases are pruned;
- `rollback`, `prune`, `probe`, `status`.

A release refused by a check never becomes complete, so no node activates it
(exits.NGINX_REFUSED); a delta whose base is gone asks for the whole release
(exits.BASE_MISSING)."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

from govhost_node import digests, exits, firewall, services, vrrp
from govhost_node.files import write_json_shared
from govhost_node.layout import Layout
from govhost_node.system import (
    NodeExit,
    active,
    alive,
    die,
    has,
    output,
    same_file,
    say,
    under_systemd,
)

RELEASE_ID = re.compile(r"[0-9a-f]{16}")
_TENANT = re.compile(r"[a-z0-9-]*")
_FLOATING_SYSCTL = (("ipv4/ip_nonlocal_bind", "1"), ("ipv4/conf/all/arp_ignore", "1"),
                    ("ipv4/conf/all/arp_announce", "2"))


def check_id(value: str | None) -> str:
    if not value or not RELEASE_ID.fullmatch(value):
        raise die(f"bad release id '{value or ''}'")
    return value


def current_id(lay: Layout) -> str:
    try:
        return os.path.basename(os.readlink(lay.current))
    except OSError:
        return "none"


def previous_id(lay: Layout) -> str:
    try:
        with open(lay.previous) as f:
            return f.read().strip() or "none"
    except OSError:
        return "none"


def intact(release: str, cache: str | None = None) -> bool:
    """Is a staged release still exactly what was shipped? (Files are shared between releases
    by hard links, so a file edited by hand on the node damages every release that has
    it.) `cache`: a file of each file's key when it last hashed right (digests.hashed); a
    file whose stat is the same is not read again. `status` checks the live
    release on every ask (a unit's console page, `govhost status`, each apply), and hashing
    the 12,700 files of a 5,000-unit county's release took 0.43 s of each (profiled on a lab
    node, stop 60)."""
    try:
        listed = digests.read(release)
    except (OSError, ValueError):
        return False
    if not listed:
        return False
    known: dict[str, list] = {}
    if cache is not None:
        try:
            with open(cache, encoding="utf-8") as f:
                loaded = json.load(f)
            known = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            known = {}
    fresh: dict[str, list] = {}
    now = digests.now_ns()
    try:
        for rel, digest in listed.items():
            path = os.path.join(release, rel)
            if cache is None:
                if digests.file_sha256(path) != digest:
                    return False
                continue
            key = digests.hashed(path, known.get(path))
            if key is None or key[4] != digest:
                return False
            if digests.settled(key, now):
                fresh[path] = key
    except OSError:
        return False
    if cache is not None and fresh != known:
        try:
            write_json_shared(cache, fresh)     # two asks at once: the last one's stands
        except OSError:
            pass                                # only a shortcut: the next ask hashes again
    return True


def _drain_stdin() -> None:
    while sys.stdin.buffer.read(1 << 16):
        pass


def _files(top: str) -> set[str]:
    out = set()
    for d, _, names in os.walk(top):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.add(os.path.relpath(p, top))
    return out


def receive(lay: Layout, release: str, base: str | None = None) -> None:
    check_id(release)
    dest, recv = f"{lay.releases}/{release}", f"{lay.releases}/.{release}.recv"
    if os.path.isfile(f"{dest}/.complete") and intact(dest):
        _drain_stdin()
        say(f"release {release} already staged")
        return
    shutil.rmtree(recv, ignore_errors=True)
    if base:
        check_id(base)
        if not os.path.isfile(f"{lay.releases}/{base}/.complete") or base == release:
            _drain_stdin()
            raise NodeExit(f"base release {base} is not here", exits.BASE_MISSING)
        # Unchanged files cost a hard link; tar unlinks each file it replaces (never writes
        # through a link into the base release).
        subprocess.run(["cp", "-al", f"{lay.releases}/{base}", recv], check=True)
        for name in (".complete", "release-id.conf"):
            try:
                os.unlink(f"{recv}/{name}")
            except FileNotFoundError:
                pass
    else:
        os.makedirs(recv)
    r = subprocess.run(["tar", "-xz", "--unlink-first", "--no-same-owner", "-C", recv])
    if r.returncode != 0:
        raise NodeExit(None, r.returncode)
    listed_path = f"{recv}/{digests.NAME}"
    if not os.path.isfile(listed_path) or os.path.getsize(listed_path) == 0:
        raise die(f"release {release} arrived without its digest list")
    # Files the new release no longer has, then a check of every file it has.
    try:
        listed = digests.read(recv)
    except (OSError, ValueError):
        listed = None
    if listed is not None:
        for p in _files(recv) - set(listed) - {digests.NAME}:
            os.unlink(os.path.join(recv, p))
    if listed is None or not intact(recv):
        shutil.rmtree(recv, ignore_errors=True)
        if base:
            # A file of the base release was changed on this node: ask for the whole release.
            raise NodeExit(f"base release {base} was modified on this node",
                           exits.BASE_MISSING)
        raise die(f"release {release} does not match its digest list")
    say(f"received release {release}" + (f" (changes since {base})" if base else ""))


def _refuse(recv: str, details: str, message: str) -> NodeExit:
    """A check refused the release: it is removed, and no node activates it."""
    if details.strip():
        print(details.rstrip("\n"), file=sys.stderr, flush=True)
    shutil.rmtree(recv, ignore_errors=True)
    return NodeExit(message, exits.NGINX_REFUSED)


def _give_up(recv: str, message: str) -> NodeExit:
    shutil.rmtree(recv, ignore_errors=True)
    return die(message)


def _floating_sysctl(lay: Layout, recv: str, release: str) -> None:
    """nginx listens on every floating address before this node holds it; every floating
    address also sits on lo (vrrp.local), so ARP must be answered only for addresses on the
    asking interface, or every node would claim every address."""
    os.makedirs(lay.sysctl_dir, mode=0o755, exist_ok=True)
    conf = f"{lay.sysctl_dir}/60-govhost-floating.conf"
    with open(conf, "w") as f:
        f.write("net.ipv4.ip_nonlocal_bind = 1\nnet.ipv6.ip_nonlocal_bind = 1\n"
                "net.ipv4.conf.all.arp_ignore = 1\nnet.ipv4.conf.all.arp_announce = 2\n")
    subprocess.run(["sysctl", "-q", "-p", conf], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    for key, want in _FLOATING_SYSCTL:
        try:
            with open(f"{lay.proc_sys}/net/{key}") as f:
                have = f.read().strip()
        except OSError:
            have = None
        if have != want:
            raise _give_up(recv, f"release {release} has floating addresses but "
                                 f"net.{key.replace('/', '.')} cannot be set to {want} here")


def stage(lay: Layout, release: str) -> None:
    check_id(release)
    dest, recv = f"{lay.releases}/{release}", f"{lay.releases}/.{release}.recv"
    if not os.path.isdir(recv) and os.path.isfile(f"{dest}/.complete"):
        say(f"release {release} already staged")
        return
    if not os.path.isdir(recv):
        raise die(f"release {release} was not received")
    try:
        with open(f"{recv}/tenants.txt", encoding="utf-8") as f:
            tenants = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        raise die(f"release {release} has no readable tenants.txt") from None
    if tenants and tenants[-1] == "":
        tenants.pop()
    if not all(_TENANT.fullmatch(t) for t in tenants):
        raise die("bad tenant name in tenants.txt")
    os.makedirs(f"{lay.logs}/tenants", exist_ok=True)
    for t in tenants:
        os.makedirs(f"{lay.logs}/tenants/{t}", exist_ok=True)
    with open(f"{recv}/release-id.conf", "w") as f:
        f.write(f'location = /release {{\n    default_type text/plain;\n'
                f'    return 200 "{release}\\n";\n}}\n')
    # Accounts first: PHP-FPM pools name their users, and php-fpm -t wants them to exist.
    # (Adding accounts before activation is harmless; nothing serves them yet.)
    if os.path.isfile(f"{recv}/tenants.json"):
        r = subprocess.run([f"{lay.sbin}/govhost-tenants", "converge", f"{recv}/tenants.json"],
                           stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            raise _give_up(recv, f"tenant accounts for release {release} failed")
    if os.path.isfile(f"{recv}/php-fpm.conf"):
        fpm = services.php_fpm()
        if fpm is None:
            raise _give_up(recv, f"release {release} has PHP sites but php-fpm is not "
                                 "installed")
        rc, out = output([fpm, "-t", "-p", recv, "-y", f"{recv}/php-fpm.conf"])
        if rc != 0:
            details = "\n".join(line for line in out.splitlines()
                                if "test is successful" not in line)
            raise _refuse(recv, details, f"php-fpm -t refused release {release}")
    if os.path.isfile(f"{recv}/firewall.nft"):
        rc, out = output(["nft", "-c", "-f", f"{recv}/firewall.nft"])
        if rc != 0:
            raise _refuse(recv, out, f"nft -c refused the firewall of release {release}")
    if os.path.isfile(f"{recv}/keepalived.conf"):
        _floating_sysctl(lay, recv, release)
        if not has("keepalived"):
            raise _give_up(recv, f"release {release} has floating addresses but keepalived "
                                 "is not installed")
        rc, out = output(["keepalived", "-t", "-f", f"{recv}/keepalived.conf"])
        if rc != 0:
            raise _refuse(recv, out, "keepalived -t refused the floating addresses of "
                                     f"release {release}")
    waf = f"{recv}/waf/main.conf"
    if os.path.isfile(waf):
        # ModSecurity reads its rules by an absolute path (see sites/waf.py: main_path)
        live = f"{lay.root}/waf/main-{digests.file_sha256(waf)[:16]}.conf"
        if not same_file(waf, live):
            os.makedirs(os.path.dirname(live), exist_ok=True)
            shutil.copyfile(waf, f"{live}.new")
            os.chmod(f"{live}.new", 0o644)
            os.replace(f"{live}.new", live)
    rc, out = output(["nginx", "-t", "-c", f"{recv}/nginx.conf"])
    if rc != 0 or re.search(r"\[(warn|emerg|alert|crit)\]", out):
        details = "\n".join(line for line in out.splitlines()
                            if not re.search("syntax is ok|test is successful|test failed",
                                             line))
        raise _refuse(recv, details, f"nginx -t refused release {release}")
    open(f"{recv}/.complete", "w").close()
    # Replacing a damaged copy of a release that may be live: swap, never leave a gap.
    old = f"{lay.releases}/.{release}.old"
    if os.path.lexists(dest):
        os.rename(dest, old)
    os.rename(recv, dest)
    shutil.rmtree(old, ignore_errors=True)
    say(f"staged release {release}")


def switch_to(lay: Layout, release: str) -> None:
    tmp = f"{lay.root}/.current.new"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(f"releases/{release}", tmp)
    os.replace(tmp, lay.current)


def activate(lay: Layout, release: str, address: str | None = None,
             keep: str | None = None) -> None:
    check_id(release)
    if not os.path.isfile(f"{lay.releases}/{release}/.complete"):
        raise die(f"release {release} is not staged")
    prev = current_id(lay)
    if prev != release:
        tmp = f"{lay.root}/.previous.new"
        with open(tmp, "w") as f:
            f.write(f"{prev}\n")
        os.replace(tmp, lay.previous)
        switch_to(lay, release)
    services.db_sync(lay)
    services.php_sync(lay)
    services.reload_or_start_nginx(lay)
    services.backup_sync(lay)
    services.metrics_sync(lay)
    services.updates_sync(lay)
    firewall.sync(lay, current_id(lay))
    vrrp.sync(lay)
    services.install_logrotate(lay)
    say(f"activated release {release} (was {prev})")
    if address:
        probe(release, address)
        services.agents(lay, address)
    if keep:
        prune(lay, keep)


def _get(address: str, path: str, timeout: float) -> tuple[int | None, str]:
    conn = http.client.HTTPConnection(address.strip("[]"), 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "govhost-probe"})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None, ""
    finally:
        conn.close()


def probe(release: str, address: str, seconds: float = 60) -> None:
    """Wait until nginx on `address` serves `release`, and its portal answers: at most
    `seconds` in all (a node that accepts and never answers fails here, within the control
    machine's patience, and is rolled back). Bounded by time alone: a count of 500 tries ran
    out after about 10 s of quick answers, not the 60 s promised here."""
    check_id(release)
    got = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() <= deadline:
        status, body = _get(address, "/release", 2)
        got = body.strip() if status == 200 else ""
        if got == release:
            break
        time.sleep(0.02)
    if got != release:
        raise die(f"nginx on {address} serves release '{got or 'nothing'}', expected {release}")
    status, _ = _get(address, "/health", 5)
    if status != 200:
        raise die(f"probe of {address}/health answered {status if status else '000'}")
    say(f"release {release} live on {address}")


def rollback(lay: Layout) -> None:
    prev = previous_id(lay)
    if RELEASE_ID.fullmatch(prev) and os.path.isfile(f"{lay.releases}/{prev}/.complete"):
        switch_to(lay, prev)
        services.php_sync(lay)
        services.reload_or_start_nginx(lay)
        say(f"rolled back to release {prev}")
    else:
        raise die("no previous release to roll back to")


def prune(lay: Layout, keep: str | int = 5) -> None:
    """Keep the `keep` newest releases (never current or previous)."""
    if not str(keep).isdigit():
        raise die(f"prune: bad count '{keep}'")
    keep = int(keep)
    cur, prev = current_id(lay), previous_id(lay)
    try:
        names = os.listdir(lay.releases)
    except OSError:
        return
    ids = [n for n in names if RELEASE_ID.fullmatch(n)]
    ids.sort(key=lambda n: os.lstat(f"{lay.releases}/{n}").st_mtime, reverse=True)
    for n in ids[keep:]:
        if n not in (cur, prev):
            shutil.rmtree(f"{lay.releases}/{n}", ignore_errors=True)
    # Half-received releases of interrupted runs.
    for n in names:
        if n.startswith(".") and n.endswith(".recv"):
            shutil.rmtree(f"{lay.releases}/{n}", ignore_errors=True)


def boot_time() -> int:
    """When this machine booted: the start of its PID 1 (right in a container too, where the
    kernel's boot time is the host's)."""
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        with open("/proc/1/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return btime + start_ticks // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return 0


def status(lay: Layout) -> dict:
    """One line of JSON for the control machine: the live release and whether its files are
    intact, what runs, the firewall and the floating addresses."""
    systemd = under_systemd(lay)
    agent = active("govhost-agent") if systemd else alive(lay.pidfile("govhost-agent"))
    php = None
    if os.path.isfile(f"{lay.current}/php-fpm.conf"):
        php = alive(lay.pidfile(services.FPM_PIDFILE))
    cur = current_id(lay)
    try:
        with open(lay.bootstrap_version) as f:
            version = f.read().strip() or "none"
    except OSError:
        version = "none"
    floating, vrrp_on = None, False
    if os.path.isfile(f"{lay.current}/vrrp.json"):
        try:
            floating = vrrp.held(lay) or []
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
            floating = []
        vrrp_on = vrrp.running(lay)
    return {"release": cur, "intact": cur != "none" and intact(
                f"{lay.releases}/{cur}", cache=f"{lay.state}/config-verified.json"),
            "nginx_running": services.nginx_running(lay), "agent_running": agent,
            "php_running": php, "bootstrap": version, "boot_time": boot_time(),
            "firewall": firewall.status(lay), "floating": floating,
            "vrrp_running": vrrp_on, "vrrp_released": vrrp.is_released(lay),
            "vrrp_by_hand": os.path.isfile(vrrp.released_marker(lay))}


def status_line(lay: Layout) -> str:
    return json.dumps(status(lay))
