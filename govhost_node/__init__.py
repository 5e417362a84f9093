"""The programs govhost runs on every node, as one versioned package.

Bootstrap copies this package to /usr/local/lib/govhost/ on each node and installs thin
commands in /usr/local/sbin, one per module with a `main` (govhost-node runs node.py, the
release steps; govhost-tenants runs tenants.py; the list is govhost_node_commands in
playbooks/roles/node/defaults/main.yml). The package's content is part of the bootstrap
version, so a node runs the package of the govhost that last applied it: upgrading govhost upgrades the
nodes at the next apply. Only the Python standard library is used (the nodes have python3 and
nothing else from PyPI).
"""
__version__ = "0.2.0"
