#!/bin/bash
# The whole test suite: set up, then unit, property and lab integration tests.
#
# The tests that need no lab (tests/unit, tests/test_architecture.py) run in a second
# process beside the lab's: the lab tests leave the two CPUs about half idle while nodes,
# ssh and timers work, and the unit tests are done before the lab's timing-sensitive
# modules start. Both must pass; the unit run's output follows the lab run's.
# Options (--durations=0, -x, -k ...) go to both runs; paths run just those, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Each `govhost` the tests run imports the control plane afresh; without its compiled files
# that import compiles every module again: `unit show` took 2.3 s, against 1.3 s with them.
# The environment of some machines turns the cache off (PYTHONDONTWRITEBYTECODE=1).
unset PYTHONDONTWRITEBYTECODE
mkdir -p test-artifacts
for arg in "$@"; do
    if [[ "$arg" != -* ]]; then
        exec python -m pytest -q -ra --junitxml=test-artifacts/junit.xml "$@"
    fi
done
python -m pytest -q -ra -p no:cacheprovider --junitxml=test-artifacts/junit-unit.xml "$@" \
    tests/unit tests/test_architecture.py >test-artifacts/unit.log 2>&1 &
unit=$!
trap 'kill "$unit" 2>/dev/null || true' EXIT
lab=0
python -m pytest -q -ra --junitxml=test-artifacts/junit.xml "$@" tests/integration || lab=$?
units=0
wait "$unit" || units=$?
trap - EXIT
echo
echo "=== unit, property and architecture tests (run beside the lab tests) ==="
cat test-artifacts/unit.log
echo "lab tests: exit $lab; unit tests: exit $units"
[ "$lab" -eq 0 ] && [ "$units" -eq 0 ]
