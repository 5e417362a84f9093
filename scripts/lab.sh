#!/bin/bash
# The main job: set up, bring up a 3-node lab cluster and the county's services (BIND, Pebble),
# apply the example county, bring every site to HTTPS (one wildcard certificate by DNS-01)
# and take its first backup (restic, repository on n1); publish the example pages of two units
# (checked against the county's word lists), search them on the nodes, and show the tamper
# watchers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
govhost lab up --nodes 3
govhost lab services up
govhost apply --yes
govhost cert renew
govhost backup run
for unit in jiaoyu chahe; do
    govhost lab upload "$unit" "examples/content/$unit"
    govhost publish "$unit"
done
govhost wording check
govhost search sync
govhost search query 茶河镇
govhost tamper list
govhost status
