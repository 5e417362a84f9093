"""The county search (站内搜索): every unit's published pages in one index on every node.

Pure: `dictionary` (the county's own words for the segmenter, from the manifests) and
`pages` (a published page as the index keeps it: URL, title, date, segmented text).
Shell: `index` (the master index on the control machine, brought up to date from the live
releases; each node sent only what changed, or a whole unit when it missed a change).
The node side, which answers queries, is `govhost_node.search`.
"""
