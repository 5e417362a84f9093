"""Render a complete nginx release for each node: pure, from inventory and placement.

A release is a mapping of relative path -> bytes. Its id is a hash of its content, so an
unchanged cluster renders the same id and apply has nothing to do. Decisions (is this node a
replica, which upstreams) are made here; templates only hold markup. Every value that reaches
an nginx template passes a final whitelist check, so a value that slipped past validation
still cannot inject configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import jinja2

from controlplane.backup import plan as backup_plan
from controlplane.core import accounts, paths, secrets, templates, wordlists
from controlplane.core.inventory import Inventory
from controlplane.core.manifest import Tenant
from controlplane.core.memo import key as memo_key
from controlplane.core.units import (
    CONSOLE,
    PORTAL,
    PREVIEW,
    console_host,
    preview_host,
    preview_zone,
)
from controlplane.sites import firewall, preview, vrrp, waf

# The console's forms (a login, a comment, a site request, SFTP keys): nginx refuses a larger
# body before the console reads a byte of it; only the upload route takes max_upload_mb.
FORM_KB = 64
_NGINX_SAFE = re.compile(r"^[A-Za-z0-9._:\-\[\]/ ,=>]*$")


def _nginx_finalize(value: Any) -> Any:
    text = "" if value is None else str(value)
    if not _NGINX_SAFE.match(text):
        raise ValueError(f"refusing to write {text!r} into an nginx config")
    return text


# auto_reload off: templates do not change while govhost runs; skip a stat per render
_conf_env = templates.environment(
    "conf", autoescape=False, finalize=_nginx_finalize, trim_blocks=True, lstrip_blocks=True,
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, auto_reload=False)
_html_env = templates.environment(
    "page", autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    auto_reload=False)


@dataclass(frozen=True)
class Release:
    """The complete configuration of one node."""

    node: str
    files: Mapping[str, bytes] = field(hash=False)
    # Digests already known (kept by the memo with the files they are of): used for a file
    # only when it is that very bytes object.
    known: Mapping[str, tuple[bytes, str]] = field(default_factory=dict, hash=False,
                                                   compare=False, repr=False)

    @cached_property
    def digests(self) -> dict[str, str]:
        out = {}
        for p, b in self.files.items():
            k = self.known.get(p)
            out[p] = k[1] if k is not None and k[0] is b else hashlib.sha256(b).hexdigest()
        return out

    @cached_property
    def id(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.digests):
            h.update(f"{path}\0{self.digests[path]}\n".encode())
        return h.hexdigest()[:16]


def tenant_of(path: str) -> str | None:
    """Which tenant a release file belongs to (None for shared files)."""
    if path.startswith("vhosts/") and not path.startswith("vhosts/_"):
        return path[len("vhosts/"):-len(".conf")]
    if path.startswith("pages/") and not path.startswith("pages/_"):
        return path.split("/")[1]
    return None


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


# A bucket holds several names: with one name a bucket nginx must find a size where no two
# names share a bucket, which it did not for 150 units of ordinary names (a reviewer's test)
# nor for 16,000 names a node at 5,000 units, warned, and the node refused the release
# (stop 58). Names with the same nginx hash share a bucket at every size (a unit may choose
# aliases that do: "an" and "c0" hash alike), so the bucket also holds the largest such group.
NAMES_A_BUCKET = 6


_MASK = (1 << 64) - 1
_POWERS = [pow(31, k, 1 << 64) for k in range(512)]       # 31^k, k from the name's end
_KEYS: dict[str, int] = {}


def nginx_hash_key(name: str) -> int:
    """ngx_hash_key of a lower-cased name: key * 31 + byte in a 64-bit ngx_uint_t, that is
    the sum of byte * 31^(bytes after it), kept per name (every node's plan asks the same
    names: all units' preview hosts, each unit's names on its replicas)."""
    key = _KEYS.get(name)
    if key is None:
        data = name.lower().encode()
        powers = _POWERS[len(data) - 1::-1] if len(data) <= len(_POWERS) else \
            [pow(31, k, 1 << 64) for k in range(len(data) - 1, -1, -1)]
        key = _KEYS[name] = sum(map(operator.mul, data, powers)) & _MASK
    return key


def hash_sizes(names: list[str]) -> tuple[int, int]:
    """server_names_hash (and map_hash) max_size and bucket_size for these names.

    nginx stores each name in a bucket slot of pointer size + the name aligned to 8 bytes,
    plus a terminating pointer; the bucket holds NAMES_A_BUCKET of the longest name, more
    when more names share one hash, and a max_size well above the number of names lets
    nginx find a size without warning.
    """
    longest = max((len(n) for n in names), default=16)
    slot = 8 + ((longest + 2 + 7) // 8) * 8
    same = Counter(nginx_hash_key(n) for n in set(names))
    per_bucket = NAMES_A_BUCKET + max(same.values(), default=1) - 1
    bucket = max(64, _pow2(per_bucket * slot + 8))
    max_size = max(1024, _pow2(len(names) * 4))
    return max_size, bucket


# A search is a GET without a body: nothing else reaches the node's search server, whose
# connections nginx keeps open (a body passed on would be read there as the next request).
_SEARCH = b"""location = /search {
    limit_except GET {
        deny all;
    }
    proxy_pass http://govhost_search;
    proxy_pass_request_body off;
    proxy_set_header Content-Length "";
    proxy_set_header Transfer-Encoding "";
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Govhost-Unit $govhost_unit;
    proxy_connect_timeout 2s;
    proxy_read_timeout 15s;
}
"""

# What every message box location sends on to the node's govhost-messages (one hop, on the
# node): the unit and the source as nginx knows them, the body only once it is whole.
_MESSAGES_PROXY = b"""proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Govhost-Unit $govhost_unit;
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For "";
proxy_request_buffering on;
proxy_connect_timeout 2s;
proxy_read_timeout 20s;
proxy_send_timeout 10s;
"""


def _zone(rate: int) -> str:
    return f"govhost_rl_{rate}"


def render_cluster(inv: Inventory, placement: Mapping[str, tuple[str, ...]],
                   serving: Mapping[str, tuple[str, ...]] | None = None,
                   drained: frozenset[str] = frozenset()) -> dict[str, Release]:
    """Render the release of every node in hosts.yaml.

    A tenant's files depend only on whether a node holds one of its replicas (the node's
    own address is in snippets/listen.conf), so each tenant is rendered at most twice.
    `serving` (a placement change under way): the nodes that serve a tenant from their own
    disk, when more than the replicas other nodes proxy to (see apply's transition).
    `drained` nodes keep out of VRRP: their floating addresses stay with their peers."""
    shared = _Shared(inv)
    releases = {n.name: render_node(inv, placement, n.name, shared, serving, n.name in drained)
                for n in inv.hosts.nodes}
    if inv.memo is not None:
        inv.memo.flush()
    return releases


def _server_names(inv: Inventory, t: Tenant) -> list[str]:
    return [inv.site_host(t), *t.aliases]


def _portal_names(inv: Inventory) -> list[str]:
    names = [f"{h}.{inv.cluster.domain}" for h in inv.cluster.portal.hostnames]
    if inv.cluster.portal.serve_apex:
        names.append(inv.cluster.domain)
    return names


class _Shared:
    """What every node's release is made of alike, worked out once for the cluster: each
    unit's names and rate, and its files in the two forms a node can need (replica or
    proxy), rendered on first need."""

    def __init__(self, inv: Inventory):
        self.names = {t.name: _server_names(inv, t) for t in inv.tenants}
        self.rates = {inv.rate_limit(t).requests_per_second for t in inv.tenants}
        self.unit_files: dict[tuple[str, bool], dict[str, bytes]] = {}
        # the digests the memo kept with the units' files, by path (with the bytes they are of)
        self.digests: dict[str, tuple[bytes, str]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}  # a unit's account spec (tenants.json)
        self.portal: bytes | None = None
        self.waf_hosts: bytes | None = None


def render_node(inv: Inventory, placement: Mapping[str, tuple[str, ...]], node: str,
                shared: _Shared | None = None,
                serving: Mapping[str, tuple[str, ...]] | None = None,
                drained: bool = False) -> Release:
    serving = serving or placement
    nodes = {n.name: n for n in inv.hosts.nodes}
    me = nodes[node]
    host = f"[{me.address}]" if ":" in me.address else me.address
    listen, listen_tls = f"{host}:80", f"{host}:443"
    # A second listener on the node's IPv6 address, where it has one; on a web node with
    # floating addresses, one on each of them (nginx binds before keepalived brings one
    # here: the node allows non-local binds), so the node serves whichever it comes to hold.
    extra = [f"[{me.address6}]"] if me.address6 and me.address6 != me.address else []
    if "web" in me.roles:
        extra += [f"[{a}]" if ":" in a else a for a in vrrp.floating_of(inv.hosts)]
    base = {
        "node": node,
        "listen": listen,
        "listen_tls": listen_tls,
        "listen_extra": extra,
        "log_root": paths.NODE_LOGS,
        "pages_root": f"{paths.NODE_CURRENT}/pages",
        "nginx_user": paths.NGINX_USER,
    }
    files: dict[str, bytes] = {}
    all_names: list[str] = _portal_names(inv) + [paths.PROBE_HOST]
    if shared is None:
        shared = _Shared(inv)
    rates = set(shared.rates)
    unit_files = shared.unit_files

    for t in inv.tenants:
        replicas = placement[t.name]
        all_names.extend(shared.names[t.name])
        replica = node in serving.get(t.name, replicas)
        key = (t.name, replica)
        if key not in unit_files:
            _tenant_files(inv, t, replicas, nodes, shared, replica)
        files.update(unit_files[key])

    any_tls = bool(inv.served_with)
    files["vhosts/_default.conf"] = _conf_env.get_template("nginx/default.conf.j2").render(
        {**base, "probe_host": paths.PROBE_HOST, "tls": any_tls}).encode()
    default_rate = inv.cluster.defaults.rate_limit
    files["vhosts/_portal.conf"] = _conf_env.get_template("nginx/portal.conf.j2").render(
        {**base, "server_names": _portal_names(inv), "tls": _tls_ctx(inv, PORTAL),
         "rate_zone": _zone(default_rate.requests_per_second),
         "burst": default_rate.burst}).encode()
    if inv.cluster.console is not None:
        console = inv.cluster.console
        all_names.append(console_host(inv))
        files["vhosts/_console.conf"] = _conf_env.get_template("nginx/console.conf.j2").render(
            {**base, "server_name": console_host(inv), "tls": _tls_ctx(inv, CONSOLE),
             "upstream": console.listen, "max_upload_mb": console.max_upload_mb,
             "form_kb": FORM_KB, **_county_limit(inv)}).encode()
        files["snippets/console-proxy.conf"] = (
            f'proxy_set_header X-Govhost-Proxy "{secrets.console_proxy(inv.secret)}";\n'
        ).encode()
        previews, preview_names = _preview_files(inv, base, serving, placement, node)
        all_names.extend(preview_names)
        files.update(previews)
    files.update(_tls_files(inv))
    if shared.portal is None:
        shared.portal = _portal_page(inv)
    files["pages/_portal/index.html"] = shared.portal
    files["snippets/listen.conf"] = "".join(
        f"listen {h}:80;\n" for h in [host, *extra]).encode()
    files["snippets/listen-tls.conf"] = "".join(
        f"listen {h}:443 ssl http2;\n" for h in [host, *extra]).encode()
    files["snippets/acme-challenge.conf"] = _ACME_CHALLENGE
    files["snippets/search.conf"] = _SEARCH
    files["snippets/messages-proxy.conf"] = _MESSAGES_PROXY
    files["snippets/hsts.conf"] = _hsts(inv.cluster.tls.hsts_max_age)
    files["snippets/ocsp.conf"] = _OCSP
    files["snippets/tls.conf"] = _conf_env.get_template("nginx/tls.conf.j2").render(
        base).encode()
    files["snippets/security.conf"] = _conf_env.get_template("nginx/security.conf.j2").render(
        base).encode()
    files["snippets/proxy_to_replicas.conf"] = _conf_env.get_template(
        "nginx/proxy_to_replicas.conf.j2").render(base).encode()
    files["snippets/fastcgi.conf"] = _conf_env.get_template("nginx/fastcgi.conf.j2").render(
        base).encode()
    if any(name.startswith("php-fpm/") for name in files):
        files["php-fpm.conf"] = _conf_env.get_template("php/php-fpm.conf.j2").render(
            {**base, "pid_file": paths.PHP_FPM_PID}).encode()

    any_waf = any(name.startswith("waf/") for name in files)
    if any_waf:
        files["waf/main.conf"] = waf.main_conf()
        # which unit a request in the node's WAF audit log was for (the agent counts them)
        if shared.waf_hosts is None:
            shared.waf_hosts = (json.dumps(
                {name: t for t, names in shared.names.items() for name in names},
                indent=0, sort_keys=True) + "\n").encode()
        files["waf/hosts.json"] = shared.waf_hosts
    max_size, bucket = hash_sizes(all_names)
    rates.add(inv.cluster.defaults.rate_limit.requests_per_second)
    files["nginx.conf"] = _conf_env.get_template("nginx/nginx.conf.j2").render({
        **base,
        # two log files per tenant, two descriptors per proxied connection, some slack
        "rlimit_nofile": 2 * len(inv.tenants) + 2 * inv.cluster.nginx.worker_connections + 1024,
        "pid_file": paths.NODE_PID,
        "search_upstream": f"{host}:{paths.SEARCH_PORT}",
        "worker_connections": inv.cluster.nginx.worker_connections,
        "keepalive_timeout": inv.cluster.nginx.keepalive_timeout,
        "client_max_body_size_mb": inv.cluster.nginx.client_max_body_size_mb,
        "names_hash_max_size": max_size,
        "names_hash_bucket_size": bucket,
        # the preview maps hold every unit's preview host (sized as the names that hold them)
        "map_hash_max_size": max_size, "map_hash_bucket_size": bucket,
        "node_addresses": sorted(n.address for n in inv.hosts.nodes),
        "rate_zones": [{"name": _zone(r), "rate": r} for r in sorted(rates)],
        "waf_module": waf.MODULE if any_waf else None,
        "waf_rules": waf.main_path(files["waf/main.conf"]) if any_waf else None,
    }).encode()
    # The node creates each tenant's log and content directories before `nginx -t`.
    files["tenants.txt"] = "".join(f"{t.name}\n" for t in inv.tenants).encode()
    # The tenant accounts this node holds (its replicas), applied at activation.
    files["tenants.json"] = accounts.node_spec(inv, serving, node, shared.accounts)
    databases = accounts.databases_spec(inv, placement, node)
    if databases is not None:
        files["databases.json"] = databases
    files["logrotate.conf"] = _logrotate(inv.cluster.compliance.log_retention_days)
    files["messages.json"] = _messages(inv, node)
    backup = backup_plan.node_spec(inv, placement, node)
    if backup is not None:
        files["backup.json"] = backup
        files["backup.key"] = inv.backup_key
    if inv.metrics is not None:
        files.update(_metrics_files(inv.metrics, node))
    files["updates.json"] = _updates(inv, node)
    php = [t.name for t in inv.tenants if t.site.type == "php"]
    rules = firewall.render(inv.hosts, me, firewall.db_clients(inv.hosts, placement, php),
                            _repositories(inv))
    if rules is not None:
        files["firewall.nft"] = rules
    for name, data in (("keepalived.conf", vrrp.render(inv.hosts, me)),
                       ("vrrp.json", vrrp.spec(inv.hosts, me, released=drained))):
        if data is not None:
            files[name] = data
    return Release(node=node, files=files, known=shared.digests)


def _repositories(inv: Inventory) -> frozenset[str]:
    offsite = inv.cluster.backup.offsite
    return firewall.repository_nodes(inv.hosts, offsite.address if offsite else None)


def _county_limit(inv: Inventory) -> dict[str, Any]:
    """The county's default rate per visitor for its own hosts (console, preview), with a
    burst a page's stylesheet and script fit in even where the county set none."""
    rate = inv.cluster.defaults.rate_limit
    return {"rate_zone": _zone(rate.requests_per_second), "burst": rate.burst or 20}


