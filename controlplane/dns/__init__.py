"""The county's DNS: the records every site name needs, and RFC 2136 updates (DNS-01).

Pure: `plan`. Shell: `update`.
"""
