"""Where a node keeps a config release and what follows it, in one value: the release steps,
the firewall and the floating addresses read their paths from a `Layout`, so that a test
runs the real steps in a directory of its own (`Layout.under(tmp)`) and a node runs them in
the places bootstrap made (`NODE`).

Plain attributes, not a dataclass: keepalived's probe imports this every second on every
node, and `dataclasses` alone costs more to import than the probe's own work."""
from __future__ import annotations

import os

# name -> where it is on a node
PLACES = {
    "root": "/etc/govhost",                      # releases/, current, previous, waf/, metrics/
    "logs": "/var/log/govhost",
    "state": "/var/lib/govhost",                 # firewall/, vrrp-*, acme/, tamper/, …
    "srv": "/srv/govhost",                       # sites/ (units' trees), restore/
    "run": "/run",                               # pid files
    "sbin": "/usr/local/sbin",                   # the node commands
    "lib": "/usr/local/lib/govhost",             # the node package, one directory per version
    "etc_default": "/etc/default",               # the agent's listen address
    "systemd_units": "/etc/systemd/system",
    "keepalived_conf": "/etc/keepalived/keepalived.conf",
    "sysctl_dir": "/etc/sysctl.d",
    "logrotate_dir": "/etc/logrotate.d",
    "proc_sys": "/proc/sys",
    # keepalived's probes keep their streaks in /run: they start again at boot
    "streaks": "/run/govhost-vrrp",
}


class Layout:
    __slots__ = tuple(PLACES)
    root: str
    logs: str
    state: str
    srv: str
    run: str
    sbin: str
    lib: str
    etc_default: str
    systemd_units: str
    keepalived_conf: str
    sysctl_dir: str
    logrotate_dir: str
    proc_sys: str
    streaks: str

    def __init__(self, **places: str) -> None:
        unknown = set(places) - set(PLACES)
        if unknown:
            raise TypeError(f"Layout has no place {', '.join(sorted(unknown))}")
        for name, default in PLACES.items():
            object.__setattr__(self, name, places.get(name, default))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Layout does not change; make another")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and \
            all(getattr(self, n) == getattr(other, n) for n in PLACES)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in PLACES))

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r}, …)"

    @classmethod
    def under(cls, base: str) -> "Layout":
        """Every path of a node moved under `base` (for tests)."""
        return cls(**{name: os.path.join(base, path.lstrip("/"))
                      for name, path in PLACES.items()})

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def previous(self) -> str:
        return f"{self.root}/previous"

    @property
    def sites(self) -> str:
        return f"{self.srv}/sites"

    @property
    def bootstrap_version(self) -> str:
        return f"{self.root}/bootstrap-version"

    @property
    def metrics(self) -> str:
        """TLS and basic auth of the exporters, kept apart from the releases."""
        return f"{self.root}/metrics"

    @property
    def firewall(self) -> str:
        return f"{self.state}/firewall"

    @property
    def challenges(self) -> str:
        return f"{self.state}/acme/.well-known/acme-challenge"

    @property
    def tool(self) -> str:
        return f"{self.sbin}/govhost-node"

    def pidfile(self, name: str) -> str:
        return f"{self.run}/{name}.pid"


NODE = Layout(streaks=os.environ.get("GOVHOST_VRRP_STREAKS") or PLACES["streaks"])
