"""A circuit breaker per channel: stop sending while the provider keeps failing.

Closed: batches go. When more than ``failure_rate`` of the last ``window`` attempts failed
(with at least ``min_attempts`` seen) it opens for ``open_seconds``: ``allow()`` is False and
``reason`` says why, in words the send flow records on the run. After that one batch is let
through (half-open); if it is mostly good the breaker closes, else it opens again.

What counts as a failure: a message whose provider call failed for a provider-side reason
(retries exhausted, ``unknown`` outcomes, bad credentials, 5xx). Per-recipient permanent errors
(invalid address, STOP, unregistered device: results with an ``effect``) do not count: a list
with many stale addresses is not a provider outage. Thread-safe (batches of one worker may run in
threads); holds no asyncio object.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def is_failure(result: Any) -> bool:
    return result.status != "sent" and not getattr(result, "effect", None)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        window: int | None = None,
        min_attempts: int | None = None,
        failure_rate: float | None = None,
        open_seconds: float | None = None,
        clock=time.monotonic,
    ) -> None:
        from core.settings import get_settings

        s = get_settings()
        self.name = name
        self.window = window or s.circuit_window
        self.min_attempts = min(min_attempts or s.circuit_min_attempts, self.window)
        self.failure_rate = s.circuit_failure_rate if failure_rate is None else failure_rate
        self.open_seconds = s.circuit_open_seconds if open_seconds is None else open_seconds
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=self.window)  # True = failure
        self._state = CLOSED
        self._opened_at = 0.0
        self._last_error: str | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            self._tick()
            return self._state

    def _tick(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.open_seconds:
            self._state = HALF_OPEN

    def allow(self) -> bool:
        """May a batch go now? In half-open state, yes: that batch is the probe."""
        with self._lock:
            self._tick()
            return self._state != OPEN

    def record(self, results: Iterable[Any]) -> None:
        """Count a batch's results; may open, close or re-open the breaker."""
        batch = list(results)
        with self._lock:
            self._tick()
            failures = [r for r in batch if is_failure(r)]
            if failures:
                self._last_error = failures[-1].error
            if self._state == HALF_OPEN:
                if batch and len(failures) / len(batch) > self.failure_rate:
                    self._open(len(failures), len(batch))
                else:
                    self._state, self.reason = CLOSED, None
                    self._outcomes.clear()
                return
            self._outcomes.extend(is_failure(r) for r in batch)
            n, bad = len(self._outcomes), sum(self._outcomes)
            if self._state == CLOSED and n >= self.min_attempts and bad / n > self.failure_rate:
                self._open(bad, n)

    def _open(self, bad: int, n: int) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        until = datetime.now(UTC) + timedelta(seconds=self.open_seconds)
        self.reason = (
            f"{self.name}: {bad} of the last {n} attempts failed "
            f"({bad / n:.0%} > {self.failure_rate:.0%}); paused until {until:%H:%M:%S} UTC"
            + (f"; last error: {self._last_error}" if self._last_error else "")
        )
        self._outcomes.clear()
