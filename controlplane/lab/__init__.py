"""The lab cluster on one machine: real Debian machines (systemd-nspawn) or overlay nodes,
and the county services (Pebble, BIND) that let every feature run for real.

Shell: `image` (mmdebstrap images), `machines` (up, stop, reboot, wipe, down), `services`.
"""
