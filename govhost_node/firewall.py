"""The node's nftables rules, with a dead-man switch. The release's firewall.nft goes live at
activate as `pending.nft`; unless `confirm` arrives over a new SSH connection within the
release's confirm_seconds, `revert` puts the last confirmed rules back. `confirmed.nft` is
what the node loads at boot; `reverted` says the last change was taken back because no
confirmation came."""
from __future__ import annotations

import datetime
import os
import re
import shutil

from govhost_node import digests
from govhost_node.layout import Layout
from govhost_node.system import (
    alive,
    die,
    ok,
    remove,
    run,
    same_file,
    say,
    signal_pidfile,
    start_detached,
    under_systemd,
    warn,
    write_atomic,
)

DEADMAN = "govhost-firewall-deadman"
_TABLE = re.compile(r"^table inet (govhost_[a-z0-9_]*) \{$", re.M)
_CONFIRM = re.compile(r"^# confirm_seconds=([0-9]+)$", re.M)
DIGEST = re.compile(r"[0-9a-f]{64}")


def table_of(path: str) -> str | None:
    """The govhost table a ruleset file defines."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            m = _TABLE.search(f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def digest_of(path: str) -> str:
    return digests.file_sha256(path)


def loaded(path: str) -> bool:
    table = table_of(path)
    return bool(table) and ok(["nft", "list", "table", "inet", table])


def _files(lay: Layout) -> tuple[str, str, str]:
    fw = lay.firewall
    return f"{fw}/confirmed.nft", f"{fw}/pending.nft", f"{fw}/reverted"


def disarm(lay: Layout) -> None:
    if under_systemd(lay):
        ok(["systemctl", "stop", f"{DEADMAN}.timer", f"{DEADMAN}.service"])
        ok(["systemctl", "reset-failed", f"{DEADMAN}.timer", f"{DEADMAN}.service"])
    elif alive(f"{lay.firewall}/deadman.pid"):
        signal_pidfile(f"{lay.firewall}/deadman.pid")
    remove(f"{lay.firewall}/deadman.pid")


def arm(lay: Layout, digest: str, seconds: int) -> None:
    disarm(lay)
    if under_systemd(lay):
        run(["systemd-run", "--quiet", f"--unit={DEADMAN}", f"--on-active={seconds}s",
             "--timer-property=AccuracySec=1s", lay.tool, "firewall", "revert", digest])
    else:
        start_detached(["sh", "-c", f"sleep {int(seconds)}; exec {lay.tool} firewall revert "
                        f"{digest}"], f"{lay.logs}/firewall.log", f"{lay.firewall}/deadman.pid")


def _load(path: str, table: str | None) -> None:
    """Load a ruleset file, or remove this node's table when there is none to go back to."""
    if os.path.isfile(path):
        run(["nft", "-f", path])
    elif table:
        ok(["nft", "delete", "table", "inet", table])


def _mark_reverted(lay: Layout, release: str) -> None:
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    write_atomic(_files(lay)[2], f"{now} {release}\n")


def _prepare(lay: Layout) -> None:
    os.makedirs(lay.firewall, exist_ok=True)
    os.chmod(lay.firewall, 0o700)


def sync(lay: Layout, release: str) -> None:
    """Make the live rules those of `current` (at activate)."""
    want = f"{lay.current}/firewall.nft"
    confirmed, pending, reverted = _files(lay)
    _prepare(lay)
    if not os.path.isfile(want):
        # No firewall in this release (none in hosts.yaml): remove govhost's table.
        for f in (confirmed, pending):
            table = table_of(f)
            if table:
                ok(["nft", "delete", "table", "inet", table])
        disarm(lay)
        for f in (confirmed, pending, reverted):
            remove(f)
        return
    if not table_of(want):
        raise die(f"firewall.nft of release {release} names no govhost table")
    if same_file(want, confirmed) and loaded(want) and not os.path.isfile(pending):
        remove(reverted)                    # (a change taken back has been given up)
        return                              # live and confirmed already
    if same_file(want, pending) and loaded(want):
        return                              # live, its dead-man switch still armed
    if same_file(want, confirmed):          # confirmed rules that were lost: reload
        run(["nft", "-f", want])
        disarm(lay)
        remove(pending)
        remove(reverted)
        say("firewall: reloaded")
        return
    with open(want, encoding="utf-8", errors="replace") as f:
        m = _CONFIRM.search(f.read())
    seconds = int(m.group(1)) if m else 60
    tmp = f"{lay.firewall}/.pending.new"
    shutil.copyfile(want, tmp)
    os.replace(tmp, pending)
    remove(reverted)
    arm(lay, digest_of(pending), seconds)
    run(["nft", "-f", pending])
    say(f"firewall: changed, waiting {seconds}s for the control machine's confirmation")


def confirm(lay: Layout) -> None:
    confirmed, pending, _ = _files(lay)
    _prepare_dir(lay)
    if os.path.isfile(pending):
        disarm(lay)
        os.replace(pending, confirmed)
        say("firewall: confirmed")
    else:
        say("firewall: nothing pending")


def revert(lay: Layout, digest: str, release: str) -> None:
    """The dead-man switch: only the change it was armed for (a newer one has its own)."""
    if not DIGEST.fullmatch(digest):
        raise die("usage: govhost-node firewall revert DIGEST")
    confirmed, pending, _ = _files(lay)
    _prepare_dir(lay)
    if not os.path.isfile(pending) or digest_of(pending) != digest:
        return
    _load(confirmed, table_of(pending))
    _mark_reverted(lay, release)
    remove(pending)
    remove(f"{lay.firewall}/deadman.pid")
    warn("firewall change not confirmed in time; previous rules restored")


def boot(lay: Layout, release: str) -> None:
    """At start-up: a change nobody confirmed before the machine went down does not come
    back."""
    confirmed, pending, _ = _files(lay)
    _prepare_dir(lay)
    if os.path.isfile(pending):
        _mark_reverted(lay, release)
        remove(pending)
    if os.path.isfile(confirmed):
        run(["nft", "-f", confirmed])
    say("firewall: loaded")


def _prepare_dir(lay: Layout) -> None:
    os.makedirs(lay.firewall, exist_ok=True)


def status(lay: Layout) -> str:
    confirmed, pending, reverted = _files(lay)
    if os.path.isfile(reverted):
        return "reverted"
    if os.path.isfile(pending):
        return "pending"
    if os.path.isfile(confirmed):
        return "ok" if loaded(confirmed) else "missing"
    return "off"
