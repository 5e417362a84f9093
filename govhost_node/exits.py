# Exit codes of the node programs that the control machine acts on, defined once for both
# sides. This file is valid Python (govhost_node.exits, read by controlplane/sites/apply.py
# and playbooks/activate.yml through it) and valid shell (govhost-node sources it): keep it
# to NAME=NUMBER lines and comments.

# govhost-node stage: nginx -t (or nft -c) refused the release; no node activates it.
NGINX_REFUSED=3
# govhost-node receive: the delta's base release is gone or was modified on the node; the
# control machine sends the whole release instead.
BASE_MISSING=4
