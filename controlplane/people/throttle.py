"""Login throttling and lockout (pure): password guessing gets slower, then stops.

Counted per account over a window: after `slow_after` failures each further attempt waits
twice as long as the last (1 s, 2 s, 4 s … up to `max_wait`); at `lock_after` failures the
account is locked until the window has passed since the last failure (or an admin resets
it). The same counting per source address stops one address trying many accounts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Policy:
    window: float = 900          # seconds of failures that count
    slow_after: int = 3
    lock_after: int = 10
    max_wait: float = 60


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait: float = 0.0             # seconds until the next attempt is taken
    locked: bool = False


def decide(failures: Sequence[float], now: float, policy: Policy = Policy()) -> Decision:
    """`failures`: times of failed attempts since the last success."""
    recent = sorted(t for t in failures if now - t < policy.window)
    n = len(recent)
    if n >= policy.lock_after:
        return Decision(False, recent[-1] + policy.window - now, locked=True)
    if n < policy.slow_after:
        return Decision(True)
    wait = min(policy.max_wait, 2.0 ** (n - policy.slow_after))
    ready = recent[-1] + wait
    return Decision(now >= ready, max(0.0, ready - now))
