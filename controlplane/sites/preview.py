"""Preview links (pure): a pending release seen as the public would see it, before it is live.

Every node's nginx answers one preview host per unit, `<unit>.preview.<county domain>`
(templates/nginx/preview.conf.j2), and serves a release of that unit from the unit's
replicas, but only to a browser holding a signed, expiring link. A host per unit keeps each
unit's preview pages in an origin of their own: a page in one unit's release can register
no service worker, set no cookie and read no storage that another unit's preview would use.
The console issues such a link to the unit's own people (and the county's operators); nginx
checks it with its `secure_link` module, turns it into a cookie for the rest of the visit
and serves the release's own files, with `X-Robots-Tag: noindex`, into a log of its own
(not the unit's, so previews are never counted as visits).

The signature is nginx's: base64url(md5("<expires>|<unit>|<release>|<key>")), the key
derived from the cluster secret and rendered only into a root-only file of the config
release. It binds the unit (nginx takes it from the host, never from the request), the
release and the time it ends: changing any of them breaks it.
"""
from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urlencode

from controlplane.core import secrets

ENTRY = "/_govhost/preview"
COOKIE = "govhost_preview"
RELEASE_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")
UNIT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def key(cluster_secret: bytes) -> str:
    """The nginx-side key: letters and digits (safe inside a quoted nginx string)."""
    return secrets.derive(cluster_secret, "preview-link", 40)


def signature(link_key: str, unit: str, release: str, expires: int) -> str:
    """nginx's secure_link value for this unit, release and end time."""
    digest = hashlib.md5(f"{expires}|{unit}|{release}|{link_key}".encode(),
                         usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def link(host: str, https: bool, link_key: str, unit: str, release: str, now: float,
         minutes: int) -> dict[str, object]:
    """The address that opens `release` of `unit` in preview until `now` + `minutes`;
    `host` is the unit's own preview host (units.preview_host)."""
    if not UNIT.fullmatch(unit) or not RELEASE_ID.fullmatch(release):
        raise ValueError(f"not a unit and release: {unit!r} {release!r}")
    expires = int(now) + minutes * 60
    query = urlencode({"r": release, "e": expires,
                       "s": signature(link_key, unit, release, expires)})
    scheme = "https" if https else "http"
    return {"url": f"{scheme}://{host}{ENTRY}?{query}", "expires": expires,
            "unit": unit, "release": release}
