#!/bin/bash
# The main job: set up, bring up a 3-node lab cluster, apply the example county and take its
# first backup (restic, repository on n1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
govhost lab up --nodes 3
govhost apply --yes
govhost backup run
govhost status
