"""The `govhost` command: the root that mounts one command group per capability.

Each group lives in `commands/<capability>.py` (sites, content, tls, dns, backup, compliance,
monitoring, nodes, lab); what they share (the county of this run, tables, `--json`, errors)
is in `commands/output.py`.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import typer

from commands import (
    backup,
    compliance,
    console,
    content,
    control,
    dns,
    lab,
    messages,
    monitoring,
    nodes,
    people,
    search,
    security,
    sites,
    tamper,
    tls,
    wording,
)
from commands.output import CTX, err

app = typer.Typer(help="govhost: consolidated county government web hosting.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _global(
    inventory: Path = typer.Option(Path("inventory"), "--inventory", "-i",
                                   envvar="GOVHOST_INVENTORY",
                                   help="Inventory directory (cluster.yaml, hosts.yaml, tenants/)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    CTX.inventory = inventory
    CTX.debug = debug


# The order of the groups is the order of `govhost --help`.
for group in (sites, content, monitoring, nodes, lab, backup, control, compliance, messages,
              wording, search, tamper, tls, dns, security, people, console):
    app.add_typer(group.app)


# Python collects its youngest objects every 700 allocations by default; a plan of a county
# of 5,000 units makes millions (manifests, files, digests) and spent a fifth of its time
# collecting (bench/plan_scale.py). Every 10,000 keeps cycles short-lived all the same.
GC_THRESHOLD = (10_000, 10, 10)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLD)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
