"""When to try a request again and how long to wait first: pure functions, no I/O, no clock.

The API answers 429 (`rate_limited`, `throttled`, ...) and 503 (`unavailable`) when trying
again later is the remedy, usually with `Retry-After` (delay-seconds or an HTTP date, RFC
9110). The wait honours that header; without one it is exponential backoff with full
jitter, so many clients that failed together do not come back together.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from typing import Callable, Optional

#: Statuses that mean "nothing was done, try again later".
RETRY_STATUSES = frozenset({429, 503})


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a `Retry-After` value at unix time `now`; None when unusable.

    Delay-seconds is a non-negative integer; an HTTP date is turned into the time left
    until it (0 when it has passed).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries 429 and 503 answers (and connection failures).

    max_retries: attempts after the first (default 3; 0 raises at once).
    base_delay, max_delay: seconds of the exponential backoff without `Retry-After`
        (defaults 0.5 and 8): attempt n waits a random time up to min(max_delay, base * 2^n).
    max_retry_after: the longest `Retry-After` (seconds) honoured (default 60); a longer
        one is raised instead of waited for, since a caller rarely wants to block that long.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(
        self, retry: int, retry_after: Optional[float], rand: Callable[[], float] = random.random
    ) -> Optional[float]:
        """The wait before retry number `retry` (0-based), or None to give up."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # A small margin: a window that resets "in 1 s" has often not reset at 1.000 s.
            return retry_after + 0.05
        return float(rand() * min(self.max_delay, self.base_delay * (2.0**retry)))
