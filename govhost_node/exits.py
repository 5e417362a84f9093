# Exit codes of the node programs that the control machine acts on, defined once for both
# sides: govhost-node (node.py) exits with them, controlplane/sites/apply.py acts on them.
# Kept to NAME=NUMBER lines, so that a shell script may source it too.

# govhost-node stage: nginx -t (or nft -c) refused the release; no node activates it.
NGINX_REFUSED=3
# govhost-node receive: the delta's base release is gone or was modified on the node; the
# control machine sends the whole release instead.
BASE_MISSING=4
