"""The `govhost` command groups, one module per capability of the control plane.

`cli.py` mounts them. Each module parses arguments, makes one call into its capability with
the county loaded once (`output.county()`), and prints the result as tables or `--json`.
"""