def _preview_files(inv: Inventory, base: Mapping[str, Any],
                   serving: Mapping[str, tuple[str, ...]],
                   placement: Mapping[str, tuple[str, ...]], node: str
                   ) -> tuple[dict[str, bytes], list[str]]:
    """The preview hosts, one per unit: which units' releases this node holds (served from
    disk) and which it forwards to their replicas (the upstream the unit's own vhost defines
    here); one HTTPS server block per certificate that covers some of them. Also every
    preview host's name (for the server names' hash)."""
    assert inv.cluster.console is not None
    units, plain, by_cert = [], [], {}
    for t in inv.tenants:
        if t.site.type == "proxy":
            continue             # a proxied application has no releases to preview
        local = node in serving.get(t.name, placement[t.name])
        host = preview_host(inv, t.name)
        units.append((t.name, host, "local" if local else f"govhost_t_{t.name.replace('-', '_')}"))
        tls = _tls_ctx(inv, PREVIEW + t.name)
        if tls is None:
            plain.append(host)
        else:
            by_cert.setdefault(tls["cert"], {"tls": tls, "names": []})["names"].append(host)
    conf = _conf_env.get_template("nginx/preview.conf.j2").render({
        **base, "zone": preview_zone(inv), "units": units,
        "plain": [plain] if plain else [], "certs": [by_cert[c] for c in sorted(by_cert)],
        "cookie": preview.COOKIE, "entry": preview.ENTRY,
        "max_age": inv.cluster.console.preview_minutes * 60,
        "sites_root": paths.NODE_SITES, **_county_limit(inv)})
    key = f'set $govhost_preview_key "{preview.key(inv.secret)}";\n'
    return ({"vhosts/_preview.conf": conf.encode(),
             "snippets/preview-key.conf": key.encode()}, [u[1] for u in units])


