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

import json
import os
import sys

from govhost_node import challenges, firewall, releases, services, vrrp
from govhost_node.layout import NODE, Layout
from govhost_node.system import NodeExit, die

USAGE = ("usage: govhost-node receive|stage|activate|probe|agents|rollback|status|prune|"
         "challenge|firewall|vrrp")


def _arg(args: list[str], i: int) -> str | None:
    return args[i] if len(args) > i and args[i] != "" else None


def _need(args: list[str], i: int, usage: str) -> str:
    value = _arg(args, i)
    if value is None:
        raise die(usage)
    return value


def dispatch(lay: Layout, argv: list[str]) -> int:
    cmd, args = (argv[0] if argv else ""), argv[1:]
    if cmd == "receive":
        releases.receive(lay, _arg(args, 0) or "", _arg(args, 1))
    elif cmd == "stage":
        releases.stage(lay, _arg(args, 0) or "")
    elif cmd == "activate":
        releases.activate(lay, _arg(args, 0) or "", _arg(args, 1), _arg(args, 2))
    elif cmd == "probe":
        releases.probe(_arg(args, 0) or "", _need(args, 1, "usage: govhost-node probe ID ADDR"))
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
        return _firewall(lay, args)
    elif cmd == "exporter":
        services.exporter(lay, _need(args, 0, "usage: govhost-node exporter ADDR"))
    elif cmd == "vrrp":
        return _vrrp(lay, args)
    else:
        raise die(USAGE)
    return 0


def _firewall(lay: Layout, args: list[str]) -> int:
    action = _arg(args, 0)
    if action == "confirm":
        firewall.confirm(lay)
    elif action == "revert":
        firewall.revert(lay, _arg(args, 1) or "", releases.current_id(lay))
    elif action == "boot":
        firewall.boot(lay, releases.current_id(lay))
    else:
        raise die("usage: govhost-node firewall confirm|revert DIGEST|boot")
    return 0


def _vrrp(lay: Layout, args: list[str]) -> int:
    action = _arg(args, 0)
    if action == "check":
        return 0 if vrrp.check(lay, _arg(args, 1), _arg(args, 2), _arg(args, 3)) else 1
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
    return 0


def main(argv: list[str] | None = None, lay: Layout = NODE) -> None:
    os.umask(0o022)
    services.raise_open_files()
    try:
        code = dispatch(lay, sys.argv[1:] if argv is None else argv)
    except NodeExit as e:
        if e.message:
            print(f"govhost-node: {e.message}", file=sys.stderr, flush=True)
        code = e.code
    except (OSError, ValueError) as e:
        print(f"govhost-node: {e}", file=sys.stderr, flush=True)
        code = 1
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
