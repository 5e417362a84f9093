"""The console's routes, one module per capability; each declares its gate per route
(`Pages.needs`) and answers through `Pages` (console/pages.py)."""
from __future__ import annotations

from starlette.routing import Route

from controlplane.console.pages import Pages
from controlplane.console.routes import (
    auth,
    messages,
    people,
    requests,
    reviews,
    rollbacks,
    units,
    uploads,
)


def all_routes(p: Pages) -> list[Route]:
    return [*units.routes(p), *auth.routes(p), *requests.routes(p), *people.routes(p),
            *uploads.routes(p), *reviews.routes(p), *rollbacks.routes(p),
            *messages.routes(p)]
