"""Load and check a whole inventory directory: cluster.yaml, hosts.yaml, tenants/*.yaml.

Loading is all-or-nothing: every file is read and every problem across all of them is
collected into one ManifestError, so an operator fixes a batch of mistakes in one round and
a refused inventory never reaches a node.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from controlplane.core import secrets, yamlsafe
from controlplane.core.errors import ManifestError, Problem
from controlplane.core.manifest import Cluster, Hosts, Node, RateLimit, Tenant
from controlplane.core.memo import Memo
from controlplane.core.memo import key as memo_key
from controlplane.core.state import state_dir
from controlplane.core.wordlists import WordList

M = TypeVar("M", bound=BaseModel)

MAX_TENANT_FILES = 20_000


@dataclass(frozen=True)
class Inventory:
    """Everything the desired state is made of, already validated."""

    root: Path
    cluster: Cluster
    hosts: Hosts
    tenants: tuple[Tenant, ...]
    sources: dict[str, str]  # tenant name -> file it came from
    # The cluster secret (see secrets.py): derived credentials (databases, metrics).
    secret: bytes = field(default=b"", repr=False)
    # The nodes' SSH key to the backup repository; loaded only when a node has the backup role.
    backup_key: bytes = field(default=b"", repr=False)
    # The county recovery key as written by `govhost control init` (backup/recovery.py reads
    # it); empty before that. Its public SSH half lets the control machine reach its backups.
    recovery_key: bytes = field(default=b"", repr=False)
    # Certificates to ship (lineage -> tls.store.Deployed) and the one each unit is served
    # with (tenant name or `_portal` -> lineage); filled from the certificate store by
    # sites.apply.prepare.
    certificates: Mapping[str, Any] = field(default_factory=dict, repr=False)
    served_with: Mapping[str, str] = field(default_factory=dict)
    # The county's word lists (inventory/wording/*.yaml), by the file they came from.
    wording: Mapping[str, WordList] = field(default_factory=dict)
    # TLS and basic auth of the nodes' metrics (tls.metrics.MetricsAccess); filled by
    # sites.apply.prepare from the state directory.
    metrics: Any = field(default=None, repr=False)
    # Each unit's WAF mode in force for this run (sites.waf.modes over the state's record of
    # when each unit went live behind it); filled by sites.apply.prepare.
    waf_modes: Mapping[str, str] = field(default_factory=dict)
    # Units with `launch: pending` that have not passed `govhost launch`: served only to the
    # county's addresses (launch_allowed); filled by sites.apply.prepare from the state.
    gated: frozenset[str] = frozenset()
    # What the runs before kept of their work (core/memo.py): each unit's rendered files.
    # Only a shortcut: a run without one renders the same bytes.
    memo: Memo | None = field(default=None, compare=False, repr=False)

    def launch_allowed(self) -> list[str]:
        """Who sees a unit before its launch: the county's management networks, and the
        nodes themselves (they pass requests to a unit's replicas and probe each other)."""
        nets = [str(n) for n in (self.hosts.firewall.management if self.hosts.firewall else [])]
        nodes = [a for n in self.hosts.nodes for a in (n.address, n.source, n.address6) if a]
        return list(dict.fromkeys(nets + nodes))

    def replicas(self, tenant: Tenant) -> int:
        return _replicas(tenant, self.cluster)

    def rate_limit(self, tenant: Tenant) -> RateLimit:
        return tenant.rate_limit or self.cluster.defaults.rate_limit

    def quota_bytes(self, tenant: Tenant) -> int:
        mb = tenant.quota_mb if tenant.quota_mb is not None else self.cluster.defaults.quota_mb
        return mb * 1024 * 1024

    def site_host(self, tenant: Tenant) -> str:
        return f"{tenant.name}.{self.cluster.domain}"

    def https_hosts(self) -> frozenset[str]:
        """Site names served over HTTPS (a certificate covers the unit): their port 80 only
        redirects, so probes and the crawl go to 443."""
        return frozenset(self.site_host(t) for t in self.tenants if t.name in self.served_with)

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    @property
    def backup_node(self) -> Node | None:
        return next((n for n in self.hosts.nodes if "backup" in n.roles), None)

    def backup_policy(self, tenant: Tenant) -> BackupPolicy:
        own, default = tenant.backup, self.cluster.backup
        return BackupPolicy(
            enabled=own.enabled and tenant.site.type != "proxy",
            schedule=own.schedule or default.schedule,
            keep_daily=default.keep_daily if own.keep_daily is None else own.keep_daily,
            keep_weekly=default.keep_weekly if own.keep_weekly is None else own.keep_weekly,
            keep_monthly=default.keep_monthly if own.keep_monthly is None else own.keep_monthly)


@dataclass(frozen=True)
class BackupPolicy:
    """A tenant's effective backup policy (its manifest over the cluster's defaults). Proxy
    sites keep their data in their own application: nothing of theirs is on the platform."""

    enabled: bool
    schedule: str
    keep_daily: int
    keep_weekly: int
    keep_monthly: int


def _replicas(tenant: Tenant, cluster: Cluster) -> int:
    """PHP sites keep state on their node (sessions, files/), so one replica unless asked."""
    if tenant.replicas is not None:
        return tenant.replicas
    return 1 if tenant.site.type == "php" else cluster.defaults.replicas


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("static", "php", "proxy") and out.endswith("site"):
            continue  # pydantic's discriminator tag, not a field the user wrote
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs/manifest.md for the allowed fields)"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        return f"{err.get('input')!r} is not a site type; allowed: static, php, proxy"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    inp = err.get("input")
    if isinstance(inp, (str, int, float, bool)) or inp is None:
        return f"{inp!r}: {msg}"
    return msg


