"""The client-side pace of requests to Ometria: a token bucket that spaces requests evenly and
can be held back (when Ometria's validation queue runs low)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimiter:
    """Token bucket (as a virtual-schedule: each request reserves the next free slot).

    `burst=1` spaces requests evenly, `1/rate` seconds apart, so no one-second window ever holds
    more than `rate` requests: Ometria counts requests per second and a burst at a window's edge
    would otherwise double it. `hold(seconds)` pushes every later request back (queue
    pressure)."""

    def __init__(self, rate_per_s: float, *, burst: int = 1, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.interval = 1.0 / rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf  # theoretical arrival time of the next request
        self._hold_until = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may go; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._tat - (self.burst - 1) * self.interval, self._hold_until)
            self._tat = max(self._tat, start) + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def hold(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)

