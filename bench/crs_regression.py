"""The OWASP Core Rule Set's own regression tests against the WAF the nodes run: Debian's
CRS and libmodsecurity in nginx with the ModSecurity settings govhost renders.

    python bench/crs_regression.py CRS_SOURCE [--json] [--limit N]

CRS_SOURCE: a git repository of the CRS project (e.g. a mirror of
github.com/coreruleset/coreruleset) holding the tag of the installed version, or a directory
holding that version's `tests/regression/tests`. Nothing of the CRS project is kept in this
repository: the tests are read from CRS_SOURCE at run time, and the runner is the project's
own (ftw 1.3.0 from PyPI, the version its `tests/regression/requirements.txt` pins,
installed into a private directory beside the cache).

The tests are written for the project's test setup, not a production one, so this script
builds that setup around govhost's settings, as the CRS's regression README and its
docker-compose file say: detection only, paranoia level 4, IP blocking off, response bodies
inspected, a test marker rule, and a local answer for every request (the project uses a
backend echo service; here nginx answers 200 with a small page, so tests that expect the
backend's echo fail and are counted). One nginx worker on 127.0.0.1; nothing else is
contacted. With --json, one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.sites import waf  # noqa: E402

FTW_DIR = Path("/var/cache/govhost-bench/ftw-1.3.0")
MARK = "X-CRS-Test"
TEST_SETUP = """
# The CRS regression suite's setup (tests/regression/README.md, tests/docker-compose.yml)
SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,\\
setvar:tx.paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,\\
setvar:tx.arg_length=400,setvar:tx.combined_file_sizes=65535"
SecRule REQUEST_HEADERS:X-CRS-Test "@rx ^.*$" "id:999999,phase:1,pass,t:none,log,\\
msg:'X-CRS-Test %{MATCHED_VAR}'"
"""


def installed_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "modsecurity-crs"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("-")[0]


def tests_dir(source: Path, version: str, work: Path) -> Path:
    """`tests/regression/tests` of `version`, from a git repository or a directory."""
    plain = source / "tests" / "regression" / "tests"
    if plain.is_dir():
        return plain
    tag = f"v{version}"
    archive = subprocess.run(["git", "--git-dir", str(source), "archive", "--format=tar", tag,
                              "tests/regression/tests"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"{source} has no tag {tag} with tests/regression/tests "
                         f"({archive.stderr.decode(errors='replace').strip()}); the installed "
                         f"CRS is {version}, and tests of another version test other rules")
    with tarfile.open(fileobj=__import__("io").BytesIO(archive.stdout)) as tar:
        tar.extractall(work / "crs", filter="data")
    return work / "crs" / "tests" / "regression" / "tests"


def ftw_modules():
    if not (FTW_DIR / "ftw").is_dir():
        FTW_DIR.mkdir(parents=True, exist_ok=True)
        for args in (["ftw==1.3.0", "--no-deps"], ["IPy", "python-dateutil", "brotli"]):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target",
                            str(FTW_DIR), *args], check=True)
    sys.path.insert(0, str(FTW_DIR))
    from ftw import logchecker, ruleset, testrunner, util  # noqa: PLC0415
    return logchecker, ruleset, testrunner, util


def start_nginx(work: Path) -> tuple[int, Path]:
    (work / "www").mkdir()
    (work / "tmp").mkdir()
    (work / "www" / "ok.html").write_text("<html><body>ok</body></html>\n")
    main = waf.main_conf(audit_log=str(work / "audit.log")).decode()
    main = main.replace("SecResponseBodyAccess Off", "SecResponseBodyAccess On\n"
                        "SecResponseBodyMimeType text/plain text/html text/xml application/json")
    setup = f"Include {waf.CRS_SETUP}\n"
    assert setup in main
    main = main.replace(setup, setup + TEST_SETUP)
    (work / "main.conf").write_text(main)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "nginx.conf").write_text(f"""load_module {waf.MODULE};
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp;
    modsecurity on;
    modsecurity_rules_file {work}/main.conf;
    server {{
        listen 127.0.0.1:{port};
        root {work}/www;
        error_page 404 405 =200 /ok.html;
        location / {{ try_files /ok.html =404; }}
    }}
}}
""")
    subprocess.run(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)], check=True)
    time.sleep(1)
    return port, work / "error.log"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="at most N tests (a quick look)")
    args = ap.parse_args()
    version = installed_version()
    logchecker, ruleset, testrunner, util = ftw_modules()
    from ftw import http  # noqa: PLC0415
    work = Path(tempfile.mkdtemp(prefix="govhost-crs-"))
    port, errlog = start_nginx(work)

    class Log(logchecker.LogChecker):
        """The lines nginx wrote between a stage's start and its end marker."""
        offset = 0

        def _marker(self, stage_id: str) -> None:
            http.HttpUA().send_request(ruleset.Input(
                dest_addr="127.0.0.1", port=port, headers={
                    "Host": "localhost", "User-Agent": "CRS", "Accept": "*/*",
                    MARK: stage_id}, version="HTTP/1.0"))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if f"X-CRS-Test {stage_id}" in errlog.read_text(errors="replace")[self.offset:]:
                    return
                time.sleep(0.01)

        def mark_start(self, stage_id: str) -> None:
            self._marker(stage_id + "-start")
            self.offset = len(errlog.read_text(errors="replace"))

        def mark_end(self, stage_id: str) -> None:
            self._marker(stage_id + "-end")

        def get_logs(self) -> list[str]:
            return errlog.read_text(errors="replace")[self.offset:].splitlines()

    log = Log()
    runner = testrunner.TestRunner()
    results: list[dict] = []
    started = time.monotonic()
    try:
        sets = util.get_rulesets(str(tests_dir(args.source, version, work)), True)
        for rs in sorted(sets, key=lambda r: r.meta.get("name", "")):
            for test in rs.tests:
                if args.limit and len(results) >= args.limit:
                    break
                ok, why = True, ""
                try:
                    for stage in test.stages:
                        stage.input.dest_addr, stage.input.port = "127.0.0.1", port
                        runner.run_stage(stage, log)
                except BaseException as exc:  # noqa: BLE001 (ftw fails with asserts and its own errors)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    ok, why = False, (type(exc).__name__ + ": " + str(exc))[:200]
                results.append({"test": test.test_title, "file": rs.meta.get("name"),
                                "ok": ok, "why": why})
    finally:
        subprocess.run(["kill", (work / "nginx.pid").read_text().strip()])
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    passed = sum(r["ok"] for r in results)
    failed_by_file = Counter(r["file"] for r in results if not r["ok"])
    print(f"CRS {version} regression tests (ftw 1.3.0) against Debian's CRS {version} and "
          "libmodsecurity in nginx, govhost's settings + the suite's test setup:")
    print(f"  {passed} of {len(results)} passed, {len(results) - passed} failed, "
          f"{seconds:.0f} s")
    for name, n in failed_by_file.most_common(15):
        print(f"  failed in {name}: {n}")
    if args.json:
        print(json.dumps({"bench": "crs_regression", "crs": version, "tests": len(results),
                          "passed": passed, "failed": len(results) - passed,
                          "seconds": round(seconds, 1),
                          "failed_by_file": dict(failed_by_file),
                          "failures": [r for r in results if not r["ok"]][:300]},
                         ensure_ascii=False))


if __name__ == "__main__":
    main()
