"""`govhost` commands: The national inspection indicators."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from commands.output import at_option, call, county, emit, err, fail, out, table
from controlplane.core import errors

app = typer.Typer()
compliance_app = typer.Typer(help="The national inspection indicators, checked for every unit.",
                             no_args_is_help=True)
app.add_typer(compliance_app, name="compliance")


@compliance_app.command("check")
def compliance_check(units: list[str] = typer.Argument(None, help="Units (all when none)."),
                     at: Optional[str] = typer.Option(None, "--at", help="Judge as of this "
                                                      "time (e.g. a week's end)."),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """Crawl and check every unit now (links, footer, freshness, probes, HTTPS/IPv6, logs);
    the results go to the state store for the report and the exporter."""
    from controlplane.compliance import run as compliance_run
    at_time = at_option(at, as_json)
    res = call(lambda: compliance_run.check(county(), units or None, at_time,
                                            say=lambda m: None), as_json=as_json)
    data = {t: {k: v.to_json() for k, v in vs.items()} for t, vs in res.items()}
    if as_json:
        emit(data)
    else:
        from controlplane.compliance import rules
        t = table("compliance", "unit", *rules.INDICATORS)
        for name, vs in sorted(res.items()):
            t.add_row(name, *("-" if i not in vs else "[green]pass[/]" if vs[i].ok
                              else "[red]FAIL[/]" for i in rules.INDICATORS))
        out.print(t)
        for name, vs in sorted(res.items()):
            for i in rules.INDICATORS:
                if i in vs and not vs[i].ok:
                    err.print(f"{name} {i}: {vs[i].summary}", highlight=False, markup=False)
    if not all(v.ok for vs in res.values() for v in vs.values()):
        raise typer.Exit(1)


@app.command("launch")
def launch(unit: str = typer.Argument(..., help="The unit (its manifest says `launch: "
                                      "pending`)."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Check only: record "
                                        "nothing, open nothing."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Put a pending unit online once its site passes the launch checks (HTTPS, security
    headers, nothing exposed, footer marks, no placeholder, wording); audited either way."""
    from controlplane.compliance import launch as launch_mod
    from controlplane.converge import service

    def opened():
        result = service.apply(county())
        if not result.ok:
            raise errors.GovhostError(f"the launch is recorded, but apply run {result.run_id} "
                                      f"{result.result}: run `govhost apply` to open the site")
        return result.to_json()

    res = call(lambda: launch_mod.launch(county(), unit, dry_run, apply=opened),
               as_json=as_json)
    if as_json:
        emit(res)
    elif res["already"]:
        out.print(f"{unit} is live (no launch gate in its manifest, or launched before)")
    else:
        t = table(f"launch {unit}: {'passed' if res['passed'] else 'refused'}",
                  "check", "result", "detail", "what to do")
        for c in res["checks"]:
            t.add_row(c["check"], "[green]pass[/]" if c["ok"] else "[red]FAIL[/]",
                      c["detail"], c["fix"])
        out.print(t)
        if res["launched"]:
            out.print(f"{unit} is online: served to everyone from now on.")
        elif res["passed"]:
            out.print("dry run: nothing recorded.")
    if not res["passed"]:
        raise typer.Exit(1)


@compliance_app.command("probe")
def compliance_probe(rounds: int = typer.Option(1, "--rounds", min=1, max=10_000),
                     interval: float = typer.Option(0.0, "--interval", min=0.0, max=3600.0),
                     as_json: bool = typer.Option(False, "--json")) -> None:
    """Run probe rounds now and record them (the exporter does this continuously)."""
    from controlplane.monitoring.exporter import Prober
    prober = Prober(county(), interval)
    failed: dict[str, int] = {}
    failures: list[dict] = []      # what failed, for the operator (the first 200)
    for i in range(rounds):
        rnd = prober.probe_once()
        if rnd.error and not rnd.tenants:
            fail(errors.GovhostError(rnd.error), as_json)
        if rnd.error.startswith("recording"):
            fail(errors.GovhostError(rnd.error), as_json)
        for t, nodes in rnd.failed.items():
            if nodes:
                failed[t] = failed.get(t, 0) + 1
                failures.extend({"round": i + 1, "unit": t, **f} for f in nodes)
        if i + 1 < rounds and interval:
            time.sleep(interval)
    res = {"rounds": rounds, "failed_rounds": dict(sorted(failed.items())),
           "failures": failures[:200]}
    if as_json:
        emit(res)
    else:
        out.print(f"{rounds} round(s) recorded; units with failed probes: "
                  + (", ".join(f"{t} ({n})" for t, n in sorted(failed.items())) or "none"))


@compliance_app.command("report")
def compliance_report(week: Optional[str] = typer.Option(None, "--week", help="YYYY-Www "
                                                         "(the last week checked if none)."),
                      fmt: str = typer.Option("html", "--format", help="html, json or csv."),
                      output: Optional[Path] = typer.Option(None, "--output", "-o")) -> None:
    """The weekly report: one row per unit, pass/fail per indicator with the evidence."""
    from controlplane.compliance import report
    try:
        text = report.render(county(), week, fmt)
    except (errors.GovhostError, ValueError) as exc:
        fail(errors.GovhostError(str(exc)))
        return
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


@compliance_app.command("yearly")
def compliance_yearly(year: int = typer.Option(..., "--year", min=2000, max=2100),
                      fmt: str = typer.Option("csv", "--format", help="csv, html or json."),
                      output: Optional[Path] = typer.Option(None, "--output", "-o"),
                      collect: bool = typer.Option(True, "--collect/--no-collect",
                                                   help="Count the nodes' latest visits "
                                                   "first.")) -> None:
    """The yearly website report's figures per unit: page views and visitors, updates, pages
    and attachments published per column, uptime, security incidents."""
    import json as jsonlib

    from controlplane.compliance import yearly
    from controlplane.nodes import tamper
    if fmt not in ("csv", "html", "json"):
        fail(errors.GovhostError(f"unknown format {fmt!r}; use csv, html or json"))
    c = county()
    notes: list[str] = []
    if collect:
        call(lambda: yearly.collect(c))
    start = time.mktime((year, 1, 1, 0, 0, 0, 0, 0, -1))
    found = tamper.incidents(c, hours=max(0.0, time.time() - start) / 3600)
    incidents: dict[str, int] = {}
    for node, got in sorted(found.items()):
        if "error" in got:
            notes.append(f"security incidents without {node}: {got['error']}")
            continue
        for i in got.get("incidents", []):
            if time.localtime(i["at"]).tm_year == year and i.get("tenant"):
                incidents[i["tenant"]] = incidents.get(i["tenant"], 0) + 1
    with c.state() as st:
        rows = yearly.figures(c.inv, year, st.content_releases(), st.visit_year(year),
                              st.probe_year(year), incidents, yearly.message_figures(
                                  st.message_index(), st.message_answers(), year))
        collected = st.last_visit_day() or "never"
    if fmt == "json":
        text = jsonlib.dumps({"year": year, "units": rows, "visits_collected_to": collected,
                              "notes": notes}, ensure_ascii=False, indent=2) + "\n"
    elif fmt == "csv":
        text = yearly.to_csv(rows)
    else:
        text = yearly.to_html(c.inv.cluster.name, year, rows, collected)
    for n in notes:
        err.print(f"[yellow]note[/]: {n}", highlight=False)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)
