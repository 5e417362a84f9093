"""Security: the doors, secrets, TLS, WAF and updates of the cluster, checked from outside."""
