"""Counters in Redis through the `limits` library: fixed windows, charge or check.

One counter per (limit, domain, descriptor entries): `limits` builds the Redis key from
the item (amount, window) and our identifiers (the domain and each `key=value`,
percent-encoded so that `/`, limits' separator, cannot make two descriptors collide).

Windows are `limits`' fixed windows: a counter lives for one window from its first
charge (Redis EXPIRE), then starts again at zero. `week`, `month` and `year` use a
window at least as long as any such calendar period (7, 31 and 366 days): the gateway
puts the calendar period into a descriptor value (e.g. `2026-12`), so a new period is a
new counter and the window only has to outlive its period.

A charge (cost > 0) is `FixedWindowRateLimiter.hit(item, ..., cost=N)`, which always
adds N (`storage.incr`, a Lua INCRBY) and reports whether the total is within the limit:
a charge that crosses the limit is recorded in full, never dropped (limits' moving
window, by contrast, refuses and records nothing). A check (cost 0) is `test(...,
cost=0)`: allowed while the counter is at most the limit. Both match envoyproxy/ratelimit,
which is OVER_LIMIT when the counter after adding the hits exceeds the limit.

Storage failures raise `limits.errors.StorageError` (wrap_exceptions).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from urllib.parse import quote

from limits import RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from rls.config import Limit

# unit -> (limits item class, multiples)
WINDOWS = {
    "second": (RateLimitItemPerSecond, 1),
    "minute": (RateLimitItemPerMinute, 1),
    "hour": (RateLimitItemPerHour, 1),
    "day": (RateLimitItemPerDay, 1),
    "week": (RateLimitItemPerDay, 7),
    "month": (RateLimitItemPerDay, 31),
    "year": (RateLimitItemPerDay, 366),
}

__all__ = ["Counters", "Outcome", "StorageError", "WINDOWS"]


@dataclass(frozen=True)
class Outcome:
    over: bool  # the counter exceeds the limit (after this charge, if any)
    remaining: int  # limit minus counter, at least 0
    reset_in: int  # whole seconds until the window ends (a full window for a fresh counter)


class Counters:
    def __init__(self, redis_url: str, timeout: float = 1.0):
        # Short socket timeouts so a hung Redis fails the call (UNAVAILABLE) well within
        # Envoy's rate-limit timeout instead of blocking it.
        self.storage = storage_from_string(redis_url, wrap_exceptions=True, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self.limiter = FixedWindowRateLimiter(self.storage)

    def apply(self, limit: Limit, domain: str, entries: list[tuple[str, str]], cost: int) -> Outcome:
        """Charges `cost` (0: checks only) to the counter of `entries` under `limit`."""
        item = window_item(limit)
        ids = identifiers(domain, entries)
        if cost > 0:
            allowed = self.limiter.hit(item, *ids, cost=cost)
        else:
            allowed = self.limiter.test(item, *ids, cost=0)
        reset_at, remaining = self.limiter.get_window_stats(item, *ids)
        reset_in = math.ceil(reset_at - time.time())
        return Outcome(over=not allowed, remaining=remaining,
                       reset_in=reset_in if reset_in > 0 else item.get_expiry())

    def ping(self) -> bool:
        return self.storage.check()


def window_item(limit: Limit):
    cls, multiples = WINDOWS[limit.unit]
    return cls(limit.requests_per_unit, multiples, namespace="RLS")


def identifiers(domain: str, entries: list[tuple[str, str]]) -> list[str]:
    return [quote(domain, safe="")] + [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in entries]
