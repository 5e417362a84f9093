"""A node's firewall (nftables), rendered into its config release.

Every node address is public in production, so each node opens to everyone only what the
public needs (80 and 443 on web nodes, units' SFTP) and everything else only to whom needs
it: operators' SSH and the metrics to the management addresses, the database to the nodes
that run PHP sites, the backup repository and the search server to the cluster's own nodes.
The rest is dropped and counted.

Every packet that reaches the node is judged, whatever address it was sent to (its own, a
floating address it holds, one the operating system gave itself such as a SLAAC address):
only what comes in on loopback is the node talking to itself. Each node's table has its own
name. The file replaces the table in one
transaction (`table …; delete table …; table … {…}`), so there is never a moment without it.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from controlplane.core import paths
from controlplane.core.manifest import Firewall, Hosts, Node

HEADER = "# govhost firewall"
MYSQL_PORT = 3306
VRRP_GROUP4 = "224.0.0.18"


def table_name(node: str) -> str:
    return "govhost_" + node.replace("-", "_")


def _split(addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 networks, each collapsed (nftables refuses overlapping intervals)."""
    v4: list = []
    v6: list = []
    for a in addresses:
        net = ipaddress.ip_network(a, strict=False)
        (v4 if net.version == 4 else v6).append(net)
    return ([n.compressed for n in ipaddress.collapse_addresses(v4)],
            [n.compressed for n in ipaddress.collapse_addresses(v6)])


def _set(name: str, kind: str, elements: list[str]) -> str:
    body = f"type {kind}; flags interval;"
    if elements:
        body += f" elements = {{ {', '.join(elements)} }}"
    return f"    set {name} {{ {body} }}\n"


def db_clients(hosts: Hosts, placement: Mapping[str, tuple[str, ...]],
               php_units: Iterable[str]) -> list[str]:
    """Where the db node's clients connect from: the nodes holding PHP sites' replicas."""
    names = {n for u in php_units for n in placement.get(u, ())}
    return sorted({a for n in hosts.nodes if n.name in names for a in n.sources})


def repository_nodes(hosts: Hosts, offsite_address: str | None = None) -> frozenset[str]:
    """The nodes whose SSH the cluster's restic reaches (SFTP): the backup node, and a node
    that also stands in for the off-site copy (cluster.yaml backup.offsite.address)."""
    return frozenset(n.name for n in hosts.nodes if "backup" in n.roles
                     or (offsite_address is not None
                         and offsite_address in (n.address, n.address6)))


def render(hosts: Hosts, node: Node, db_sources: list[str],
           repositories: frozenset[str] | None = None) -> bytes | None:
    """The node's nftables file, or None when the county has no `firewall:` in hosts.yaml.
    `repositories`: see repository_nodes (the backup node alone when not given)."""
    fw = hosts.firewall
    if fw is None:
        return None
    table = table_name(node.name)
    cluster = [a for n in hosts.nodes for a in n.sources]
    sets = {"management": _split(fw.management), "cluster": _split(cluster),
            "db": _split(db_sources)}
    if hosts.vrrp is not None and "web" in node.roles:   # who may speak VRRP to this node
        sets["vrrp"] = _split([n.address for n in hosts.web_nodes if n.name != node.name])
    out = [f"{HEADER} for {node.name} ({node.address}); written by govhost, do not edit\n",
           f"# confirm_seconds={fw.confirm_seconds}\n",
           f"table inet {table}\n", f"delete table inet {table}\n", f"table inet {table} {{\n"]
    for name, (v4, v6) in sets.items():
        out.append(_set(f"{name}4", "ipv4_addr", v4))
        out.append(_set(f"{name}6", "ipv6_addr", v6))
    for fam in ("4", "6"):
        kind = "ipv4_addr" if fam == "4" else "ipv6_addr"
        out.append(f"    set sftp_meter{fam} {{ type {kind}; size 65535; "
                   "flags dynamic,timeout; timeout 1m; }\n")
    out.append("    counter dropped { }\n")
    out.append("    counter metered { }\n")
    out.append("    chain input {\n"
               "        type filter hook input priority filter; policy accept;\n")
    repos = repository_nodes(hosts) if repositories is None else repositories
    out.extend(f"        {r}\n" for r in _rules(hosts, fw, node, node.name in repos))
    out.append("    }\n")
    # The peers' door of the message service is for the nodes' own govhost-messages (root):
    # a unit's PHP shares the node's address, so the other nodes' input rules cannot tell it
    # apart; here, where the connection starts, its user can be told.
    out.append("    chain output {\n"
               "        type filter hook output priority filter; policy accept;\n"
               f"        tcp dport {paths.MESSAGES_PORT} meta skuid != 0 "
               "counter name dropped reject with tcp reset\n"
               "    }\n}\n")
    return "".join(out).encode()