_ACME_CHALLENGE = (
    "# ACME HTTP-01 answers, written by `govhost-node challenge` on every node (any node may\n"
    "# receive the CA's check). Plain files, never a tenant's.\n"
    "location ^~ /.well-known/acme-challenge/ {\n"
    "    allow all;   # the CA checks a unit's name before its launch too\n"
    f"    root {paths.NODE_ACME};\n"
    "    default_type text/plain;\n    access_log off;\n    try_files $uri =404;\n}\n").encode()

# Stapling only for certificates that name an OCSP responder; nginx fetches and caches it.
_OCSP = b"ssl_stapling on;\nssl_stapling_verify on;\n"


METRICS_DIR = "/etc/govhost/metrics"   # where the node keeps the live copy (not a release)


def _metrics_files(access: Any, node: str) -> dict[str, bytes]:
    """TLS and basic auth for the node exporter (exporter-toolkit's web config, with the
    bcrypt hash it wants) and for govhost-agent (the SHA-256 of the expected header)."""
    cert, key = access.node_certs[node]
    web = {"tls_server_config": {"cert_file": f"{METRICS_DIR}/node.crt",
                                 "key_file": f"{METRICS_DIR}/node.key",
                                 "min_version": "TLS12"},
           "basic_auth_users": {access.user: access.password_hash}}
    agent = {"cert_file": f"{METRICS_DIR}/node.crt", "key_file": f"{METRICS_DIR}/node.key",
             "authorization_sha256": access.agent_sha256}
    return {"metrics/node.crt": cert, "metrics/node.key": key,
            "metrics/web.yml": json.dumps(web, indent=1, sort_keys=True).encode() + b"\n",
            "metrics/agent.json": json.dumps(agent, indent=1, sort_keys=True).encode() + b"\n"}


