"""Floating addresses: each web node's keepalived configuration, rendered into its release.

One VRRP instance per web node's floating address (IPv4, with its IPv6 address riding along
as an excluded address, so both move together in one election). The address's home node has
the highest priority; the others follow in the order after it (for n1's address: n2, n3, …;
for n2's: n3, …, n1), so a dead node's address goes to one survivor and the next failure
lands on another. Every node runs the same instances with its own priorities, so the file
differs per node only in those numbers and the unicast source.

A node whose nginx is dead (its own health probe refused or answered wrongly, twice in a row)
goes to FAULT: it advertises priority 0 and a peer takes its addresses within a fraction of a
second. A node whose nginx only stalls (no answer within 2 s, three times in a row) loses 150
of its priority instead, so a healthy peer takes its address after VRRP's master-down wait;
when every node stalls at once (a county-wide overload), all drop together and no address
moves, where moving them would help nobody and lose connections. A node that comes back takes
its own address only after its probes have passed for `preempt_delay_seconds` in a row (the
check keeps the streak in /run, so it starts again at boot and after any failure, but not at
a keepalived reload), so a node that flaps does not drag its address to and fro.
"""
from __future__ import annotations

import json

from controlplane.core import paths
from controlplane.core.manifest import Hosts, Node

HOME_PRIORITY = 200
STEP = 10
STALL_WEIGHT = -150      # HOME_PRIORITY + STALL_WEIGHT stays below every healthy node's
CHECK = f"{paths.NODE_TOOL} vrrp check"


def instances(hosts: Hosts) -> list[dict]:
    """One entry per web node's floating address: its home, VRID, addresses and the order
    of nodes that take it (home first)."""
    if hosts.vrrp is None:
        return []
    web = hosts.web_nodes
    out = []
    for k, home in enumerate(web):
        order = [web[(k + d) % len(web)].name for d in range(len(web))]
        out.append({"name": f"govhost_{home.name.replace('-', '_')}", "home": home.name,
                    "vrid": home.vrid, "address": home.floating,
                    "address6": home.floating6, "order": order})
    return out


def priority(inst: dict, node: str) -> int:
    return HOME_PRIORITY - STEP * inst["order"].index(node)


def spec(hosts: Hosts, node: Node, released: bool = False) -> bytes | None:
    """vrrp.json: what the node's agent reports on (which floating addresses it holds) and
    what `govhost-node vrrp` needs (the interface, and whether the
    node keeps out of VRRP: a drained node hands its addresses to its peers)."""
    if hosts.vrrp is None or "web" not in node.roles:
        return None
    return (json.dumps({"interface": hosts.vrrp.interface, "node": node.name,
                        "probe": node.address, "released": released,   # probe: older checks
                        "addresses": [{k: i[k] for k in ("home", "vrid", "address", "address6")}
                                      for i in instances(hosts)]},
                       indent=1, sort_keys=True) + "\n").encode()