def _document(raw: bytes, memo: Memo | None) -> Any:
    """A manifest's YAML as data. The same bytes read by the same code before are taken
    from the memo (kept as JSON, and only where JSON gives back exactly what YAML read: a
    date, for one, is parsed each time)."""
    if memo is None:
        return yamlsafe.loads(yamlsafe.decode(raw))
    k = memo_key("manifest", raw)
    kept = memo.get(k)
    if kept is not None:
        try:
            return json.loads(kept)
        except ValueError:                   # a damaged value: read the file instead
            pass
    data = yamlsafe.loads(yamlsafe.decode(raw))
    try:
        text = json.dumps(data, ensure_ascii=False).encode()
    except (TypeError, ValueError):          # a date; a lone surrogate
        return data
    if json.loads(text) == data:
        memo.put(k, text)
    return data


def _parse(path: Path, rel: str, model: type[M], problems: list[Problem],
           memo: Memo | None = None) -> M | None:
    raw = _read(path, rel, problems)
    return None if raw is None else _parse_bytes(raw, rel, model, problems, memo)


def _read(path: Path, rel: str, problems: list[Problem]) -> bytes | None:
    """A manifest's bytes, or None with the problem (too large, unreadable)."""
    try:
        return yamlsafe.read_file(path)
    except yamlsafe.YamlRefused as exc:
        problems.append(Problem(rel, "", str(exc)))
    except OSError as exc:
        problems.append(Problem(rel, "", f"cannot read file ({exc.strerror})"))
    return None


