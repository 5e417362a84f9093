"""Wording checks (错敏词): the county's word lists against what units publish.

Pure: `match` (normalising text and finding the lists' words in it, evasions included).
Shell: `check` (a release's files read from its first replica, findings cached by file digest
in the state store, a publish refused on a `block` word, the live county checked again when
the lists change).
"""
