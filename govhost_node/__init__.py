"""The programs govhost runs on every node, as one versioned package.

Bootstrap copies this package to /usr/local/lib/govhost/ on each node and installs thin
commands in /usr/local/sbin (govhost-tenants, govhost-db, govhost-backup, govhost-agent, and
the shell script govhost-node). The package's content is part of the bootstrap version, so a
node runs the package of the govhost that last applied it: upgrading govhost upgrades the
nodes at the next apply. Only the Python standard library is used (the nodes have python3 and
nothing else from PyPI).
"""
__version__ = "0.2.0"

# The commands bootstrap installs in /usr/local/sbin, and the module each one runs.
COMMANDS = {"govhost-tenants": "tenants", "govhost-db": "db", "govhost-backup": "backup",
            "govhost-agent": "agent"}
