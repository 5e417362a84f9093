"""The apply service: converging the nodes, and what follows every apply.

Shell: `service` (sites.apply, then the county search and the word lists brought in line).
"""
