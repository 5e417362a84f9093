"""A review chain (pure): who decides next, and who may not. A release's, a rollback's
and a citizen's answer's (controlplane/messages/inbox.py) go through the same rules.

A unit's manifest sets one to three levels (`review: {levels: [unit, county]}`); a release
published under it waits until every level has approved, in order, and is dropped at the
first rejection. A level `unit` is decided by one of the unit's reviewers, `county` by a
county operator. In the console each level is decided by a different person, and never by
the one who published the release (four eyes); the operators at the control machine, who
hold the inventory and its review settings, decide through the CLI without that rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Literal

from controlplane.core.errors import GovhostError

Decision = Literal["approved", "rejected"]
LEVEL_NAMES = {"unit": "本单位审核人 (the unit's reviewers)",
               "county": "县级管理员 (a county operator)"}
COMMENT_MAX = 2000
# An account created or reset by one of a release's parties this recently (or at any time
# since the release was submitted) is not a second person for it: a unit admin acting alone
# could otherwise make (or take over) a reviewer.
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


def tie_window(submitted: float | None, now: float) -> float:
    """Since when an account made or reset by one person for another ties the two: the
    last TIES_DAYS before the decision, and the whole time the release has waited (a review
    left open for longer does not let an account made meanwhile become its second person)."""
    recent = now - TIES_DAYS * 86400
    return recent if submitted is None else min(submitted, recent)


def makers(account: str, ties: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Everyone who holds `account` through `ties` ((maker, account) pairs): the account
    itself, whoever made or reset it, whoever made or reset theirs, and so on; each with
    the way down to `account` (maker first). An admin who makes a second admin who makes a
    reviewer holds the reviewer as surely as one who made the reviewer directly."""
    made_by: dict[str, set[str]] = {}
    for maker, made in ties:
        if maker != made:
            made_by.setdefault(made, set()).add(maker)
    found = {account: (account,)}
    todo = [account]
    while todo:                      # breadth first: the shortest way is kept
        nxt = []
        for a in todo:
            for m in sorted(made_by.get(a, ())):
                if m not in found:
                    found[m] = (m, *found[a])
                    nxt.append(m)
        todo = nxt
    return found


@dataclass(frozen=True)
class Chain:
    levels: tuple[str, ...]
    publisher: str
    steps: tuple[Step, ...] = field(default=())
    submitted: float | None = None      # when the release (or rollback) began to wait
    what: str = "release"               # what waits, as refusals name it ("answer")

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
        the tie window (`tie_window`). With four eyes, `who` may not decide when tied to the
        publisher or to a person who decided an earlier level: one holds the other's account
        (made or reset it, directly or through accounts they made), or one person holds
        both."""
        if self.rejected:
            return f"this {self.what} was rejected" + (
                "; the live site is unchanged" if self.what == "release" else "")
        level = self.next_level
        if level is None:
            return f"this {self.what} is approved at every level already"
        kind = self.levels[level]
        if kind not in kinds:
            return (f"level {level + 1} of {len(self.levels)} is decided by "
                    f"{LEVEL_NAMES.get(kind, kind)}")
        if four_eyes:
            if who == self.publisher:
                return (f"you {'published' if self.what == 'release' else 'wrote'} this "
                        f"{self.what}; another person must review it")
            earlier = [s.level + 1 for s in self.steps if s.by == who]
            if earlier:
                return (f"you decided level {earlier[0]} of this {self.what}; each level "
                        "needs a different person")
            return _tied(who, (self.publisher, *(s.by for s in self.steps)), ties)
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
        return replace(self, steps=(*self.steps, step)), step


def _tied(who: str, parties: Iterable[str], ties: frozenset[tuple[str, str]]) -> str | None:
    """Why `who` is no second person beside `parties` (see Chain.refusal), or None."""
    window = (f"within {TIES_DAYS} days or since this release was submitted; another "
              "person must review it")
    mine = makers(who, ties)
    for party in parties:
        theirs = makers(party, ties)
        if party in mine:
            way = _way(mine[party])
            return (f"{party}, who took part in this release, created or reset your "
                    f"account{way} {window}")
        if who in theirs:
            way = _way(theirs[who])
            return (f"you created or reset the account of {party}, who took part in this "
                    f"release{way}, {window}")
        common = sorted(set(mine) & set(theirs),
                        key=lambda m: (len(mine[m]) + len(theirs[m]), m))
        if common:
            m = common[0]
            ways = "".join(_way(w) for w in (mine[m], theirs[m]))
            return (f"{m} created or reset both your account and that of {party}, who took "
                    f"part in this release{ways}, {window}")
    return None


def _way(path: tuple[str, ...]) -> str:
    """ " (through a → b → c)" for a tie over more than one account, "" for a direct one."""
    return f" (through {' → '.join(path)})" if len(path) > 2 else ""


def clean_comment(text: str) -> str:
    """A reviewer's comment as kept: control characters out (newlines and tabs stay),
    at most COMMENT_MAX characters. It is shown escaped, never interpreted."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n")).strip()
    if len(text) > COMMENT_MAX:
        raise ReviewError(f"the comment is {len(text)} characters long; at most "
                          f"{COMMENT_MAX}")
    return text
