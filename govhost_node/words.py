"""The county's word lists as a node applies them to citizens' messages (issue 38): a `block`
word refuses the message with the reason, a `review` word holds it for the unit.

Why on the node and in the standard library: a node takes messages while the control machine
is down, and runs no PyPI package. The control machine compiles the lists into the node's
`messages.json` (`controlplane.core.wordlists.for_messages`: every word normalised here, the
traditional characters the lists must also catch mapped to simplified ones). The
normalisation is this module's, and the control machine's wording check uses it too: a word
is found in a message exactly as it would be found on a page (`国 家，工商` and `ＡＢＣ` are
still found; docs/content-safety.md).

The node matches without an automaton: for each place in the (short) text, only the key
lengths that start with that character are tried. A 5,000-character message against the
example county's lists takes about a millisecond; the control machine's wording check keeps
its Aho-Corasick automaton for whole sites.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

_RUN = re.compile(r"[^\W_]+")
# Full-width ASCII (！ to ～) to ASCII, and the ideographic space to a space: the evasions
# people type; everything else NFKC would fold is handled per character below.
_WIDE = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
WORD, EXCEPT = 0, 1                 # what a key is: a listed word, or a form that excuses it


def fold(text: str) -> str:
    """Width and case folded, the same length as `text` (so offsets still match)."""
    t = text.translate(_WIDE)
    if unicodedata.is_normalized("NFKC", t):
        low = t.lower()
        if len(low) == len(t):
            return low
    out = []
    for ch in t:
        n = ch if ch.isascii() else unicodedata.normalize("NFKC", ch)
        n = n.lower()
        out.append(n if len(n) == 1 else ch)
    return "".join(out)


def runs(folded: str) -> tuple[str, list[int], list[int]]:
    """The folded text with separators removed, and where each of its runs of letters starts
    in the result and in the original (to map a match back)."""
    parts, norm_at, orig_at = [], [], []
    n = 0
    for m in _RUN.finditer(folded):
        parts.append(m.group())
        norm_at.append(n)
        orig_at.append(m.start())
        n += m.end() - m.start()
    return "".join(parts), norm_at, orig_at


def excused(words: list[tuple[int, int, int]], excepts: Mapping[int, list[tuple[int, int]]]
            ) -> list[tuple[int, int, int]]:
    """The (start, end, rule) matches of listed words that no `except_in` form of the same
    rule covers (`茶河乡` inside `茶河乡村振兴` is right)."""
    return [(s, e, i) for s, e, i in words
            if not any(xs <= s and e <= xe for xs, xe in excepts.get(i, ()))]


@dataclass(frozen=True)
class Found:
    word: str                    # as the county's list has it
    severity: str                # block | review
    note: str                    # the list entry's note ("" when it has none)


class Screen:
    """The lists as `messages.json` carries them ("words"), ready to match; an empty or
    missing spec finds nothing."""

    def __init__(self, spec: Mapping[str, Any] | None) -> None:
        spec = spec or {}
        self.rules = [Found(str(w), str(sev), str(note))
                      for w, sev, note in spec.get("rules", [])]
        self.t2s: dict[str, str] = dict(spec.get("t2s", {}))
        # per variant (plain, traditional): key -> [(kind, rule)], and first char -> lengths
        self._keys: dict[bool, dict[str, list[tuple[int, int]]]] = {}
        self._starts: dict[bool, dict[str, tuple[int, ...]]] = {}
        for trad, name in ((False, "plain"), (True, "traditional")):
            keys = {str(k): [(int(kind), int(i)) for kind, i in v]
                    for k, v in (spec.get(name) or {}).items() if k}
            if not keys:
                continue
            starts: dict[str, set[int]] = {}
            for k in keys:
                starts.setdefault(k[0], set()).add(len(k))
            self._keys[trad] = keys
            self._starts[trad] = {c: tuple(sorted(ls)) for c, ls in starts.items()}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def find(self, text: str) -> list[Found]:
        """The rules `text` holds, each once, in the order they first appear."""
        hits: list[tuple[int, int, int]] = []
        folded = fold(text)
        for trad, keys in self._keys.items():
            t = "".join(self.t2s.get(c, c) for c in folded) if trad else folded
            norm = runs(t)[0]
            starts = self._starts[trad]
            words: list[tuple[int, int, int]] = []
            excepts: dict[int, list[tuple[int, int]]] = {}
            for i, ch in enumerate(norm):
                for n in starts.get(ch, ()):
                    for kind, rule in keys.get(norm[i:i + n], ()):
                        if kind == WORD:
                            words.append((i, i + n, rule))
                        else:
                            excepts.setdefault(rule, []).append((i, i + n))
            hits += excused(words, excepts)
        seen: dict[int, None] = {}
        for _, _, rule in sorted(hits):
            seen.setdefault(rule, None)
        return [self.rules[i] for i in seen]
