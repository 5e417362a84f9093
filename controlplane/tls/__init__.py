"""HTTPS certificates: which the county needs, issuing and renewing them, shipping them.

Pure: `plan` (lineages and renewal times), `certs` (X.509 as data). Shell: `store` (which
stored certificate each unit is served with: what apply ships), `acme` (an ACME client),
`certificates` (status, issue, renew, import, the county CA; it is handed `apply` to ship).
"""
