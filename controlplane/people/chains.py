"""Review chains kept in the state store: who is tied to whom (the audit log), and one
decision recorded. Used by releases and rollbacks (content/releases.py) and by answers to
citizens' messages (messages/inbox.py); the rules themselves are review.py's (pure)."""
from __future__ import annotations

import sqlite3
import time

from controlplane.core.state import State
from controlplane.people import review


def ties(st: State, chain: review.Chain, who: str,
         now: float | None = None) -> frozenset[tuple[str, str]]:
    """(maker, account) for the accounts of `who` and of the chain's parties, and of
    whoever made or reset those, and so on, made or reset by a unit's person within the
    chain's tie window (review.tie_window; the audit log says who did)."""
    since = review.tie_window(chain.submitted, time.time() if now is None else now)
    seen = {who, chain.publisher, *(s.by for s in chain.steps)}
    found: set[tuple[str, str]] = set()
    todo = set(seen)
    while todo:                 # up the makers: an admin's admin holds the admin's accounts
        new = st.account_ties(todo, since) - found
        found |= new
        todo = {maker for maker, _ in new} - seen
        seen |= todo
    return frozenset(found)


def record_step(st: State, unit: str, key: str, chain: review.Chain, who: str,
                kinds: frozenset[str], approve: bool, comment: str, four_eyes: bool
                ) -> tuple[review.Chain, review.Step]:
    """One decision on the waiting level of the chain kept under `key`, recorded (with its
    audit entry). review.ReviewError when `who` may not decide it."""
    chain, step = chain.decide(who, kinds, "approved" if approve else "rejected",
                               time.time(), comment, four_eyes,
                               ties(st, chain, who) if four_eyes else frozenset())
    try:
        st.add_review_step(unit, key, step.level, step.kind, step.decision, who, step.at,
                           step.comment)
    except sqlite3.IntegrityError:
        # two people deciding the same level at once: the first one's decision stands
        raise review.ReviewError(f"level {step.level + 1} was decided by someone else just "
                                 "now; open the page again") from None
    return chain, step


def chain_from(row: dict, submitted: float | None, what: str = "release") -> review.Chain:
    """A chain as the state store keeps it (State.review_chain), waiting since `submitted`."""
    return review.Chain(tuple(row["levels"]), row["publisher"],
                        tuple(review.Step(**s) for s in row["steps"]), submitted, what)


def chain_view(chain: review.Chain) -> dict:
    """A chain as pages and --json show it."""
    return {"levels": list(chain.levels), "publisher": chain.publisher,
            "next_level": chain.next_level,
            "steps": [vars(s) for s in chain.steps]}
