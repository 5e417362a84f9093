"""What the lab benches share (not a bench itself): applying a county or saying exactly why
not, and the govhost command of the Python that runs the bench.

A bench that only printed "apply failed" hid the reason a run on fresh machines broke (a
node without MariaDB, stop 56); the whole result says which node and why."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from controlplane.core.county import County  # noqa: E402
from controlplane.sites import apply as apply_mod  # noqa: E402

# The govhost beside this Python (.venv/bin), found without PATH: a bench run as
# `.venv/bin/python bench/x.py` from a shell without the venv on PATH found none.
GOVHOST = str(Path(sys.executable).with_name("govhost"))


def applied(inventory: Path, what: str = "apply") -> apply_mod.ApplyResult:
    """Apply the county at `inventory`; end the bench with the whole result if any node
    did not take it."""
    res = apply_mod.apply(County(inventory))
    if not res.ok:
        doc = res.to_json()
        for node in doc.get("nodes", []):
            # nginx's warnings about hash sizes fill the first 4,000 characters at a few
            # thousand units; what refused the release is after them
            if isinstance(node.get("message"), str):
                node["message"] = "\n".join(line for line in node["message"].split("\n")
                                            if "[warn]" not in line and "[notice]" not in line)
        sys.exit(f"{what} failed: {json.dumps(doc, default=str, ensure_ascii=False)[:4000]}")
    return res


def console_address() -> str:
    """Where the nodes reach a console on the control machine: the example county's address
    (the host's end of the lab's network). 127.0.0.1 is the nodes' own loopback: the console
    benches set it and got only nginx's 502 once the nodes had network namespaces."""
    import yaml

    return str(yaml.safe_load((REPO / "inventory" / "cluster.yaml").read_text(
        encoding="utf-8"))["console"]["address"])


def console_started(inventory: Path, port: int, log: Path, seconds: float = 30
                    ) -> subprocess.Popen[bytes]:
    """Start `govhost console --http` for the county (listening on console_address():`port`,
    as its cluster.yaml must say) and wait until it answers; end the bench with what the
    console printed if it does not."""
    import httpx  # the console benches' client, not every bench's

    address = console_address()
    with open(log, "wb") as out:           # the console writes to its own copy
        console = subprocess.Popen([sys.executable, "-m", "cli", "--inventory", str(inventory),
                                    "console", "--http"], cwd=REPO, stdout=out, stderr=out)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and console.poll() is None:
        try:
            httpx.get(f"http://{address}:{port}/login", timeout=1)
            return console
        except httpx.HTTPError:
            time.sleep(0.2)
    console.terminate()
    console.wait(10)
    sys.exit(f"the console did not answer on {address}:{port} within {seconds:.0f} s "
             f"(exit {console.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