def _parse_bytes(raw: bytes, rel: str, model: type[M], problems: list[Problem],
                 memo: Memo | None = None) -> M | None:
    """`_parse` of a file's bytes, already read (and not larger than a manifest may be)."""
    try:
        data = _document(raw, memo)
    except yamlsafe.YamlRefused as exc:
        problems.append(Problem(rel, "", str(exc)))
        return None
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        problems.append(Problem(rel, "", f"must be a YAML mapping of fields, found {kind}"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(Problem(rel, _field(err["loc"]), _describe(err)))
        return None


def _rel(root: Path, p: Path) -> str:
    """How problems name a file of the inventory at `root`: from the inventory's folder."""
    try:
        return str(p.relative_to(root.parent))
    except ValueError:
        return str(p)


def _tenant(file_name: str, rel: str, raw: bytes, problems: list[Problem],
            memo: Memo | None = None) -> Tenant | None:
    """The unit declared by tenants/`file_name` (its bytes `raw`), or None with its
    problems: a file declares the unit it is named for."""
    t = _parse_bytes(raw, rel, Tenant, problems, memo)
    if t is not None and Path(file_name).stem != t.name:
        problems.append(Problem(rel, "name", f"{t.name!r} does not match the file name; "
                                f"save this manifest as tenants/{t.name}.yaml"))
        return None
    return t


def _given(raw: bytes, rel: str, problems: list[Problem]) -> bytes | None:
    """Bytes given for a file (not read from disk), refused as `read_file` refuses the file."""
    try:
        yamlsafe.check_size(len(raw))
    except yamlsafe.YamlRefused as exc:
        problems.append(Problem(rel, "", str(exc)))
        return None
    return raw


def load(root: Path, state: Path | None = None, memo: Memo | None = None,
         overlay: Mapping[str, bytes] | None = None) -> Inventory:
    """Load the inventory at ``root`` or raise ManifestError listing every problem. The
    secrets it needs come from the state directory `state` (default: the inventory's).
    `memo`: the units' manifests parsed by runs before (core/memo.py), kept with the
    inventory for its rendering. `overlay`: files of tenants/ (file name -> bytes) read as
    given, in place of the file of that name or beside the others (a unit's trial)."""
    root = Path(root)
    overlay = overlay or {}
    problems: list[Problem] = []
    if not root.is_dir():
        raise ManifestError([Problem(str(root), "", "inventory directory does not exist")])

    def rel(p: Path) -> str:
        return _rel(root, p)

    cluster = _parse(root / "cluster.yaml", rel(root / "cluster.yaml"), Cluster, problems)
    hosts = _parse(root / "hosts.yaml", rel(root / "hosts.yaml"), Hosts, problems)

    tenant_dir = root / "tenants"
    # by name (one directory: the same order as by path, without pathlib's comparisons, a
    # tenth of a second at 5,000 units)
    on_disk = {p.name for p in tenant_dir.glob("*.y*ml")} if tenant_dir.is_dir() else set()
    names = sorted(on_disk | set(overlay))
    if len(names) > MAX_TENANT_FILES:
        problems.append(Problem(rel(tenant_dir), "", f"more than {MAX_TENANT_FILES} tenant files"))
        names = []
    tenants: list[Tenant] = []
    sources: dict[str, str] = {}
    tenants_rel = rel(tenant_dir)
    for name in names:
        r = f"{tenants_rel}/{name}"
        raw = _given(overlay[name], r, problems) if name in overlay else \
            _read(tenant_dir / name, r, problems)
        t = None if raw is None else _tenant(name, r, raw, problems, memo)
        if t is not None:
            tenants.append(t)
            sources[t.name] = r

    wording: dict[str, WordList] = {}
    word_dir = root / "wording"
    for path in sorted(word_dir.glob("*.y*ml")) if word_dir.is_dir() else []:
        w = _parse(path, rel(path), WordList, problems)
        if w is not None:
            wording[rel(path)] = w

    if cluster is not None and hosts is not None:
        problems.extend(_cross_check(cluster, hosts, tenants, sources,
                                     rel(root / "cluster.yaml"), rel(root / "hosts.yaml")))
    if problems:
        raise ManifestError(problems)
    assert cluster is not None and hosts is not None
    state = state if state is not None else state_dir(root)
    backup_key = b""
    backup = any("backup" in n.roles for n in hosts.nodes)
    # Every county needs it: the metrics' password is derived from it.
    secret = secrets.ensure(state)
    recovery_key = b""
    if backup:
        backup_key = secrets.backup_key(state)
        if (state / secrets.RECOVERY_KEY_FILE).exists():
            recovery_key = secrets.read_private(state / secrets.RECOVERY_KEY_FILE)
    if memo is not None:
        memo.flush()
    return Inventory(root, cluster, hosts, tuple(sorted(tenants, key=lambda t: t.name)), sources,
                     secret, backup_key, recovery_key, wording=wording, memo=memo)


def with_tenant(inv: Inventory, file_name: str, raw: bytes) -> Inventory:
    """What `load(inv.root, overlay={file_name: raw})` gives when `inv` is what `load` gave
    for the files on disk, from the one file's bytes and the units already loaded: the same
    inventory or the same ManifestError, without reading the other units' files again.

    A county that loaded has one unit for each file of tenants/ (a file that declared none
    was a problem), so the units are the files: the one given is parsed and checked as load
    checks a file, and the checks across files run over all of them in load's order."""
    root = inv.root
    tenants_rel = _rel(root, root / "tenants")
    by_file: dict[str, Tenant | None] = {
        inv.sources[t.name].rsplit("/", 1)[-1]: t for t in inv.tenants}
    problems: list[Problem] = []
    names = sorted(set(by_file) | {file_name})
    if len(names) > MAX_TENANT_FILES:
        problems.append(Problem(tenants_rel, "", f"more than {MAX_TENANT_FILES} tenant files"))
        names = []
    elif names:
        mine = f"{tenants_rel}/{file_name}"
        given = _given(raw, mine, problems)
        by_file[file_name] = None if given is None else _tenant(file_name, mine, given, problems)
    tenants: list[Tenant] = []
    sources: dict[str, str] = {}
    for name in names:
        t = by_file[name]
        if t is not None:
            tenants.append(t)
            sources[t.name] = f"{tenants_rel}/{name}"
    problems.extend(_cross_check(inv.cluster, inv.hosts, tenants, sources,
                                 _rel(root, root / "cluster.yaml"),
                                 _rel(root, root / "hosts.yaml")))
    if problems:
        raise ManifestError(problems)
    return dataclasses.replace(inv, tenants=tuple(sorted(tenants, key=lambda t: t.name)),
                               sources=sources)


def stamp(root: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """What the manifests at `root` are on disk, without reading them: each file's name,
    inode, size, modification and change time (cluster.yaml, hosts.yaml, everything in
    tenants/ and wording/, and those two folders themselves: an entry added or removed
    changes them). An entry that cannot be followed (a dangling link) is stamped as a link,
    one that cannot be looked at at all by its name alone: never left out, since a load
    refuses it. Taken before a load, an unchanged stamp later says the files loaded are the
    files there now (`settled` says whether it can be trusted so soon)."""
    out = []

    def add(name: str, path: Path | str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            try:
                st = os.lstat(path)
            except OSError:
                out.append((name, 0, 0, 0, 0))
                return
        out.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    for f in ("cluster.yaml", "hosts.yaml", "tenants", "wording"):
        add(f, root / f)
    for d in ("tenants", "wording"):
        try:
            names = os.listdir(root / d)
        except OSError:
            continue
        for name in names:
            add(f"{d}/{name}", root / d / name)
    return tuple(sorted(out))


def settled(taken: tuple[tuple[str, int, int, int, int], ...], at_ns: int,
            margin_ns: int = 1_000_000_000) -> bool:
    """Whether a stamp taken at `at_ns` (time.time_ns) can vouch for the files later: not
    when one of them changed within `margin_ns` of it, where a second write in the same
    tick of a coarse clock would leave its times as they were (git's "racily clean")."""
    return all(ctime < at_ns - margin_ns and mtime < at_ns - margin_ns
               for _, _, _, mtime, ctime in taken)


def _cross_check(
    cluster: Cluster, hosts: Hosts, tenants: list[Tenant], sources: dict[str, str],
    cluster_file: str = "cluster.yaml", hosts_file: str = "hosts.yaml",
) -> list[Problem]:
    """Checks that need more than one file: names claimed twice, replicas vs. nodes."""
    from controlplane.core.names import RESERVED_LABELS

    problems: list[Problem] = []
    claimed: dict[str, tuple[str, str]] = {}  # canonical host -> (file, field)
    portal_names = {f"{h}.{cluster.domain}" for h in cluster.portal.hostnames}
    if cluster.portal.serve_apex:
        portal_names.add(cluster.domain)
    for host in portal_names:
        claimed[host] = (cluster_file, "portal")
    if cluster.console is not None:
        claimed[f"{cluster.console.hostname}.{cluster.domain}"] = (cluster_file,
                                                                   "console.hostname")
        claimed[f"{cluster.console.preview_hostname}.{cluster.domain}"] = (
            cluster_file, "console.preview_hostname")
    web = len(hosts.web_nodes)
    if web == 0:
        problems.append(Problem(hosts_file, "nodes", "no node has the 'web' role"))
    backup_nodes = [n.name for n in hosts.nodes if "backup" in n.roles]
    if len(backup_nodes) > 1:
        problems.append(Problem(hosts_file, "nodes", "the 'backup' role is on "
                                f"{', '.join(backup_nodes)}; one node holds the repository"))

    codes: dict[str, str] = {}     # message code -> the file that took it
    for t in tenants:
        src = sources[t.name]
        if t.name in RESERVED_LABELS:
            problems.append(Problem(src, "name", f"{t.name!r} is reserved for county services; "
                                    "choose another name"))
        wanted = [(f"{t.name}.{cluster.domain}", "name")]
        wanted += [(a, f"aliases[{i}]") for i, a in enumerate(t.aliases)]
        for host, where in wanted:
            if host in claimed:
                other_file, other_field = claimed[host]
                problems.append(Problem(src, where, f"{host!r} is already claimed by "
                                        f"{other_file} ({other_field})"))
            else:
                claimed[host] = (src, where)
        for i, alias in enumerate(t.aliases):
            if cluster.console is not None and alias.endswith(
                    f".{cluster.console.preview_hostname}.{cluster.domain}"):
                problems.append(Problem(src, f"aliases[{i}]", f"{alias!r} is under the "
                                        "county's preview hosts (one per unit); choose "
                                        "another name"))
            elif alias.endswith("." + cluster.domain):
                first = alias[: -len(cluster.domain) - 1]
                if "." not in first and first in RESERVED_LABELS:
                    problems.append(Problem(src, f"aliases[{i}]",
                                            f"{alias!r} uses a reserved county name"))
        if t.messages is not None:
            if t.messages.code in codes:
                problems.append(Problem(src, "messages.code", f"{t.messages.code!r} is "
                                        f"already the message code of {codes[t.messages.code]};"
                                        " each unit's numbers need their own code"))
            codes.setdefault(t.messages.code, src)
            if t.site.type == "proxy":
                problems.append(Problem(src, "messages", "a proxy site's paths all belong to "
                                        "its application; the message box needs a static or "
                                        "PHP site"))
        replicas = _replicas(t, cluster)
        if web and replicas > web:
            problems.append(Problem(src, "replicas", f"{replicas} replicas but only {web} web "
                                    f"node(s) in hosts.yaml; allowed: 1-{web}"))
        if t.site.type == "proxy":
            problems += _upstream_problems(src, t.site.upstreams, cluster, hosts)
        if t.site.type == "php" and t.site.database and not any(
                "db" in n.roles for n in hosts.nodes):
            problems.append(Problem(src, "site.database", "a database needs a node with the "
                                    "'db' role in hosts.yaml; add the role or set "
                                    "database: false"))
    return problems


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
# IPv6 forms that carry an IPv4 address in their last 32 bits and reach it: IPv4-mapped,
# IPv4-compatible (deprecated, still routed by some stacks) and NAT64's well-known prefix.
_CARRIERS = (ipaddress.ip_network("::ffff:0:0/96"), ipaddress.ip_network("::/96"),
             ipaddress.ip_network("64:ff9b::/96"))


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
                   ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 address stands for (::ffff:127.0.0.1, ::127.0.0.1 and
    64:ff9b::127.0.0.1 are 127.0.0.1), judged as that; `ip` itself otherwise. :: and ::1
    stay what they are (unspecified, loopback)."""
    if ip.version == 6 and int(ip) > 1 and any(ip in net for net in _CARRIERS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


def _upstream_problems(src: str, upstreams: list[str], cluster: Cluster,
                       hosts: Hosts) -> list[Problem]:
    """A proxied unit's upstreams must be somewhere else than the cluster itself: not
    loopback, link-local or unspecified, not a node, the control machine's console; unless
    cluster.yaml `proxy.allow_upstreams` (the operator's hand, not the unit's) allows it."""
    own = {ipaddress.ip_address(a) for n in hosts.nodes
           for a in (n.address, n.address6, n.source, n.floating, n.floating6) if a}
    if cluster.console is not None:
        own.add(ipaddress.ip_address(cluster.console.address))
    allowed = [ipaddress.ip_network(a) for a in cluster.proxy.allow_upstreams]
    out = []
    for i, url in enumerate(upstreams):
        host = (urlsplit(url).hostname or "").strip("[]")
        if host == "localhost" or host.endswith(".localhost"):
            ip = ipaddress.ip_address("127.0.0.1")
        else:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
                    # 127.1, 0x7f.1: no top-level domain is a number; the resolver reads
                    # these as addresses (inet_aton), not as names.
                    out.append(Problem(src, f"site.upstreams[{i}]", f"{url!r} is an "
                                       "address written short or in hex; write it in full "
                                       "(a.b.c.d)"))
                continue                      # a name: resolved by nginx, not judged here
        ip = _embedded_ipv4(ip)
        # 0.0.0.0/8 is "this network": the kernel may take any of it as this host.
        this_net = ip.version == 4 and ip in _THIS_NETWORK
        why = ("loopback" if ip.is_loopback else "link-local" if ip.is_link_local
               else "unspecified" if ip.is_unspecified or this_net
               else "multicast" if ip.is_multicast
               else "broadcast" if ip == _BROADCAST
               else "an address of this cluster" if ip in own else "")
        if why and not any(ip in net for net in allowed):
            out.append(Problem(src, f"site.upstreams[{i}]", f"{url!r} is {why}: a unit's "
                               "proxy may not reach the cluster's own machines or services; "
                               "use the application's own address, or have the county allow "
                               "it in cluster.yaml `proxy: {allow_upstreams: [CIDR]}`"))
    return out
