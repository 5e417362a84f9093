"""The lab's services (Pebble, BIND, challtestsrv) are known by their pid files; a pid file
left from another day can name another process now. Seen: Pebble's old pid belonged to some
other process, `lab services up` took Pebble as running and every certificate order of the
security module failed; `_stop` would have signalled that stranger."""
import os
import subprocess
import sys

from controlplane.lab import services


def test_a_pid_that_is_now_another_process_is_not_the_service(tmp_path):
    d = tmp_path / "pebble"
    d.mkdir()
    (d / "pid").write_text(f"{os.getpid()}\n")         # alive, but not running in d
    assert services._pid(d) is None
    assert services._stop(d) is False                   # and nothing is signalled


def test_the_service_itself_is_found_and_stopped(tmp_path):
    d = tmp_path / "pebble"
    d.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=d)
    try:
        (d / "pid").write_text(f"{proc.pid}\n")
        assert services._pid(d) == proc.pid
        assert services._stop(d) is True
        proc.wait(timeout=10)
        assert not (d / "pid").exists()
    finally:
        proc.kill()
        proc.wait()