def _updates(inv: Inventory, node: str) -> bytes:
    """This node's slot in the cluster's update window (nodes in hosts.yaml order, one
    `spacing_minutes` apart) and the peers that must be up before it updates."""
    u = inv.cluster.updates
    names = [n.name for n in inv.hosts.nodes]
    h, m = (int(x) for x in u.window.split(":"))
    at = (h * 60 + m + names.index(node) * u.spacing_minutes) % (24 * 60)
    return (json.dumps({"at": f"{at // 60:02d}:{at % 60:02d}", "origins": list(u.origins),
                        "peers": [n.address for n in inv.hosts.nodes if n.name != node]},
                       indent=1, sort_keys=True) + "\n").encode()


def _hsts(max_age: int) -> bytes:
    if max_age <= 0:
        return b"# HSTS disabled (cluster.yaml tls.hsts_max_age: 0)\n"
    return f'add_header Strict-Transport-Security "max-age={max_age}" always;\n'.encode()


def _tls_ctx(inv: Inventory, unit: str) -> dict[str, Any] | None:
    cert = inv.served_with.get(unit)
    if cert is None:
        return None
    return {"cert": cert, "stapling": inv.cluster.tls.ocsp_stapling
            and inv.certificates[cert].ocsp}


def _tls_files(inv: Inventory) -> dict[str, bytes]:
    """Every certificate some unit is served with, with its key (mode 0600 on the node:
    see apply.private). Every node serves every name, so every node gets them all."""
    out: dict[str, bytes] = {}
    for cert in sorted(set(inv.served_with.values())):
        d = inv.certificates[cert]
        out[f"tls/{cert}.crt"] = d.chain
        out[f"tls/{cert}.key"] = d.key
    return out


