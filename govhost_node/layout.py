"""Where a node keeps a config release and what follows it, in one value: the release steps,
the firewall and the floating addresses read their paths from a `Layout`, so that a test
runs the real steps in a directory of its own (`Layout.under(tmp)`) and a node runs them in
the places bootstrap made (`NODE`)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    root: str = "/etc/govhost"                       # releases/, current, previous, waf/
    logs: str = "/var/log/govhost"
    state: str = "/var/lib/govhost"                  # firewall/, vrrp-*, acme/, tamper/, …
    srv: str = "/srv/govhost"                        # sites/ (units' trees), restore/
    run: str = "/run"                                # pid files
    sbin: str = "/usr/local/sbin"                    # the node commands
    systemd_units: str = "/etc/systemd/system"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    sysctl_dir: str = "/etc/sysctl.d"
    logrotate_dir: str = "/etc/logrotate.d"
    proc_sys: str = "/proc/sys"
    # keepalived's probes keep their streaks in /run: they start again at boot
    streaks: str = "/run/govhost-vrrp"

    @classmethod
    def under(cls, base: str) -> "Layout":
        """Every path of a node moved under `base` (for tests)."""
        return cls(**{f.name: os.path.join(base, getattr(cls, f.name).lstrip("/"))
                      for f in dataclasses.fields(cls)})

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


NODE = Layout(streaks=os.environ.get("GOVHOST_VRRP_STREAKS", Layout.streaks))
