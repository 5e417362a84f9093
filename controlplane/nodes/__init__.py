"""A node's life after its first apply: replace, add, remove (drain first).

Shell: `lifecycle`, built from `sites.apply`, `backup.run` and `content.releases`.
"""
