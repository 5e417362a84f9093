"""A release's review chain (pure): who decides next, and who may not.

A unit's manifest sets one to three levels (`review: {levels: [unit, county]}`); a release
published under it waits until every level has approved, in order, and is dropped at the
first rejection. A level `unit` is decided by one of the unit's reviewers, `county` by a
county operator. In the console each level is decided by a different person, and never by
the one who published the release (four eyes); the operators at the control machine, who
hold the inventory and its review settings, decide through the CLI without that rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from controlplane.core.errors import GovhostError

Decision = Literal["approved", "rejected"]
LEVEL_NAMES = {"unit": "本单位审核人 (the unit's reviewers)",
               "county": "县级管理员 (a county operator)"}
COMMENT_MAX = 2000
# An account created or reset by one of a release's parties this recently is not a second
# person for it: a unit admin acting alone could otherwise make (or take over) a reviewer.
TIES_DAYS = 30
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ReviewError(GovhostError):
    """A decision that the chain does not allow; nothing was changed."""


@dataclass(frozen=True)
class Step:
    level: int                 # 0-based index into the chain's levels
    kind: str                  # unit | county
    decision: Decision
    by: str
    at: float
    comment: str = ""


@dataclass(frozen=True)
class Chain:
    levels: tuple[str, ...]
    publisher: str
    steps: tuple[Step, ...] = field(default=())

    @property
    def rejected(self) -> bool:
        return any(s.decision == "rejected" for s in self.steps)

    @property
    def approved(self) -> bool:
        return not self.rejected and self.next_level is None

    @property
    def next_level(self) -> int | None:
        """The level waiting for a decision; None once rejected or approved at every level."""
        if self.rejected:
            return None
        done = sum(1 for s in self.steps if s.decision == "approved")
        return done if done < len(self.levels) else None

    def refusal(self, who: str, kinds: frozenset[str], four_eyes: bool = True,
                ties: frozenset[tuple[str, str]] = frozenset()) -> str | None:
        """Why `who` (who may decide levels of `kinds`) may not decide now; None: they may.
        `ties`: (maker, account) pairs, an account created or reset by a unit's person within
        TIES_DAYS: with four eyes, `who` may not decide when tied to the publisher or to a
        person who decided an earlier level: one made the other, or one person made both."""
        if self.rejected:
            return "this release was rejected; the live site is unchanged"
        level = self.next_level
        if level is None:
            return "this release is approved at every level already"
        kind = self.levels[level]
        if kind not in kinds:
            return (f"level {level + 1} of {len(self.levels)} is decided by "
                    f"{LEVEL_NAMES.get(kind, kind)}")
        if four_eyes:
            if who == self.publisher:
                return "you published this release; another person must review it"
            earlier = [s.level + 1 for s in self.steps if s.by == who]
            if earlier:
                return (f"you decided level {earlier[0]} of this release; each level needs "
                        "a different person")
            makers = {a: {m for m, t in ties if t == a} for a in
                      (who, self.publisher, *(s.by for s in self.steps))}
            for party in (self.publisher, *(s.by for s in self.steps)):
                common = sorted(makers[who] & makers[party])
                if common:
                    return (f"{common[0]} created or reset both your account and that of "
                            f"{party}, who took part in this release, within {TIES_DAYS} "
                            "days; another person must review it")
                if (party, who) in ties:
                    return (f"{party}, who took part in this release, created or reset your "
                            f"account within {TIES_DAYS} days; another person must review it")
                if (who, party) in ties:
                    return (f"you created or reset the account of {party}, who took part in "
                            f"this release, within {TIES_DAYS} days; another person must "
                            "review it")
        return None

    def decide(self, who: str, kinds: frozenset[str], decision: Decision, at: float,
               comment: str = "", four_eyes: bool = True,
               ties: frozenset[tuple[str, str]] = frozenset()) -> tuple["Chain", Step]:
        """The chain after `who`'s decision on the waiting level (ReviewError if refused)."""
        why = self.refusal(who, kinds, four_eyes, ties)
        if why:
            raise ReviewError(why)
        level = self.next_level
        assert level is not None
        step = Step(level, self.levels[level], decision, who, at, clean_comment(comment))
        return Chain(self.levels, self.publisher, (*self.steps, step)), step


def clean_comment(text: str) -> str:
    """A reviewer's comment as kept: control characters out (newlines and tabs stay),
    at most COMMENT_MAX characters. It is shown escaped, never interpreted."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n")).strip()
    if len(text) > COMMENT_MAX:
        raise ReviewError(f"the comment is {len(text)} characters long; at most "
                          f"{COMMENT_MAX}")
    return text
