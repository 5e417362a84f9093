"""Find the county's words in a text, the way a reader would see them.

Normalised before matching, on both sides: full-width letters and digits read as half-width,
upper case as lower case, and everything that is not a letter or digit (spaces, punctuation,
line breaks, markup boundaries) is skipped, so `国 家，工商总局` and `ＡＢＣ` are still found.
Lists that ask for it are also matched against the text converted from traditional to
simplified characters (OpenCC). One Aho–Corasick automaton per normalisation finds every
word in one pass, however many words the lists hold; positions are mapped back to the
original text for the line and the context.

Skipping separators means a word can be found across a sentence boundary (`…青水。县长…`);
for the short words where that matters, an entry's `except_in` lists the forms that are right.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Mapping

import ahocorasick

from controlplane.core.pagetext import Page, newline_offsets
from controlplane.core.wordlists import WordList, key, simplified
from govhost_node import words

CONTEXT = 20


@dataclass(frozen=True)
class Rule:
    word: str
    right: str | None
    severity: str
    note: str | None
    source: str                 # the list file it came from
    traditional: bool


@dataclass(frozen=True)
class Hit:
    start: int                  # offsets into the original text
    end: int
    rule: Rule


def normalise(text: str, traditional: bool = False) -> tuple[str, list[int], list[int]]:
    """The text with separators removed, and where each of its runs of letters starts in the
    normalised text and in the original (to map a match back). The node's message check
    normalises the same way (govhost_node/words.py)."""
    norm, norm_at, orig_at = words.runs(words.fold(text))
    # separators first: `計 畫` is the phrase 計畫 (计划), as a reader takes it
    return (simplified(norm) if traditional else norm), norm_at, orig_at


def _orig(pos: int, norm_at: list[int], orig_at: list[int]) -> int:
    i = bisect.bisect_right(norm_at, pos) - 1
    return orig_at[i] + (pos - norm_at[i])


class Matcher:
    """The county's lists, compiled once and used for every file."""

    def __init__(self, lists: Mapping[str, WordList]):
        self.rules: list[Rule] = []
        self._auto: dict[bool, ahocorasick.Automaton] = {}
        staged: dict[bool, dict[str, list[tuple[str, int]]]] = {False: {}, True: {}}
        for source, wl in sorted(lists.items()):
            for e in wl.entries:
                rule = Rule(e.word, e.right, e.severity or wl.severity, e.note, source,
                            wl.traditional)
                idx = len(self.rules)
                self.rules.append(rule)
                staged[wl.traditional].setdefault(key(e.word, wl.traditional), []).append(
                    ("word", idx))
                for ok in e.except_in:
                    staged[wl.traditional].setdefault(key(ok, wl.traditional), []).append(
                        ("except", idx))
        for trad, keys in staged.items():
            if not keys:
                continue
            a = ahocorasick.Automaton()
            for k, values in keys.items():
                if k:
                    a.add_word(k, (len(k), tuple(values)))
            a.make_automaton()
            self._auto[trad] = a

    def find(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        for trad, auto in self._auto.items():
            norm, norm_at, orig_at = normalise(text, trad)
            if not norm:
                continue
            found: list[tuple[int, int, int]] = []
            excepts: dict[int, list[tuple[int, int]]] = {}
            for end, (length, values) in auto.iter(norm):
                start = end - length + 1
                for what, idx in values:
                    if what == "word":
                        found.append((start, end + 1, idx))
                    else:
                        excepts.setdefault(idx, []).append((start, end + 1))
            for start, end, idx in words.excused(found, excepts):
                o_start = _orig(start, norm_at, orig_at)
                o_end = _orig(end - 1, norm_at, orig_at) + 1
                hits.append(Hit(o_start, o_end, self.rules[idx]))
        hits.sort(key=lambda h: (h.start, h.end, h.rule.word))
        return hits


# Text no visitor sees on the page itself: a finding there is held for review, never
# refused outright nor left as a mere note (docs/content-safety.md).
HIDDEN = frozenset({"comment", "css"})


def findings(matcher: Matcher, page: Page) -> list[dict]:
    """A page's findings as the state store keeps them and people read them: where (the
    place: body, title, meta, alt, attribute, script, comment, css; and the line), what was
    found (as written on the page), the right form, and the text around it."""
    text = page.text()
    out = [_finding(h, text, page.line_of(h.start), page.where, "body")
           for h in matcher.find(text)]
    for line, place, piece in page.elsewhere:
        hits = matcher.find(piece)
        newlines = newline_offsets(piece) if hits else []
        for h in hits:
            out.append(_finding(h, piece, line + bisect.bisect_left(newlines, h.start),
                                "line", place))
    return out


def _finding(h: Hit, text: str, line: int, where: str, place: str) -> dict:
    before = text[max(0, h.start - CONTEXT):h.start]
    after = text[h.end:h.end + CONTEXT]
    r = h.rule
    return {"line": line, "where": where, "place": place, "word": r.word,
            "found": text[h.start:h.end], "right": r.right,
            "severity": "review" if place in HIDDEN else r.severity,
            "note": r.note, "list": r.source,
            "before": " ".join(before.split()), "after": " ".join(after.split())}
