"""The programs govhost runs on every node, as one versioned package.

Bootstrap sends this package to each node as one file, and it installs itself there
(install.py): into /usr/local/lib/govhost/versions/<hash of its files>/, with thin commands in
/usr/local/sbin, one per module with a `main` (govhost-node runs node.py, the release steps;
govhost-tenants runs tenants.py; the list is install.COMMANDS), and govhost's systemd units
(units/). Each command names its
version, and is replaced by one rename: a command started during an upgrade runs the old
version or the new one whole, never a mix of files (keepalived runs its probe every second). The package's content is part of the bootstrap
version, so a node runs the package of the govhost that last applied it: upgrading govhost upgrades the
nodes at the next apply. Only the Python standard library is used (the nodes have python3 and
nothing else from PyPI).
"""
__version__ = "0.2.0"
