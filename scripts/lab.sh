#!/bin/bash
# The main job: set up, bring up a 3-node lab cluster and the county's services (BIND, Pebble),
# apply the example county, bring every site to HTTPS (one wildcard certificate by DNS-01)
# and take its first backup (restic, repository on n1, with the control machine's own
# snapshot under the county recovery key); publish the example pages of two units
# (checked against the county's word lists), search them on the nodes, and show the tamper
# watchers; start the unit web console (console.qingshui.gov.cn through every node) and print
# how to log in to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
govhost lab up --nodes 3
govhost lab services up
# The county recovery key (printed once: the sheet for the safe), before the first apply so
# that the backup accounts accept it; `backup run` then also takes the control snapshot.
govhost control init
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
# What a citizen sees: a unit's page through a floating address, from outside the county.
govhost lab outside -- curl -s -o /dev/null --cacert /var/lib/govhost/lab/services/pebble/root.pem \
    --resolve jiaoyu.qingshui.gov.cn:443:10.77.0.102 -w "from the internet: %{http_code} in %{time_total} s\n" \
    https://jiaoyu.qingshui.gov.cn/

# The unit web console: a systemd service where the machine runs systemd, otherwise started
# here in the background; every node's nginx serves console.qingshui.gov.cn and proxies to it.
govhost console install
STATE="${GOVHOST_STATE_DIR:-inventory/.govhost}"
if [ ! -d /run/systemd/system ] && ! curl -s -o /dev/null --max-time 2 http://10.77.8.1:8090/login; then
    setsid nohup govhost console > "$STATE/console.log" 2>&1 < /dev/null &
    echo $! > "$STATE/console.pid"
fi
for _ in $(seq 1 50); do
    curl -s -o /dev/null --max-time 2 http://10.77.8.1:8090/login && break
    sleep 0.2
done
if govhost user list --json | grep -q '"name": "guanli"'; then
    govhost user reset guanli
else
    govhost user add guanli --display 县数据中心 --role operator
fi
PEBBLE_ROOT=/var/lib/govhost/lab/services/pebble/root.pem
cat <<EOT

The unit web console of the example county (青水县) is at https://console.qingshui.gov.cn/
through any node. Log in as the county operator 'guanli' with the password and the code of
the second factor printed above (an authenticator app, or: python3 -c "import pyotp;
print(pyotp.TOTP('KEY').now())"); the console asks for a new password at the first login.
  check it:    curl --cacert $PEBBLE_ROOT --resolve console.qingshui.gov.cn:443:10.77.0.101 https://console.qingshui.gov.cn/login
  a browser:   chromium --host-resolver-rules="MAP *.qingshui.gov.cn 10.77.0.101" https://console.qingshui.gov.cn/
               (the lab's certificates come from Pebble: trust $PEBBLE_ROOT or accept the warning)
  units' people: govhost user add NAME --unit jiaoyu --role editor|reviewer|admin
EOT
