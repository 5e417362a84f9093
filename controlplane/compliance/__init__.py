"""The national inspection indicators, checked for every unit.

Pure: `rules` (each indicator judged from data). Shell: `run` (crawl and probe through the
cluster), `report` (the weekly HTML/CSV/JSON report).
"""
