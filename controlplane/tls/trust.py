"""What a site's certificate must verify to, as a visitor's browser (and an inspector's)
would judge it: an ACME certificate to the CA's roots (`tls.acme.issued_root` where the CA is
not a public one, as in the lab; the system's public roots otherwise), an imported one to the
public roots, an internal one to the county CA. Probes and the crawl verify the chain and the
name with these, so a node serving an expired, wrong or untrusted certificate is a failed
probe with that reason."""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Mapping

from controlplane.core.county import County
from controlplane.core.inventory import Inventory
from controlplane.tls.certs import SYSTEM_ROOTS


def context(cafile: str) -> ssl.SSLContext:
    """A client context that trusts only `cafile` and checks the name (TLS 1.2 at least)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def roots_for(issuer: str, acme_root: str | None, county_ca: Path) -> str:
    if issuer == "internal":
        return str(county_ca)
    if issuer == "acme" and acme_root:
        return acme_root
    return SYSTEM_ROOTS


def site_contexts(hosts_by_tenant: Mapping[str, str], served_with: Mapping[str, str],
                  records: Mapping[str, Mapping[str, Any]], acme_root: str | None,
                  county_ca: Path) -> dict[str, ssl.SSLContext]:
    """Site host -> the context its certificate must verify with (one per trust store).
    A lineage without a record is taken by its name's prefix (`internal-`, `manual-`)."""
    made: dict[str, ssl.SSLContext] = {}
    out = {}
    for tenant, host in hosts_by_tenant.items():
        lineage = served_with.get(tenant)
        if lineage is None:
            continue
        issuer = (records.get(lineage) or {}).get("issuer") or (
            lineage.split("-", 1)[0] if lineage.startswith(("internal-", "manual-")) else "acme")
        cafile = roots_for(issuer, acme_root, county_ca)
        if cafile not in made:
            try:
                made[cafile] = context(cafile)
            except (OSError, ssl.SSLError):
                continue        # no such roots here: the probe goes unverified, not failed
        out[host] = made[cafile]
    return out


def for_inventory(county: County, inv: Inventory, records: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, ssl.SSLContext]:
    """`site_contexts` for a deployable inventory (certificates attached)."""
    acme = inv.cluster.tls.acme
    return site_contexts({t.name: inv.site_host(t) for t in inv.tenants}, inv.served_with,
                         records, str(acme.issued_root) if acme and acme.issued_root else None,
                         county.certs.ca_dir / "root.pem")
