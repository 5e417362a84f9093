#!/bin/bash
# Install everything govhost and its lab need on a fresh Debian machine (run as root).
# Safe to rerun: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(nginx openssh-server openssh-client curl wrk ca-certificates tar gzip python3 python3-venv python3-apt sqlite3 iproute2 procps util-linux prometheus prometheus-node-exporter php-fpm php-mysql mariadb-server mariadb-client restic logrotate chromium fonts-wqy-microhei pebble bind9 bind9-dnsutils testssl.sh mmdebstrap systemd-container rsync python3-jieba python3-watchdog python3-cryptography nftables libnginx-mod-http-modsecurity modsecurity-crs apt-utils dpkg-dev chromium-driver prometheus-alertmanager keepalived apt-cacher-ng)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    # No package's service starts on this machine as it installs: the lab runs its own
    # (apt-cacher-ng on the lab's address, keepalived inside each node), and the host's
    # copies would hold ports the lab needs. policy-rc.d is Debian's switch for exactly that.
    had_policy=false
    [ -e /usr/sbin/policy-rc.d ] && had_policy=true
    $had_policy || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
    apt-get install -y -q "${missing[@]}" || { $had_policy || rm -f /usr/sbin/policy-rc.d; exit 1; }
    $had_policy || rm -f /usr/sbin/policy-rc.d
fi

# The lab nodes run their own nginx and sshd on their own network; the host's own copies from the
# packages above must not hold ports 80 and 22 on every address.
# Likewise Debian's prometheus (tests start their own) and node exporter (each lab node runs
# one on its own address, port 9100), PHP-FPM (nodes run one pool per PHP tenant) and MariaDB
# (the lab's db node runs its own on its own address).
if [ -d /run/systemd/system ]; then
    systemctl disable --now nginx prometheus prometheus-node-exporter prometheus-alertmanager mariadb named keepalived apt-cacher-ng >/dev/null 2>&1 || true
    for unit in $(systemctl list-unit-files 'php*-fpm.service' --no-legend | cut -d' ' -f1); do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    nginx -s quit || true
fi
# Without systemd, a package's init script may have started the host's own MariaDB: the lab's
# db node copies /var/lib/mysql from the host, which must not change under it. Stop it (and
# the host's default PHP-FPM pool, which nothing uses).
# The host's own BIND likewise (the lab runs its own on 127.0.0.1:1053).
for pidfile in /run/mysqld/mysqld.pid /run/php/php*-fpm.pid /run/named/named.pid /run/prometheus/prometheus-alertmanager.pid /run/apt-cacher-ng/pid /run/keepalived.pid; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        pid=$(cat "$pidfile")
        kill "$pid" || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
done

# axe-core (the accessibility checker the compliance check runs in Chromium), from npm.
AXE_DIR=/usr/local/share/govhost/axe
AXE_VERSION=4.14.1
if [ ! -s "$AXE_DIR/node_modules/axe-core/axe.min.js" ] || \
   ! grep -q "\"version\": \"$AXE_VERSION\"" "$AXE_DIR/node_modules/axe-core/package.json"; then
    command -v npm >/dev/null || { apt-get update -q; apt-get install -y -q npm; }
    mkdir -p "$AXE_DIR"
    npm install -q --prefix "$AXE_DIR" --no-audit --no-fund "axe-core@$AXE_VERSION" >/dev/null
fi

# The console's web process runs as its own account, without keys or state (docs/console.md).
id -u govhost-console >/dev/null 2>&1 || \
    useradd --system --no-create-home --shell /usr/sbin/nologin govhost-console

# The .venv is made from Debian's own Python (installed above), not from whichever `python3`
# comes first on PATH: pyenv's default build (no --enable-optimizations or --with-lto, a
# shared libpython) imported the control plane 1.3x slower and ran the core unit tests 1.17x
# slower than Debian's here, side by side on the same libraries (bench/python_build.py).
# GOVHOST_PYTHON=... picks another. A .venv whose interpreter is not that one (both resolved
# to the real executable, so a venv's own python names the Python it was made from) is made
# again, and setup says so.
base='import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'
want=$("${GOVHOST_PYTHON:-/usr/bin/python3}" -c "$base" 2>/dev/null) || {
    echo "setup: cannot run ${GOVHOST_PYTHON:-/usr/bin/python3} (GOVHOST_PYTHON=... names the" \
         "Python to make .venv with)" >&2
    exit 1
}
have=$(.venv/bin/python -c "$base" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    [ -z "$have" ] || echo "setup: .venv runs $have; making it again with $want"
    rm -rf .venv
    "$want" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING\|^DEPRECATION' || true
.venv/bin/python -c 'import ansible_runner, jinja2, typer, pydantic, hypothesis, acme, dns' >/dev/null
echo "setup: ok ($(.venv/bin/govhost --help >/dev/null && echo govhost ready))"
