"""Content releases: a unit's upload area made into an immutable release on its replicas.

Shell: `releases` (publish, review, rollback, remove a unit's data). It uses `sites` for the
placement in force and for moving files between replicas.
"""
