"""The circuit breaker opens on a failure spike from a real provider call, then closes after a probe."""

from __future__ import annotations

import asyncio

from channels.base import SendResult
from channels.circuit import CircuitBreaker
from channels.registry import get_provider
from tests.fakes import messages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_on_provider_failures_and_closes_after_a_good_probe(sendgrid_env, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_PROVIDER_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    provider, clock = get_provider("email"), Clock()
    breaker = CircuitBreaker(
        "email", window=50, min_attempts=20, failure_rate=0.5, open_seconds=30, clock=clock
    )

    def batch(start: int, n: int) -> list:
        return asyncio.run(
            provider.send_batch([messages.email(start + i, f"c{start + i}@x.example") for i in range(n)])
        )

    breaker.record(batch(0, 10))  # healthy
    sendgrid_env.fail_next(8, 503)
    breaker.record(batch(100, 10))
    assert breaker.allow() and breaker.state == "closed"  # 8 of 20 failed: 40%
    sendgrid_env.fail_next(10, 503)
    breaker.record(batch(200, 10))  # 18 of 30: 60%
    assert not breaker.allow() and breaker.state == "open"
    assert (
        "18 of the last 30 attempts failed (60% > 50%)" in breaker.reason and "sendgrid 503" in breaker.reason
    )
    clock.now += 29
    assert not breaker.allow()
    clock.now += 2
    assert breaker.allow() and breaker.state == "half_open"  # one probe batch
    sendgrid_env.fail_next(10, 503)
    breaker.record(batch(300, 10))
    assert not breaker.allow() and "10 of the last 10" in breaker.reason  # probe failed: open again
    clock.now += 31
    breaker.record(batch(400, 10))  # good probe
    assert breaker.allow() and breaker.state == "closed" and breaker.reason is None


def test_per_recipient_permanent_errors_do_not_open_it(sendgrid_env):
    provider = get_provider("email")
    breaker = CircuitBreaker("email", window=50, min_attempts=20, failure_rate=0.5, open_seconds=30)
    bounces = [messages.email(i, f"bounce{i}@x.example") for i in range(30)]
    results = asyncio.run(provider.send_batch(bounces))
    assert all(r.effect == "invalid" for r in results)
    breaker.record(results)
    assert breaker.allow() and breaker.state == "closed"


def test_unknown_outcomes_count_as_failures():
    breaker = CircuitBreaker("sms", window=10, min_attempts=10, failure_rate=0.5, open_seconds=5)
    breaker.record([SendResult(i, "unknown", error="twilio: no answer") for i in range(6)])
    breaker.record([SendResult(i, "sent") for i in range(4)])
    assert breaker.state == "open" and breaker.reason.startswith("sms: 6 of the last 10")
