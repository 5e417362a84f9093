#!/bin/bash
# The main job: set up, bring up a 3-node lab cluster and the county's services (BIND, Pebble),
# apply the example county, bring every site to HTTPS (one wildcard certificate by DNS-01)
# and take its first backup (restic, repository on n1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
govhost lab up --nodes 3
govhost lab services up
govhost apply --yes
govhost cert renew
govhost backup run
govhost status