def _logrotate(days: int) -> bytes:
    """Tenant logs kept `days` days (the network security law asks for six months),
    compressed; nginx reopens its logs after each rotation."""
    return (f"# Written by govhost: tenant logs rotated daily, compressed, kept {days} days.\n"
            f"{paths.NODE_LOGS}/tenants/*/*.log {paths.NODE_LOGS}/waf-audit.log {{\n"
            f"    daily\n    rotate {days}\n    maxage {days}\n    compress\n"
            "    delaycompress\n    dateext\n    missingok\n    notifempty\n"
            "    sharedscripts\n    postrotate\n"
            f"        [ -s {paths.NODE_PID} ] && kill -USR1 \"$(cat {paths.NODE_PID})\" || true\n"
            "    endscript\n}\n").encode()


def _messages(inv: Inventory, node: str) -> bytes:
    """The node's message service settings (govhost_node/message_server.py): the units that
    take messages and their codes, the county's word lists and limit per unit, this node's
    number, and the peers that keep the second
    copy, tried in turn from the next node on, so that the nodes share the copies. Every
    node gets it (an empty `units` answers every site with 404)."""
    nodes = list(inv.hosts.nodes)
    i = next(k for k, n in enumerate(nodes) if n.name == node)
    peers = nodes[i + 1:] + nodes[:i]
    units = {t.name: t.messages.code for t in inv.tenants if t.messages is not None}
    return (json.dumps({
        "node": node,
        "index": i + 1,
        "units": units,
        # the county's block and review words (none where no unit takes messages: a list's
        # change then ships no new release)
        "words": wordlists.for_messages(inv.wording) if units else {},
        "per_unit": [inv.cluster.messages.per_unit_hour, 3600],
        "work_bits": inv.cluster.messages.work_bits,
        "titles": {t.name: t.title for t in inv.tenants if t.messages is not None},
        "peers": [f"[{n.address}]:{paths.MESSAGES_PORT}" if ":" in n.address
                  else f"{n.address}:{paths.MESSAGES_PORT}" for n in peers],
        "secret": secrets.messages(inv.secret),
    }, indent=1, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class _UnitInputs:
    """Everything a unit's files are rendered from besides its manifest. `_unit_files` reads
    nothing else, so the two together are the memo's key for them (core/memo.py)."""

    server_names: tuple[str, ...]
    rate_zone: str
    burst: int
    tls: dict[str, Any] | None
    waf_mode: str
    gate: tuple[str, ...] | None
    county: str
    domain: str
    replicas: tuple[str, ...]
    replica_addresses: tuple[str, ...]


_UNIT_FIELDS = tuple(f.name for f in dataclasses.fields(_UnitInputs))


def _unit_inputs(inv: Inventory, t: Tenant, replicas: tuple[str, ...],
                 nodes: Mapping[str, Any], names: list[str]) -> _UnitInputs:
    rl = inv.rate_limit(t)
    return _UnitInputs(
        server_names=tuple(names), rate_zone=_zone(rl.requests_per_second),
        burst=rl.burst, tls=_tls_ctx(inv, t.name), waf_mode=waf.mode_of(t, inv.waf_modes),
        gate=tuple(inv.launch_allowed()) if t.name in inv.gated else None,
        county=inv.cluster.name, domain=inv.cluster.domain, replicas=tuple(replicas),
        replica_addresses=tuple(nodes[r].address if ":" not in nodes[r].address
                                else f"[{nodes[r].address}]" for r in replicas))


def _tenant_files(inv: Inventory, t: Tenant, replicas: tuple[str, ...],
                  nodes: Mapping[str, Any], shared: _Shared, replica: bool) -> None:
    """A unit's files as a node needs them (`shared.unit_files`, by replica or not): its
    vhost, and where the node serves its content, its pages. With a memo, both forms at
    once, kept together with their digests and taken from it when a run before rendered
    the same manifest with the same inputs by the same code; without one, the form asked."""
    u = _unit_inputs(inv, t, replicas, nodes, shared.names[t.name])
    if inv.memo is None:
        shared.unit_files[(t.name, replica)] = _unit_files(t, u, replica)
        return
    k = memo_key("unit-files", t.model_dump_json(),
                 json.dumps([getattr(u, f) for f in _UNIT_FIELDS], sort_keys=True))
    kept = inv.memo.get(k)
    unpacked = None
    if kept is not None:
        try:
            unpacked = _unpack(kept)
        except (ValueError, TypeError, KeyError, IndexError):   # a damaged value
            unpacked = None
    if unpacked is None:
        forms = [_unit_files(t, u, replica) for replica in (True, False)]
        digests = [{p: hashlib.sha256(b).hexdigest() for p, b in f.items()} for f in forms]
        inv.memo.put(k, _pack(forms, digests))
    else:
        forms, digests = unpacked
    for replica, files, known in zip((True, False), forms, digests):
        shared.unit_files[(t.name, replica)] = files
        shared.digests.update({p: (files[p], d) for p, d in known.items()})


def _pack(forms: list[dict[str, bytes]], digests: list[dict[str, str]]) -> bytes:
    """Both forms as one value: a JSON line of their files' names, sizes and digests, then
    the files' bytes."""
    head = json.dumps([[[p, len(b), d[p]] for p, b in f.items()] for f, d in zip(forms, digests)],
                      ensure_ascii=False).encode()
    return b"".join([head, b"\n", *(b for f in forms for b in f.values())])


def _unpack(blob: bytes) -> tuple[list[dict[str, bytes]], list[dict[str, str]]]:
    nl = blob.index(b"\n")
    forms, digests, pos = [], [], nl + 1
    for entries in json.loads(blob[:nl]):
        files, known = {}, {}
        for path, size, digest in entries:
            files[path] = blob[pos:pos + size]
            known[path] = digest
            pos += size
        forms.append(files)
        digests.append(known)
    if pos != len(blob) or len(forms) != 2:
        raise ValueError("a kept value whose sizes do not add up")
    return forms, digests


def _unit_files(t: Tenant, u: _UnitInputs, replica: bool) -> dict[str, bytes]:
    ctx: dict[str, Any] = {
        "name": t.name,
        "upstream_id": t.name.replace("-", "_"),
        "server_names": list(u.server_names),
        "replica": replica,
        "replica_nodes": list(u.replicas),
        "replica_addresses": list(u.replica_addresses),
        "log_dir": f"{paths.NODE_LOGS}/tenants/{t.name}",
        "pages_root": f"{paths.NODE_CURRENT}/pages",
        "rate_zone": u.rate_zone,
        "burst": u.burst,
        "site_type": t.site.type,
        "content_root": f"{paths.NODE_SITES}/{t.name}/current",
        "sections": [s.name for s in t.sections],
        "tls": u.tls,
        "waf": None,
        "gate": list(u.gate) if u.gate is not None else None,
        "messages": t.messages.path if t.messages is not None else None,
        "messages_socket": paths.MESSAGES_SOCKET,
    }
    if t.site.type == "proxy":
        ctx["app_scheme"] = t.site.upstreams[0].split(":", 1)[0]
        ctx["app_servers"] = [up.split("://", 1)[1] for up in t.site.upstreams]
        ctx["timeout_seconds"] = t.site.timeout_seconds
        ctx["max_body_mb"] = t.site.max_body_mb
    home = f"{paths.NODE_SITES}/{t.name}"
    # The WAF checks a request where the unit is served (its replicas), once: a node that
    # proxies to a replica passes the request on unchecked.
    site_waf = waf.site_conf(u.waf_mode, t.waf.exclude_rules) if replica else None
    if site_waf is not None:
        ctx["waf"] = f"waf/{t.name}.conf"
    if t.site.type == "php":
        ctx.update(upload_mb=t.site.php.upload_mb, php_timeout=t.site.php.timeout_seconds,
                   php_socket=f"{paths.PHP_SOCKETS}/{t.name}.sock", files_root=f"{home}/files")
    files = {f"vhosts/{t.name}.conf":
             _conf_env.get_template("nginx/vhost.conf.j2").render(ctx).encode()}
    if site_waf is not None:
        files[f"waf/{t.name}.conf"] = site_waf
    if replica and t.site.type in ("static", "php"):
        files.update(_tenant_pages({"county": u.county, "domain": u.domain}, t))
    if replica and t.site.type == "php":
        files[f"php-fpm/{t.name}.conf"] = _conf_env.get_template("php/pool.conf.j2").render({
            "name": t.name, "user": accounts.user_name(t.name), "home": home,
            "socket": ctx["php_socket"], "nginx_user": paths.NGINX_USER,
            "max_children": t.site.php.max_children, "memory_mb": t.site.php.memory_mb,
            "upload_mb": t.site.php.upload_mb, "timeout": t.site.php.timeout_seconds,
        }).encode()
    return files


def _page_ctx(inv: Inventory) -> dict[str, Any]:
    return {"county": inv.cluster.name, "domain": inv.cluster.domain}


def _tenant_pages(page_ctx: Mapping[str, Any], t: Tenant) -> dict[str, bytes]:
    ctx = {**page_ctx, "title": t.title, "contact": t.contact, "sections": t.sections}
    out = {f"pages/{t.name}/index.html":
           _html_env.get_template("pages/placeholder.html.j2").render(ctx).encode()}
    section = _html_env.get_template("pages/section.html.j2")
    for s in t.sections:
        out[f"pages/{t.name}/{s.name}/index.html"] = section.render({**ctx, "section": s}).encode()
    return out


def _portal_page(inv: Inventory) -> bytes:
    def entry(t: Tenant) -> dict[str, Any]:
        return {"host": inv.site_host(t), "title": t.title, "sections": t.sections}

    return _html_env.get_template("pages/portal.html.j2").render({
        **_page_ctx(inv),
        "portal_title": inv.cluster.portal.title,
        "departments": [entry(t) for t in inv.tenants
                        if t.kind == "department" and t.name not in inv.gated],
        "townships": [entry(t) for t in inv.tenants
                      if t.kind == "township" and t.name not in inv.gated],
    }).encode()