def render(hosts: Hosts, node: Node) -> bytes | None:
    """The node's keepalived.conf, or None without `vrrp:` or on a node that is not web."""
    v = hosts.vrrp
    if v is None or "web" not in node.roles:
        return None
    peers = [n.address for n in hosts.web_nodes if n.name != node.name]
    delay = v.preempt_delay_seconds
    lines = [f"# govhost floating addresses for {node.name}; written by govhost, do not edit",
             "global_defs {",
             f"    router_id {node.name}",
             "    vrrp_version 3",
             "    enable_script_security",
             "    script_user root",
             # Gratuitous ARP / unsolicited neighbour advertisements: at takeover, again a
             # second later, and every 10 s while master, so a router that missed or aged
             # the first still sends to the node that holds the address.
             "    vrrp_garp_master_delay 1",
             "    vrrp_garp_master_repeat 3",
             "    vrrp_garp_master_refresh 10",
             "    vrrp_garp_master_refresh_repeat 1",
             # A node that wakes from a hang still thinks it is master: when it hears the
             # lower-priority node that stood in, it announces itself again at once, so the
             # router stops sending to the stand-in, which has just let the address go.
             "    vrrp_garp_lower_prio_repeat 2",
             "    vrrp_higher_prio_send_advert true",
             "}",
             *_script("govhost_alive", f"{CHECK} alive {node.address} {delay}", timeout=4,
                      fall=2),
             *_script("govhost_prompt", f"{CHECK} prompt {node.address} {delay}", timeout=4,
                      fall=3, weight=STALL_WEIGHT)]
    for inst in instances(hosts):
        lines += [f"vrrp_instance {inst['name']} {{",
                  "    state BACKUP",
                  f"    interface {v.interface}",
                  f"    virtual_router_id {inst['vrid']}",
                  f"    priority {priority(inst, node.name)}",
                  f"    advert_int {v.advert_seconds}"]
        if v.unicast:   # and only from the peers' own addresses
            lines += [f"    unicast_src_ip {node.address}", "    check_unicast_src",
                      "    unicast_peer {", *(f"        {p}" for p in peers), "    }"]
        else:           # from the node's own address, which the peers' firewalls let in
            lines.append(f"    mcast_src_ip {node.address}")
        lines += ["    virtual_ipaddress {",
                  f"        {inst['address']}/{_prefix(v.subnet)} dev {v.interface}", "    }"]
        if inst["address6"]:
            lines += ["    virtual_ipaddress_excluded {",
                      f"        {inst['address6']}/{_prefix(v.subnet6)} dev {v.interface}",
                      "    }"]
        lines += ["    track_script {", "        govhost_alive", "        govhost_prompt",
                  "    }", "}"]
    return ("\n".join(lines) + "\n").encode()


def _script(name: str, command: str, timeout: int, fall: int, weight: int = 0) -> list[str]:
    """A tracked check, every second. No `init_fail`: a keepalived reload whose script line
    changed would start it failed and put every node in FAULT at once; the preempt delay
    lives in the check's own streak instead."""
    return [f"vrrp_script {name} {{", f'    script "{command}"', "    interval 1",
            f"    timeout {timeout}", f"    fall {fall}", "    rise 2",
            *([f"    weight {weight}"] if weight else []), "}"]


def _prefix(net: str | None) -> str:
    return net.split("/", 1)[1] if net and "/" in net else "32"


def floating_of(hosts: Hosts) -> list[str]:
    """Every floating address of the county (v4 and v6), for nginx's listeners."""
    return [a for n in hosts.web_nodes for a in (n.floating, n.floating6) if a] \
        if hosts.vrrp is not None else []



def holders(hosts: Hosts, held: dict[str, tuple[str, ...] | None],
            released: frozenset[str] = frozenset()) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Who holds each floating address, from each reachable node's answer (`held`: node ->
    the addresses it holds; a node missing from it could not be asked), and what is wrong:
    (severity, where, what) for an address held by no node, by two, or away from its home
    node while that node serves and is not released on purpose."""
    rows, problems = [], []
    for inst in instances(hosts):
        for addr in (inst["address"], inst["address6"]):
            if not addr:
                continue
            by = sorted(n for n, have in held.items() if have and addr in have)
            rows.append({"address": addr, "home": inst["home"], "held_by": by,
                         "vrid": inst["vrid"]})
            if not by:
                problems.append(("critical", addr, f"floating address of {inst['home']} is "
                                 "held by no reachable node: citizens whose resolver gave "
                                 "them this address get no answer"))
            elif len(by) > 1:
                problems.append(("critical", addr, f"held by {' and '.join(by)} at once "
                                 "(split brain): the nodes do not hear each other's VRRP"))
            elif by[0] != inst["home"] and inst["home"] in held \
                    and inst["home"] not in released:
                problems.append(("warning", addr, f"away from its home {inst['home']} (on "
                                 f"{by[0]}); it goes back once {inst['home']} passes its "
                                 "probe for the preempt delay"))
    return rows, problems
