"""`govhost` commands: Certificates."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from commands.output import at_option, call, county, emit, err, out, table, when

app = typer.Typer()
cert_app = typer.Typer(help="HTTPS certificates: ACME, the county CA, imported ones; renewal.",
                       no_args_is_help=True)
app.add_typer(cert_app, name="cert")
ca_app = typer.Typer(help="The county's internal CA.", no_args_is_help=True)
cert_app.add_typer(ca_app, name="ca")


_STATE_STYLE = {"ok": "green", "due": "yellow", "missing": "yellow", "failing": "red",
                "expired": "red", "import needed": "yellow", "obsolete": "dim",
                "names changed": "yellow", "untrusted chain": "red"}


@cert_app.command("status")
def cert_status(as_json: bool = typer.Option(False, "--json"),
                at: Optional[str] = typer.Option(None, "--at", help="Judge as of this time.")
                ) -> None:
    """Every certificate: names, issuer, not-after, days left, state, last error."""
    from controlplane.tls import certificates as tls
    rows = call(tls.status, county(), at_option(at, as_json), as_json=as_json)
    if as_json:
        emit(rows)
        return
    t = table("certificates", "certificate", "issuer", "names", "units", "not after",
              "days left", "renews", "state", "last error")
    for r in rows:
        names = ", ".join(r["names"][:3]) + (f" +{len(r['names']) - 3}" if len(r["names"]) > 3
                                            else "")
        style = _STATE_STYLE.get(r["state"], "")
        t.add_row(r["lineage"], r["issuer"], names, str(len(r["units"])), when(r["not_after"]),
                  "-" if r["days_left"] is None else f"{r['days_left']:.0f}",
                  when(r["renew_at"]), f"[{style}]{r['state']}[/]" if style else r["state"],
                  (r["last_error"][:90] + (f" (next try {when(r['next_attempt'])})"
                                           if r["next_attempt"] else "")) if r["last_error"]
                  else "")
    out.print(t)
    if any(r["state"] in ("failing", "expired") for r in rows):
        raise typer.Exit(1)


def _cert_result(res: dict, as_json: bool) -> None:
    if as_json:
        emit(res)
    else:
        t = table("certificate run", "certificate", "issuer", "why", "result", "seconds")
        for r in res["results"]:
            t.add_row(r["lineage"], r["issuer"], r["reason"],
                      "[green]issued[/]" if r["ok"] else f"[red]failed[/]: {r['error'][:120]}",
                      f"{r['seconds']:.1f}")
        for r in res["skipped"]:
            t.add_row(r["lineage"], "", r["reason"], f"[yellow]not now[/]: {r['why']}", "")
        out.print(t)
        if not res["results"] and not res["skipped"]:
            out.print("nothing is due")
        if res["apply"]:
            out.print(f"apply: {res['apply']['result']}")
        out.print(f"ACME orders in the last 7 days: {res['orders_this_week']}")
    if any(not r["ok"] for r in res["results"]) or (
            res["apply"] and res["apply"]["result"] not in ("changed", "unchanged")):
        raise typer.Exit(1)


@cert_app.command("renew")
def cert_renew(force: bool = typer.Option(False, "--force", help="Renew every certificate "
                                          "now, due or not, ignoring backoff."),
               at: Optional[str] = typer.Option(None, "--at", help="Decide what is due as of "
                                                "this time (testing the schedule)."),
               no_apply: bool = typer.Option(False, "--no-apply", help="Store new certificates "
                                             "but do not ship them yet."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Issue what is missing, renew what is due, then apply. Run by a timer."""
    from controlplane.converge import service
    from controlplane.tls import certificates as tls
    res = call(lambda: tls.renew(county(), force=force, now=at_option(at, as_json),
                                 deploy=None if no_apply else service.apply,
                                 say=lambda m: None if as_json else
                                 err.print(f"[dim]{m}[/]")), as_json=as_json)
    _cert_result(res, as_json)


@cert_app.command("issue")
def cert_issue(unit: str = typer.Argument(..., help="Unit name, or _portal."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Issue a unit's certificate now (its whole lineage), then apply."""
    from controlplane.converge import service
    from controlplane.tls import certificates as tls
    res = call(lambda: tls.renew(county(), units=[unit], force=True, deploy=service.apply,
                                 say=lambda m: None if as_json else err.print(f"[dim]{m}[/]")),
               as_json=as_json)
    _cert_result(res, as_json)


@cert_app.command("import")
def cert_import(unit: str = typer.Argument(..., help="Unit name (issuer manual)."),
                cert: Path = typer.Option(..., "--cert", help="PEM: the certificate, then its "
                                          "intermediates."),
                key: Path = typer.Option(..., "--key", help="PEM: its private key."),
                root: list[Path] = typer.Option([], "--root", help="Also trust this root "
                                                "(e.g. a CA not in the system store)."),
                no_apply: bool = typer.Option(False, "--no-apply"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Import a bought certificate after checking key, chain and names; then apply."""
    from controlplane.converge import service
    from controlplane.tls import certificates as tls
    res = call(lambda: tls.import_cert(county(), unit, cert, key, root,
                                       deploy=None if no_apply else service.apply),
               as_json=as_json)
    if as_json:
        emit(res)
    else:
        out.print(f"[green]imported[/] {res['lineage']}: {', '.join(res['names'])}, valid "
                  f"until {when(res['not_after'])}"
                  + (f"; apply: {res['apply']['result']}" if res["apply"] else ""))


@ca_app.command("export")
def cert_ca_export(output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                         help="Write here instead of stdout.")
                   ) -> None:
    """The county CA's root certificate (PEM), to install on the units' computers."""
    from controlplane.tls import certificates as tls
    pem = call(tls.ca_export, county())
    if output:
        output.write_bytes(pem)
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(pem.decode())
