"""Where govhost's own files live (templates, playbooks) and the node-side layout.

The node layout is a contract between the renderer (which writes absolute paths into nginx
configs) and the playbooks (which create those directories), so it is defined once here.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
TEMPLATES = REPO / "templates"
PLAYBOOKS = REPO / "playbooks"
NODE_PACKAGE = REPO / "govhost_node"       # the node programs, copied to every node
NODE_LIB = "/usr/local/lib/govhost"        # where bootstrap puts govhost_node/ on a node

# On every node.
NODE_CONF_ROOT = "/etc/govhost"            # releases/<id>/ and the `current` symlink
NODE_CURRENT = f"{NODE_CONF_ROOT}/current"
NODE_SITES = "/srv/govhost/sites"         # <tenant>/current -> content release
NODE_LOGS = "/var/log/govhost"            # tenants/<tenant>/{access,error}.log
NODE_PID = "/run/govhost-nginx.pid"
NGINX_USER = "www-data"                   # nginx workers; member of every tenant's group
PHP_SOCKETS = "/run/govhost/php"          # <tenant>.sock, one PHP-FPM pool per PHP tenant
PHP_FPM_PID = "/run/govhost-php-fpm.pid"
PROBE_HOST = "govhost-probe"
NODE_ACME = "/var/lib/govhost/acme"       # .well-known/acme-challenge/<token> (HTTP-01)
NODE_TENANTS_TOOL = "/usr/local/sbin/govhost-tenants"   # accounts and content releases
NODE_TOOL = "/usr/local/sbin/govhost-node"              # receive, stage, activate; challenges
NODE_DB_TOOL = "/usr/local/sbin/govhost-db"             # tenant databases (the db node)
NODE_BACKUP_TOOL = "/usr/local/sbin/govhost-backup"     # restic on the node
NODE_SEARCH_TOOL = "/usr/local/sbin/govhost-search"     # the county search's index and server
NODE_TAMPER_TOOL = "/usr/local/sbin/govhost-tamper"     # live files held to their digest lists
NODE_SECAUDIT_TOOL = "/usr/local/sbin/govhost-secaudit" # secrets, sshd: facts for `security check`
NODE_UNPACK_TOOL = "/usr/local/sbin/govhost-unpack"     # console uploads, as the unit, no links
NODE_VISITS_TOOL = "/usr/local/sbin/govhost-visits"     # page views per unit and day (yearly)
AGENT_PORT = 9273                          # govhost-agent: per-unit traffic and resources
NODE_EXPORTER_PORT = 9100                  # prometheus-node-exporter, on the node's address
SEARCH_PORT = 9275                         # govhost-search, behind nginx's /search
# The console's web process runs as this account (no keys, no state); its broker stays root.
CONSOLE_ACCOUNT = "govhost-console"
CONSOLE_WEB_NAME = "govhost-web"   # the web process's name to the kernel (/proc/PID/comm)
