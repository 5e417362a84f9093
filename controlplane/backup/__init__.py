"""Backups with restic: policy per unit, runs on the nodes, restores, drills, off-site copies.

Pure: `plan` (what each node backs up, timers, retention, picking snapshots; apply renders it
into the node release). Shell: `run` (the control machine's side; a live restore is handed
`content.releases.publish`).
"""
