"""The citizens' loop summary (controlplane/lab/frontdoor.py): the front-door lab tests judge
silences and slow requests from it, so its arithmetic is checked here on made-up samples."""
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from controlplane.lab import frontdoor
from controlplane.lab.frontdoor import Loop

REPO = Path(__file__).resolve().parents[3]


def test_the_longest_silence_ends_with_the_answer_that_broke_it_and_slow_requests_are_listed():
    loop = Loop("10.77.0.102", "curl")
    # sent at 0.0, 0.2 (hangs 9 s), 9.4 (fails), 9.6: answers at 0.01, 9.2, -, 9.61
    loop.samples = [(100.0, 0.01, 200, True), (100.2, 9.0, 200, True),
                    (109.4, 0.02, 0, False), (109.6, 0.01, 200, True)]
    r = loop.summary(100.0, 110.0)
    assert r["silent_s"] == 9.19 and r["silent_until"] == 9.2
    assert r["slow"] == [[0.2, 9.0]]
    assert r["failed"] == 1 and r["failed_at"] == [[9.4, 0]] and r["timeouts"] == 0
    assert r["timed_out_at"] == []


def test_a_loop_with_no_answer_is_silent_from_start_to_end():
    loop = Loop("10.77.0.101", "requests")
    loop.samples = [(100.0, 15.0, 0, False)]
    r = loop.summary(100.0, 116.0)
    assert r["silent_s"] == 16.0 and r["silent_until"] == 16.0
    assert r["timeouts"] == 1 and r["slow"] == [[0.0, 15.0]] and r["timed_out_at"] == [0.0]


SERVED = []          # one entry per answer the page has finished sending


@pytest.fixture
def page():
    """A real HTTP server on loopback serving the right page, each answer taking 0.3 s."""
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            time.sleep(0.3)
            body = "教育".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            SERVED.append(time.monotonic())

        def log_message(self, *args):
            pass

    SERVED.clear()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_ready_comes_once_after_every_loop_has_had_an_answer_and_the_run_counts_from_it(page):
    """Callers break things "a second after the normal state began": that second must count
    from answers really had (both loops, curl and requests, answered before ready) and the
    run must still last its seconds after ready."""
    seen = []

    def ready():
        seen.append((time.monotonic(), len(SERVED)))

    t0 = time.monotonic()
    res = frontdoor.run([page], "x", "教育", 1.0, 0.2, on_ready=ready)
    ended = time.monotonic()
    assert len(seen) == 1
    at, answered = seen[0]
    assert answered >= 2 and at > t0
    assert ended - at >= 1.0
    assert all(r["requests"] >= 2 for r in res["loops"]) and res["failed"] == 0


def test_wait_ready_reads_the_line_the_loop_prints(page):
    proc = subprocess.Popen(frontdoor.argv([page], "x", "教育", 1.0),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    frontdoor.wait_ready(proc)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out)["failed"] == 0


def test_wait_ready_names_a_loop_that_ended_before_it():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('no such host\\n')"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(RuntimeError, match="ended: no such host"):
        frontdoor.wait_ready(proc)


def test_wait_ready_gives_up_on_a_loop_that_says_nothing_and_stops_it():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(RuntimeError, match="was not ready within 1 s"):
        frontdoor.wait_ready(proc, timeout=1.0)
    assert proc.returncode is not None
