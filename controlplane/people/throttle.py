"""Login throttling (pure): password guessing gets slower, and nobody can be shut out for good.

Counted per account and per source over a window: after `slow_after` failures each further
attempt waits twice as long as the last (1 s, 2 s, 4 s … up to `max_wait`). There is no
lockout that needs an operator: a stranger who could lock any name by guessing at it would
shut its owner out at will. The wait always ends by itself, and attempts refused while
waiting are not failures (they were never checked), so hammering does not stretch it: at
worst a guesser gets one try per `max_wait` per name, and the owner waits at most that long.
A burst of `alert_after` failures against one name alerts the county instead.

Sources: an IPv4 address, or the /64 of an IPv6 address (one subscriber's whole network: a
host there has 2^64 addresses to rotate through).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Policy:
    window: float = 900          # seconds of failures that count
    slow_after: int = 3
    max_wait: float = 300        # the longest anyone waits between two tries
    alert_after: int = 10        # failures against one name in the window: tell the county


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait: float = 0.0             # seconds until the next attempt is taken
    under_attack: bool = False    # alert_after failures or more in the window


def decide(failures: Sequence[float], now: float, policy: Policy = Policy()) -> Decision:
    """`failures`: times of checked attempts that failed, since the last success."""
    recent = sorted(t for t in failures if now - t < policy.window)
    n = len(recent)
    attacked = n >= policy.alert_after
    if n < policy.slow_after:
        return Decision(True, under_attack=attacked)
    wait = min(policy.max_wait, 2.0 ** min(n - policy.slow_after, 62))
    ready = recent[-1] + wait
    return Decision(now >= ready, max(0.0, ready - now), attacked)


def source(address: str) -> str:
    """What a source is throttled as: the IPv4 address, the IPv6 /64, or the text as given."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
