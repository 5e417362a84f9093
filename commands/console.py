"""`govhost` commands: The unit web console."""
from __future__ import annotations

import typer

from commands.output import call, county, err, fail
from controlplane.core import errors

app = typer.Typer()


@app.command("console")
def console(listen: str = typer.Option("127.0.0.1:8090", "--listen", help="address:port the "
                                       "cluster's nginx proxies the console's name to."),
            http: bool = typer.Option(False, "--http", help="Plain HTTP straight to browsers "
                                      "(a lab on one machine): cookies without Secure.")
            ) -> None:
    """Serve the unit web console (people: `govhost user add`)."""
    import uvicorn

    from controlplane.console.app import build
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        fail(errors.GovhostError(f"--listen {listen!r}: expected address:port"))
    c = county()
    inv = call(lambda: c.inv)
    app_ = build(c, secure=not http)
    # Only the nodes' nginx may say who the visitor is (X-Forwarded-For).
    proxies = sorted({a for n in inv.hosts.nodes for a in (n.address, n.source, n.address6)
                      if a})
    err.print(f"govhost console on http://{listen}/ ({'HTTP' if http else 'behind HTTPS'})",
              highlight=False)
    uvicorn.run(app_, host=host.strip("[]"), port=int(port), proxy_headers=True,
                forwarded_allow_ips=proxies, log_level="warning", server_header=False)
