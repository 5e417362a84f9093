"""The people who use the unit web console: accounts, roles, passwords and second factors,
login throttling. Stored by the control plane beside the rest of its state."""
