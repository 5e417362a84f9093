"""The unit web console: every unit's own staff keep their site alive in a browser, with the
county's control intact. Server-rendered HTML (Starlette, Jinja2), Chinese first."""
