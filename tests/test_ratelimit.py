"""Rate limits measured at the fake server: messages per second and requests in flight."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from channels.ratelimit import TokenBucket, batch_rate_limit, bucket_for
from channels.registry import get_provider
from tests.fakes import messages


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.fixture
def limited(sendgrid_env, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_SENDGRID_RATE_PER_SECOND", "40")
    monkeypatch.setenv("RELANCE_SENDGRID_CONCURRENCY", "4")
    get_settings.cache_clear()
    return sendgrid_env


def test_rate_holds_across_concurrent_batches_in_threads(limited):
    """Two batches, each in its own thread and event loop (as the flow's batch tasks), share the rate."""
    provider = get_provider("email")
    results: list = []

    def batch(offset: int) -> None:
        msgs = [messages.email(offset + i, f"c{offset + i}@example.com") for i in range(30)]
        results.extend(asyncio.run(provider.send_batch(msgs)))

    start = time.monotonic()
    threads = [threading.Thread(target=batch, args=(k * 100,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert len(results) == 60 and all(r.status == "sent" for r in results)
    times = [r.at for r in limited.requests]
    burst = bucket_for("sendgrid").burst
    assert elapsed >= (60 - burst) / 40 * 0.95  # 60 messages at 40/s
    assert _max_in_window(times, 0.5) <= 40 * 0.5 + burst + 1


def test_concurrency_bounds_requests_in_flight(limited, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_SENDGRID_RATE_PER_SECOND", "0")  # unlimited rate: only concurrency bites
    get_settings.cache_clear()
    limited.latency = 0.1
    start = time.monotonic()
    results = asyncio.run(
        get_provider("email").send_batch([messages.email(i, f"c{i}@x.example") for i in range(20)])
    )
    assert all(r.status == "sent" for r in results)
    assert limited.max_in_flight == 4
    assert time.monotonic() - start >= 0.5  # 20 requests, 4 at a time, 100 ms each


def test_token_bucket_reservations():
    bucket = TokenBucket(rate=100, burst=5)
    delays = [bucket.reserve() for _ in range(15)]
    assert delays[:4] == [0.0] * 4
    assert delays[-1] == pytest.approx(0.10, abs=0.01)  # 15 tokens, 5 free, 10 more at 100/s
    assert TokenBucket(rate=0).reserve(1000) == 0.0  # unlimited


def test_batch_rate_limit_outside_prefect_is_a_no_op(settings):
    async def go() -> float:
        start = time.monotonic()
        async with batch_rate_limit("sendgrid", 10_000):
            return time.monotonic() - start

    assert asyncio.run(go()) < 0.05


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_global_limits_only_for_the_providers_asked(settings, prefect_harness, monkeypatch):
    """A run sets up the limits of the providers it sends through, not every provider's."""
    from channels.ratelimit import ensure_global_limits
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_TWILIO_RATE_PER_SECOND", "20")
    monkeypatch.setenv("RELANCE_SENDGRID_RATE_PER_SECOND", "50")
    get_settings.cache_clear()
    assert asyncio.run(ensure_global_limits(providers={"twilio", "outbox"})) == ["relance-rate-twilio"]
    assert asyncio.run(ensure_global_limits(providers={"outbox"})) == []
    everything = asyncio.run(ensure_global_limits())
    assert {"relance-rate-twilio", "relance-rate-sendgrid"} <= set(everything)


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_prefect_global_limit_spaces_batches(settings, prefect_harness, monkeypatch):
    """Under a flow, batches take slots of `relance-rate-twilio`, which decay at the provider's rate."""
    from prefect import flow

    from channels.ratelimit import ensure_global_limits
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_TWILIO_RATE_PER_SECOND", "20")
    monkeypatch.setenv("RELANCE_BATCH_SIZE", "10")
    get_settings.cache_clear()
    assert "relance-rate-twilio" in asyncio.run(ensure_global_limits())

    @flow
    async def three_batches() -> list[float]:
        stamps = []
        for _ in range(3):
            async with batch_rate_limit("twilio", 20):
                stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(three_batches())
    # 20 slots free at once, then 20 slots decay at 20/s: about one batch a second
    assert stamps[2] - stamps[0] >= 1.0