def _rules(hosts: Hosts, fw: Firewall, node: Node, repository: bool) -> list[str]:
    ssh, sftp = hosts.ssh.port, hosts.ssh.unit_port
    rate = f"{fw.ssh_new_per_minute}/minute burst {fw.ssh_burst} packets"
    families = (("4", "ip saddr"), ("6", "ip6 saddr"))
    rules = [
        # The node talking to itself on loopback addresses; to its own or floating addresses
        # it is judged as from the cluster (a unit's PHP reaches no more than before).
        "iif lo ip daddr 127.0.0.0/8 accept",
        "iif lo ip6 daddr ::1 accept",
        "ct state established,related accept",
        # A citizen's connection that a floating address's move has sent to a node that
        # never saw it start: reset it, so the client retries at once; dropped, it hung
        # until the client's own timeout (measured: 15 s).
        *(["ct state invalid tcp dport { 80, 443 } counter name dropped reject with tcp reset"]
          if hosts.vrrp is not None and "web" in node.roles else []),
        "ct state invalid counter name dropped drop",
        "# ICMP and ICMPv6, by number: a bare server has no /etc/protocols",
        "meta l4proto { 1, 58 } accept",
        # Answers to the node's own DHCPv6 client, from a server on the link (DHCPv4 clients
        # read with packet sockets, before nftables).
        "ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept",
    ]
    if "web" in node.roles:
        rules.append("tcp dport { 80, 443 } accept")
    # Units' SFTP is public. New connections from outside the cluster and the management
    # addresses are metered per source address, so guessing keys costs an attacker time.
    rules += [f"tcp dport {sftp} ct state new {sa} != @management{f} {sa} != @cluster{f} "
              f"update @sftp_meter{f} {{ {sa} limit rate over {rate} }} "
              "counter name metered drop" for f, sa in families]
    rules.append(f"tcp dport {sftp} accept")
    if hosts.vrrp is not None and "web" in node.roles:
        # VRRP (IP protocol 112) only from the other web nodes, on the nodes' network, to
        # VRRP's group or (unicast peers) this node's address: anyone else's advertisement
        # could take a floating address away from the node that serves it.
        # RFC 5798: an advertisement that crossed a router (TTL below 255) is not from the
        # nodes' own network, whatever its source address says.
        rules.append(f'iifname "{hosts.vrrp.interface}" ip protocol 112 ip ttl 255 '
                     f"ip daddr {{ {VRRP_GROUP4}, {node.address} }} ip saddr @vrrp4 accept")
    for f, sa in families:
        rules.append(f"tcp dport {{ {ssh}, {paths.NODE_EXPORTER_PORT}, {paths.AGENT_PORT} }} "
                     f"{sa} @management{f} accept")
        # the county search, and the copies nodes keep of each other's messages (signed)
        rules.append(f"tcp dport {{ {paths.SEARCH_PORT}, {paths.MESSAGES_PORT} }} "
                     f"{sa} @cluster{f} accept")
        if "web" not in node.roles:   # the node's own probes; operators
            rules.append(f"tcp dport {{ 80, 443 }} {sa} @cluster{f} accept")
            rules.append(f"tcp dport {{ 80, 443 }} {sa} @management{f} accept")
        if repository:                # the nodes' restic reaches the repository over SFTP
            rules.append(f"tcp dport {ssh} {sa} @cluster{f} accept")
        if "db" in node.roles:
            rules.append(f"tcp dport {MYSQL_PORT} {sa} @db{f} accept")
    rules.append("counter name dropped drop")
    return rules


def checked_ports(hosts: Hosts) -> tuple[int, ...]:
    """The ports `govhost security check` knocks on at every node: everything a node listens
    on for anyone (govhost's services, SSH, the database)."""
    return tuple(sorted({hosts.ssh.port, hosts.ssh.unit_port, 80, 443,
                         paths.NODE_EXPORTER_PORT, paths.AGENT_PORT, paths.SEARCH_PORT,
                         paths.MESSAGES_PORT, MYSQL_PORT}))


def _inside(source: str, networks: Iterable[str]) -> bool:
    addr = ipaddress.ip_address(source)
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


def allowed(hosts: Hosts, node: Node, db_sources: list[str], source: str, port: int,
            repositories: frozenset[str] | None = None) -> bool:
    """Whether the node's rules (as `_rules` writes them) let a new connection from `source`
    to `port` through: the expectation `security check` holds each measured door to. Every
    door is open without a firewall."""
    fw = hosts.firewall
    if fw is None:
        return True
    ssh, sftp = hosts.ssh.port, hosts.ssh.unit_port
    management = _inside(source, fw.management)
    cluster = _inside(source, [a for n in hosts.nodes for a in n.sources])
    if port in (80, 443) and ("web" in node.roles or cluster or management):
        return True
    if port == sftp:
        return True
    if port in (ssh, paths.NODE_EXPORTER_PORT, paths.AGENT_PORT) and management:
        return True
    if port in (paths.SEARCH_PORT, paths.MESSAGES_PORT) and cluster:
        return True
    repos = repository_nodes(hosts) if repositories is None else repositories
    if port == ssh and node.name in repos and cluster:
        return True
    return port == MYSQL_PORT and "db" in node.roles and _inside(source, db_sources)
