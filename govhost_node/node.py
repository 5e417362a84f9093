"""govhost-node: the node-side steps of a config release, run by govhost's playbooks and by
the control machine over SSH.

  receive ID [BASE]   read release ID from stdin (whole, or only what changed since BASE)
  stage ID            accounts, log dirs, nginx -t (php-fpm -t, nft -c, keepalived -t)
  activate ID [ADDR [KEEP]]  switch `current` to ID; services follow; probe; prune
  probe ID ADDR       wait until nginx on ADDR serves release ID and the portal answers
  agents ADDR         start the agent, search, tamper watcher and node exporter on ADDR
  rollback            switch back to the release live before the last activate
  status              one line of JSON: release, intact, what runs, firewall, floating
  prune K             keep the K newest releases (never current or previous)
  firewall confirm|revert DIGEST|boot   the dead-man switch of the release's nftables rules
  exporter ADDR       run the node exporter on ADDR (TLS and basic auth once given)
  vrrp check alive|prompt ADDRESS [DELAY] | release | resume | held | local
  challenge put|remove   ACME HTTP-01 answers from stdin

Exit codes the control machine acts on are in exits.py; any other failure is 1, or the exit
code of the command that failed.
"""
from __future__ import annotations

import os
import sys

from govhost_node.layout import NODE, Layout

USAGE = ("usage: govhost-node receive|stage|activate|probe|agents|rollback|status|prune|"
         "challenge|firewall|vrrp")


def _arg(args: list[str], i: int) -> str | None:
    return args[i] if len(args) > i and args[i] != "" else None


def _vrrp_check(lay: Layout, args: list[str]) -> int:
    """keepalived's probe, every second on every node: only what it needs is imported."""
    from govhost_node import vrrp_check
    try:
        return 0 if vrrp_check.check(lay, _arg(args, 0), _arg(args, 1), _arg(args, 2)) else 1
    except vrrp_check.Usage as e:
        print(f"govhost-node: {e}", file=sys.stderr, flush=True)
        return 1


def dispatch(lay: Layout, argv: list[str]) -> int:
    # The steps' modules are imported by the command that needs them (see _vrrp_check).
    from govhost_node import challenges, releases, services
    from govhost_node.system import die
    cmd, args = (argv[0] if argv else ""), argv[1:]

    def need(i: int, usage: str) -> str:
        value = _arg(args, i)
        if value is None:
            raise die(usage)
        return value

    if cmd in ("receive", "stage", "activate", "rollback"):
        services.raise_open_files()      # nginx -t and nginx open two logs per unit
    if cmd == "receive":
        releases.receive(lay, _arg(args, 0) or "", _arg(args, 1))
    elif cmd == "stage":
        releases.stage(lay, _arg(args, 0) or "")
    elif cmd == "activate":
        releases.activate(lay, _arg(args, 0) or "", _arg(args, 1), _arg(args, 2))
    elif cmd == "probe":
        releases.probe(_arg(args, 0) or "", need(1, "usage: govhost-node probe ID ADDR"))
    elif cmd == "agents":
        services.agents(lay, _arg(args, 0) or "")
    elif cmd == "rollback":
        releases.rollback(lay)
    elif cmd == "status":
        print(releases.status_line(lay), flush=True)
    elif cmd == "prune":
        releases.prune(lay, _arg(args, 0) or 5)
    elif cmd == "challenge":
        challenges.apply(lay, _arg(args, 0) or "", sys.stdin)
    elif cmd == "firewall":
        _firewall(lay, args)
    elif cmd == "exporter":
        services.exporter(lay, need(0, "usage: govhost-node exporter ADDR"))
    elif cmd == "vrrp":
        _vrrp(lay, args)
    else:
        raise die(USAGE)
    return 0


def _firewall(lay: Layout, args: list[str]) -> None:
    from govhost_node import firewall, releases
    from govhost_node.system import die
    action = _arg(args, 0)
    if action == "confirm":
        firewall.confirm(lay)
    elif action == "revert":
        firewall.revert(lay, _arg(args, 1) or "", releases.current_id(lay))
    elif action == "boot":
        firewall.boot(lay, releases.current_id(lay))
    else:
        raise die("usage: govhost-node firewall confirm|revert DIGEST|boot")


def _vrrp(lay: Layout, args: list[str]) -> None:
    import json

    from govhost_node import vrrp
    from govhost_node.system import die
    action = _arg(args, 0)
    if action == "release":
        vrrp.release(lay)
    elif action == "resume":
        vrrp.resume(lay)
    elif action == "held":
        print(json.dumps({"held": vrrp.held(lay) or []}), flush=True)
    elif action == "local":
        vrrp.local(lay)
    else:
        raise die("usage: govhost-node vrrp check|release|resume|held|local")


def main(argv: list[str] | None = None, lay: Layout = NODE) -> None:
    os.umask(0o022)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["vrrp", "check"]:
        sys.exit(_vrrp_check(lay, argv[2:]))
    import subprocess

    from govhost_node.system import NodeExit
    try:
        code = dispatch(lay, argv)
    except NodeExit as e:
        if e.message:
            print(f"govhost-node: {e.message}", file=sys.stderr, flush=True)
        code = e.code
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        print(f"govhost-node: {e}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    # 255 is ssh's own "could not run it": the control machine must never take a step that
    # ran (and a child killed by a signal, -N) for a node it did not reach.
    sys.exit(code if 0 <= code < 255 else 1)


if __name__ == "__main__":
    main()
