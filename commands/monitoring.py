"""`govhost` commands: Monitoring: the exporter and the Prometheus configuration."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from commands.output import call, county, err, fail, out
from controlplane.core import errors

app = typer.Typer()
monitoring_app = typer.Typer(help="Prometheus configuration, alert rules and dashboards.",
                             no_args_is_help=True)
app.add_typer(monitoring_app, name="monitoring")


@app.command()
def exporter(
    listen: str = typer.Option("127.0.0.1:9270", help="address:port to serve /metrics on."),
    interval: float = typer.Option(30.0, help="Seconds between probe rounds."),
    workers: int = typer.Option(32, help="Concurrent probes."),
) -> None:
    """Serve Prometheus metrics: probes of every unit on every node, apply state, lock."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from controlplane.monitoring.exporter import GovhostCollector, Prober, wsgi_app
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        fail(errors.GovhostError(f"--listen {listen!r}: expected address:port"))
    try:
        c = county()
        per_day = c.inv.cluster.compliance.probes_per_day_min
        if interval > 86400 / per_day:
            raise errors.GovhostError(
                f"--interval {interval:g}: the inspection probes each site at least {per_day} "
                f"times a day (cluster.yaml compliance.probes_per_day_min), so probe at least "
                f"every {86400 / per_day:g} s")
        prober = Prober(c, interval, workers)
        prober.probe_once(spread=False)  # the first scrape already has data
    except errors.GovhostError as exc:
        fail(exc)
        return
    collector = GovhostCollector(county(), prober)
    prober.start()

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server(host.strip("[]"), int(port), wsgi_app(collector),
                         handler_class=Quiet)
    err.print(f"govhost exporter on http://{listen}/metrics, probing every {interval:g} s",
              highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        prober.stop()


@monitoring_app.command("render")
def monitoring_render(
    out_dir: Path = typer.Option(Path("monitoring"), "--out", help="Directory to write to."),
    exporter_address: str = typer.Option("127.0.0.1:9270", "--exporter",
                                         help="Where Prometheus finds `govhost exporter`."),
    scrape_interval: int = typer.Option(15, help="Seconds between scrapes."),
    alertmanager: str = typer.Option("127.0.0.1:9093", "--alertmanager",
                                     help="Where Prometheus sends alerts (with `alerts:`)."),
) -> None:
    """Write prometheus.yml for this cluster (exporter, node agents, node_exporter), the alert
    rules it loads and the Grafana dashboards; with cluster.yaml `alerts:`, alertmanager.yml
    (each unit's alerts to its contact e-mail, the rest to the county team)."""
    from controlplane.monitoring import alertmanager as am
    from controlplane.monitoring import prometheus as monitoring
    from controlplane.tls import metrics
    c = county()
    inv = call(lambda: c.inv)
    access = call(lambda: metrics.ensure(c.state_dir, inv.secret, inv.hosts, inv.cluster.name))
    written = monitoring.write(out_dir, inv.hosts, exporter_address, scrape_interval, access,
                               alertmanager, am.render(inv))
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    if inv.cluster.alerts is None:
        out.print("no alertmanager.yml: cluster.yaml has no `alerts:` (docs/monitoring.md)",
                  highlight=False)


@monitoring_app.command("install")
def monitoring_install(
    listen: str = typer.Option("127.0.0.1:9270", help="address:port for the exporter."),
    interval: float = typer.Option(30.0, help="Seconds between probe rounds."),
    unit_dir: Path = typer.Option(Path("/etc/systemd/system"), help="Where to write the unit."),
) -> None:
    """Install `govhost exporter` as a systemd service on this (control) machine, and the
    nightly timer that backs up the control machine itself (`govhost control backup`)."""
    from controlplane.core import remote
    exe = Path(sys.argv[0]).resolve()
    inv = county().root.resolve()
    ok, error, changed = remote.run_local_playbook(
        "control.yml", county().state_dir / "runner-control",
        {"govhost_bin": str(exe), "govhost_inventory": str(inv), "govhost_listen": listen,
         "govhost_control_schedule": _control_schedule(),
         "govhost_interval": interval, "govhost_unit_dir": str(unit_dir.resolve())},
        tags="exporter")
    if not ok:
        fail(errors.GovhostError(f"installing the exporter service failed: {error}"))
    has_systemd = (Path("/run/systemd/system").exists()
                   and unit_dir.resolve() == Path("/etc/systemd/system"))
    out.print(("wrote " if changed else "unchanged: ") +
              str(unit_dir.resolve() / "govhost-exporter.service") +
              ("; enabled and started" if has_systemd else
               "; this machine does not run systemd: start `govhost exporter` under its "
               "supervisor instead"), highlight=False)


def _control_schedule() -> str:
    """The control machine's nightly snapshot goes with the node backups' schedule."""
    from controlplane.backup.plan import on_calendar
    return on_calendar(call(lambda: county().inv).cluster.backup.schedule)
