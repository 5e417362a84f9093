"""Monitoring: what Prometheus scrapes, alerts on and shows.

Pure: `dashboards` (Grafana JSON generated from testable queries). Shell: `prometheus`
(render and write prometheus.yml and the rules), `exporter` (probes and state as metrics).
"""
