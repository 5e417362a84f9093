"""keepalived's two probes of a node's own nginx (`govhost-node vrrp check alive|prompt`),
run for real against listeners on loopback: one that answers, one that answers 500, one
that accepts and never answers (a stall), and none at all (a dead nginx)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="port 80 needs root")


def check(kind: str, address: str, delay: int | None = None,
          streaks: Path | None = None) -> int:
    argv = [sys.executable, "-m", "govhost_node.node", "vrrp", "check", kind, address]
    env = dict(os.environ)
    if delay is not None:
        argv.append(str(delay))
    if streaks is not None:
        env["GOVHOST_VRRP_STREAKS"] = str(streaks)
    return subprocess.run(argv, capture_output=True, timeout=30, env=env, cwd=REPO).returncode


def _serve(address: str, code: int) -> HTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = self.headers.get("Host") == "govhost-probe" and self.path == "/health"
            self.send_response(code if ok else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass
    server = HTTPServer((address, 80), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_serving_nginx_passes_both():
    server = _serve("127.0.77.1", 200)
    try:
        assert check("alive", "127.0.77.1") == 0 and check("prompt", "127.0.77.1") == 0
    finally:
        server.shutdown()
        server.server_close()


def test_a_wrong_answer_and_a_dead_nginx_fail_both():
    server = _serve("127.0.77.2", 500)
    try:
        assert check("alive", "127.0.77.2") != 0 and check("prompt", "127.0.77.2") != 0
    finally:
        server.shutdown()
        server.server_close()
    # nothing listens: refused at once
    assert check("alive", "127.0.77.3") != 0 and check("prompt", "127.0.77.3") != 0


def test_a_stall_is_not_death_but_is_not_prompt():
    """Accepted by the kernel, never answered: the node keeps its place in VRRP (`alive`
    passes), and drops below its peers (`prompt` fails)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.77.4", 80))
        s.listen(16)
        assert check("alive", "127.0.77.4") == 0
        assert check("prompt", "127.0.77.4") != 0


@pytest.mark.parametrize("reset", [False, True], ids=["empty reply", "reset"])
def test_an_overloaded_nginx_is_not_death_but_is_not_prompt(reset):
    """Out of worker connections, nginx accepts and closes (an empty reply) or resets:
    alive, not prompt."""
    import struct
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.77.6", 80))
        s.listen(16)
        stop = threading.Event()

        def close_each():
            s.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                conn.recv(1024)
                if reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
        t = threading.Thread(target=close_each, daemon=True)
        t.start()
        try:
            assert check("alive", "127.0.77.6") == 0
            assert check("prompt", "127.0.77.6") != 0
        finally:
            stop.set()
            t.join()


def test_a_check_without_its_address_is_refused():
    assert check("alive", "") != 0 and check("sideways", "127.0.77.1") != 0


def test_a_node_passes_only_after_serving_for_the_preempt_delay(tmp_path):
    """The preempt delay lives in the check: a pass counts once the probe has passed for
    DELAY seconds in a row, and a failure starts the wait again."""
    streaks = tmp_path / "streaks"
    server = _serve("127.0.77.5", 200)
    try:
        assert check("alive", "127.0.77.5", 3600, streaks) != 0       # the streak starts
        assert (streaks / "alive-since").exists()
        (streaks / "alive-since").write_text("0\n")                   # served for long
        assert check("alive", "127.0.77.5", 3600, streaks) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert check("alive", "127.0.77.5", 3600, streaks) != 0           # dead: streak gone
    assert not (streaks / "alive-since").exists()
