"""The county's word lists as a node applies them to citizens' messages (issue 38): a `block`
word refuses the message with the reason, a `review` word holds it for the unit.

Why on the node and in the standard library: a node takes messages while the control machine
is down, and runs no PyPI package. The control machine compiles the lists into the node's
`messages.json` (`controlplane.core.wordlists.for_messages`: every word normalised here, and
OpenCC's tables for the lists that also catch traditional forms, which this module applies
as OpenCC does). The
normalisation is this module's, and the control machine's wording check uses it too: a word
is found in a message exactly as it would be found on a page (`国 家，工商` and `ＡＢＣ` are
still found; docs/content-safety.md).

The node matches without an automaton: for each place in the (short) text, only the key
lengths that start with that character are tried. A 5,000-character message against the
example county's lists takes a few milliseconds, about 20 ms when it is made to be slow
(every place starting several phrases); the control machine's wording check keeps its
Aho-Corasick automaton for whole sites.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

_RUN = re.compile(r"[^\W_]+")
# Letters that show nothing (Hangul fillers): read as the separators they look like, so
# that `代\u115f开发票` is `代开发票` (U+3164 and these are refused in a message's fields too).
_BLANK = {0x115F: 0x20, 0x1160: 0x20, 0x3164: 0x20, 0xFFA0: 0x20}
# Full-width ASCII (！ to ～) to ASCII, and the ideographic space to a space: the evasions
# people type; everything else NFKC would fold is handled per character below.
_WIDE = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20} | _BLANK
WORD, EXCEPT = 0, 1                 # what a key is: a listed word, or a form that excuses it
WORD_MAX = 60                       # characters of a listed word or form (core/wordlists.py)


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
    rule covers (`茶河乡` inside `茶河乡村振兴` is right). Linear in the matches: a form that
    covers a word starts at most WORD_MAX places before the word's end, so only those
    starts are looked at (a text of a thousand `茶河乡村` is a thousand looks of 60 each, not
    a thousand times a thousand)."""
    reach: dict[int, dict[int, int]] = {}        # rule -> start -> the furthest end there
    for i, spans in excepts.items():
        ends = reach[i] = {}
        for xs, xe in spans:
            if xe > ends.get(xs, -1):
                ends[xs] = xe
    out = []
    for s, e, i in words:
        ends = reach.get(i)
        if ends and any(ends.get(xs, -1) >= e for xs in range(max(0, e - WORD_MAX), s + 1)):
            continue
        out.append((s, e, i))
    return out


def phrase_starts(phrases: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """First character -> the lengths of the phrases it starts, longest first."""
    out: dict[str, set[int]] = {}
    for p in phrases:
        out.setdefault(p[0], set()).add(len(p))
    return {c: tuple(sorted(ls, reverse=True)) for c, ls in out.items()}


def simplified(text: str, chars: Mapping[str, str], phrases: Mapping[str, str],
               starts: Mapping[str, tuple[int, ...]] | None = None) -> str:
    """`text` in simplified characters as OpenCC's t2s converts it (the control machine's
    `wordlists.simplified`), from its tables: at each place the longest listed phrase, else
    the character's own conversion; the same length as `text` (a conversion that changes
    the length is done again character by character, as there)."""
    starts = phrase_starts(phrases) if starts is None else starts
    out, i, n = [], 0, len(text)
    while i < n:
        for size in starts.get(text[i], ()):
            got = phrases.get(text[i:i + size]) if i + size <= n else None
            if got is not None:
                out.append(got)
                i += size
                break
        else:
            out.append(chars.get(text[i], text[i]))
            i += 1
    conv = "".join(out)
    return conv if len(conv) == n else "".join(chars.get(c, c) for c in text)


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
        self.phrases: dict[str, str] = dict(spec.get("t2s_phrases", {}))
        self._phrase_starts = phrase_starts(self.phrases)
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
        plain = runs(fold(text))[0]
        for trad, keys in self._keys.items():
            # separators first: `計 畫` is the phrase 計畫 (计划), as a reader takes it
            norm = simplified(plain, self.t2s, self.phrases, self._phrase_starts) \
                if trad else plain
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
