#!/bin/bash
# The whole test suite: set up, then unit, property and lab integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p test-artifacts
exec python -m pytest -q -ra --junitxml=test-artifacts/junit.xml "$@" tests
