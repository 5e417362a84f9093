"""Where govhost's own files live (templates, playbooks) and the node-side layout.

The node layout is a contract between the renderer (which writes absolute paths into nginx
configs), the playbooks (which create those directories) and the node programs (which read
them): it is defined once, in govhost_node/layout.py, and named here for the control side.
"""
from __future__ import annotations

from pathlib import Path

from govhost_node.layout import NODE

REPO = Path(__file__).resolve().parent.parent.parent
TEMPLATES = REPO / "templates"
PLAYBOOKS = REPO / "playbooks"
NODE_PACKAGE = REPO / "govhost_node"       # the node programs, copied to every node
NODE_LIB = "/usr/local/lib/govhost"        # versions/<hash>/govhost_node/ on a node
NODE_LIB_CURRENT = f"{NODE_LIB}/current"   # -> the version the node commands run

# On every node.
NODE_CONF_ROOT = NODE.root                # releases/<id>/ and the `current` symlink
NODE_CURRENT = NODE.current
NODE_SITES = NODE.sites                   # <tenant>/current -> content release
NODE_LOGS = NODE.logs                     # tenants/<tenant>/{access,error}.log
NODE_PID = NODE.pidfile("govhost-nginx")
NGINX_USER = "www-data"                   # nginx workers; member of every tenant's group
PHP_SOCKETS = "/run/govhost/php"          # <tenant>.sock, one PHP-FPM pool per PHP tenant
PHP_FPM_PID = NODE.pidfile("govhost-php-fpm")
PROBE_HOST = "govhost-probe"
NODE_ACME = f"{NODE.state}/acme"          # .well-known/acme-challenge/<token> (HTTP-01)
NODE_TENANTS_TOOL = f"{NODE.sbin}/govhost-tenants"   # accounts and content releases
NODE_TOOL = f"{NODE.sbin}/govhost-node"              # receive, stage, activate; challenges
NODE_DB_TOOL = f"{NODE.sbin}/govhost-db"             # tenant databases (the db node)
NODE_BACKUP_TOOL = f"{NODE.sbin}/govhost-backup"     # restic on the node
NODE_SEARCH_TOOL = f"{NODE.sbin}/govhost-search"     # the county search's index and server
NODE_TAMPER_TOOL = f"{NODE.sbin}/govhost-tamper"     # live files held to their digest lists
NODE_SECAUDIT_TOOL = f"{NODE.sbin}/govhost-secaudit" # secrets, sshd: facts for `security check`
NODE_UNPACK_TOOL = f"{NODE.sbin}/govhost-unpack"     # console uploads, as the unit, no links
NODE_VISITS_TOOL = f"{NODE.sbin}/govhost-visits"     # page views per unit and day (yearly)
NODE_MESSAGES_TOOL = f"{NODE.sbin}/govhost-messages" # citizens' messages the node keeps
AGENT_PORT = 9273                          # govhost-agent: per-unit traffic and resources
NODE_EXPORTER_PORT = 9100                  # prometheus-node-exporter, on the node's address
SEARCH_PORT = 9275                         # govhost-search, behind nginx's /search
MESSAGES_PORT = 9276                       # govhost-messages: the copies nodes keep of each other's
MESSAGES_SOCKET = "/run/govhost-messages/citizens.sock"   # citizens, through nginx only
# The console's web process runs as this account (no keys, no state); its broker stays root.
CONSOLE_ACCOUNT = "govhost-console"
CONSOLE_WEB_NAME = "govhost-web"   # the web process's name to the kernel (/proc/PID/comm)
