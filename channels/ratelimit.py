"""Rate limits per provider: a local token bucket per process, Prefect global limits across workers.

Two layers, because one cannot do both jobs:
- ``TokenBucket`` paces each request inside a process (a provider calls ``wait()`` before every
  HTTP request, retries included). It is a reservation bucket (GCRA) guarded by a
  ``threading.Lock`` and waited with ``asyncio.sleep``: it holds no asyncio object, so it is
  shared by every batch of the process even when each batch runs its own event loop in its
  own thread (the send flow's ``asyncio.run`` per batch task).
- ``batch_rate_limit(provider, n)`` (and ``RateLimiter.acquire(n)``) takes ``n`` slots of the
  Prefect global concurrency limit ``relance-rate-<provider>`` whose slots decay at the
  provider's rate, once per batch, not per message (a Prefect API call per message would cost
  more than the message). It holds across workers and machines; outside a Prefect run, or when
  the limit was not created (``ensure_global_limits``), it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

RATE_LIMITED_PROVIDERS = ("smtp", "sendgrid", "twilio", "fcm")


class TokenBucket:
    """``rate`` requests per second with bursts of at most ``burst``; ``rate <= 0`` = unlimited."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(1.0, self.rate / 20)  # ~50 ms worth of requests
        self._tat = 0.0  # theoretical arrival time of the next request (GCRA)
        self._lock = threading.Lock()

    def reserve(self, n: float = 1) -> float:
        """Reserve ``n`` tokens; return how many seconds to wait before using them."""
        if self.rate <= 0:
            return 0.0
        tau = self.burst / self.rate
        with self._lock:
            now = time.monotonic()
            self._tat = max(self._tat, now)
            delay = self._tat + n / self.rate - tau - now
            self._tat += n / self.rate
        return max(0.0, delay)

    async def wait(self, n: float = 1) -> None:
        delay = self.reserve(n)
        if delay > 0:
            await asyncio.sleep(delay)


_buckets: dict[str, TokenBucket] = {}
_buckets_lock = threading.Lock()


def provider_rate(provider: str, settings=None) -> float:
    """Messages per second allowed for a provider (0 = unlimited: outbox, null)."""
    settings = settings or _settings()
    return float(getattr(settings, f"{provider}_rate_per_second", 0.0) or 0.0)


def bucket_for(provider: str, settings=None, key: str | None = None) -> TokenBucket:
    """The process-wide bucket of a provider (``key`` separates e.g. test instances)."""
    name = key or provider
    with _buckets_lock:
        bucket = _buckets.get(name)
        rate = provider_rate(provider, settings)
        if bucket is None or bucket.rate != rate:
            bucket = _buckets[name] = TokenBucket(rate)
        return bucket


def global_limit_name(provider: str) -> str:
    return f"relance-rate-{provider}"


def _settings():
    from core.settings import get_settings

    return get_settings()


def _in_prefect_run() -> bool:
    """True inside a Prefect flow or task run (Prefect is then already imported: no import cost)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


async def acquire_global(provider: str, n: int, settings=None) -> bool:
    """Take ``n`` slots of the provider's Prefect rate limit; False when not applicable."""
    if n <= 0 or provider not in RATE_LIMITED_PROVIDERS or provider_rate(provider, settings) <= 0:
        return False
    if not _in_prefect_run():
        return False
    from prefect.concurrency.asyncio import rate_limit

    await rate_limit(global_limit_name(provider), occupy=n, strict=False)
    return True


@asynccontextmanager
async def batch_rate_limit(provider: str, n_messages: int, settings=None) -> AsyncIterator[None]:
    """Per batch: the cross-worker Prefect rate limit; the provider paces each request locally."""
    await acquire_global(provider, n_messages, settings)
    yield


class RateLimiter:
    """The per-batch limiter of a channel's configured provider (what the send flow holds)."""

    def __init__(self, provider: str, settings=None) -> None:
        self.provider = provider
        self.settings = settings

    @classmethod
    def for_channel(cls, channel: str, settings=None) -> RateLimiter:
        settings = settings or _settings()
        return cls(getattr(settings, f"{channel}_provider"), settings)

    async def acquire(self, n: int) -> None:
        await acquire_global(self.provider, n, self.settings)


async def ensure_global_limits(
    settings=None, batch_size: int | None = None, providers: Iterable[str] | None = None
) -> list[str]:
    """Create or update the Prefect global limits (limit = a batch, decay = the provider's rate).

    Called by the operator (``relance`` setup) or the flow at start; idempotent.
    ``providers`` restricts it to those a run uses: two API calls per provider
    were 0.2 s of every flow run, spent even when the run only writes to the outbox.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    settings = settings or _settings()
    size = batch_size or settings.batch_size
    done = []
    async with get_client() as client:
        for provider in RATE_LIMITED_PROVIDERS:
            if providers is not None and provider not in providers:
                continue
            rate = provider_rate(provider, settings)
            if rate <= 0:
                continue
            name = global_limit_name(provider)
            limit = max(int(size), int(rate), 1)
            try:
                await client.read_global_concurrency_limit_by_name(name)
                await client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=rate)
                )
            except ObjectNotFound:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=rate)
                )
            done.append(name)
    return done
