"""Retries with exponential backoff and full jitter, and the concurrent per-message loop.

Why our own ~60 lines rather than tenacity/backoff: the decision depends on our error classes
(retryable, unknown, Retry-After from the provider, a cap past which we give up and let the
ledger say "failed, retryable"), each attempt must take a token from the provider's bucket and
a concurrency slot, released while sleeping, and the result is a SendResult, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.base import Outbound, SendError, SendResult, not_sent, sent
from channels.ratelimit import TokenBucket

log = logging.getLogger(__name__)

SendOne = Callable[[Outbound], Awaitable[str | None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base: float = 0.5  # seconds before the 2nd attempt (at most; full jitter)
    cap: float = 30.0  # longest wait, also the longest Retry-After we honour

    @classmethod
    def from_settings(cls, settings) -> RetryPolicy:
        s = settings
        return cls(s.provider_max_attempts, s.provider_backoff_base, s.provider_backoff_max)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait before attempt ``attempt + 1``: full jitter, never less than the provider asked."""
        backoff = random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))
        return max(backoff, retry_after or 0.0)


async def send_with_retry(
    message: Outbound,
    send_one: SendOne,
    policy: RetryPolicy,
    bucket: TokenBucket | None = None,
    slots: asyncio.Semaphore | None = None,
) -> SendResult:
    """Attempts until sent, a permanent error, an unknown outcome or ``max_attempts``."""
    attempt = 0
    while True:
        attempt += 1
        try:
            if slots is not None:
                async with slots:
                    if bucket is not None:
                        await bucket.wait()
                    provider_id = await send_one(message)
            else:
                if bucket is not None:
                    await bucket.wait()
                provider_id = await send_one(message)
            return sent(message, provider_id, attempt)
        except SendError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a bug or an unclassified library error: may have left
            log.exception("ledger %s: unclassified error from the provider call", message.ledger_id)
            error = SendError(f"unclassified error {type(exc).__name__}: outcome unknown", unknown=True)
        if error.unknown or not error.retryable or attempt >= policy.max_attempts:
            return not_sent(message, error, attempt)
        if error.retry_after is not None and error.retry_after > policy.cap:
            error.message += f" (provider asked to wait {error.retry_after:.0f}s, above our cap: gave up)"
            return not_sent(message, error, attempt)
        await asyncio.sleep(policy.delay(attempt, error.retry_after))


async def run_concurrently(
    messages: list[Outbound],
    send_one: SendOne,
    policy: RetryPolicy,
    bucket: TokenBucket | None,
    concurrency: int | asyncio.Semaphore,
) -> list[SendResult]:
    """Every message of a batch at once, at most ``concurrency`` requests in flight; results in order.

    Pass a Semaphore to share the bound with other batches running on the same loop.
    """
    slots = (
        concurrency if isinstance(concurrency, asyncio.Semaphore) else asyncio.Semaphore(max(1, concurrency))
    )
    tasks = (send_with_retry(m, send_one, policy, bucket, slots) for m in messages)
    return list(await asyncio.gather(*tasks))


def parse_retry_after(value: str | None) -> float | None:
    """HTTP Retry-After: seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from datetime import UTC, datetime
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None
