"""Sites: the nginx config releases every node serves, and getting them there.

Pure: `render` (a complete release per node), `plan` (what apply would change), `replicas`
(which content must travel before a node serves a unit). Shell: `apply` (stage, `nginx -t`,
canary, activate, roll back), `content_sync` (content moves between nodes), `probes`,
`status` (the cluster's health for `govhost status`).
"""
