"""A published page as the search index keeps it."""
from __future__ import annotations

from typing import Any

from controlplane.core import pagetext


def url_of(host: str, path: str) -> str:
    """Scheme-relative, so the result links to the page over whatever the reader came by."""
    if path == "index.html" or path.endswith("/index.html"):
        path = path[: -len("index.html")]
    return f"//{host}/{path}"


def record(host: str, path: str, digest: str, data: bytes,
           segment: Any) -> dict[str, Any] | None:
    """The index record of one HTML page (None: not a page with text)."""
    page = pagetext.extract(path, data)
    if page is None or page.kind != "html":
        return None
    body = " ".join(" ".join(t.split()) for _, t in page.chunks)
    title = page.title or path
    return {"path": path, "digest": digest, "url": url_of(host, path), "title": title,
            "date": page.date, "body": body, "seg_title": segment(title),
            "seg_body": segment(body)}
