"""A provider that discards every message: for benchmarks of everything but the provider."""

from __future__ import annotations

from channels.base import OnResult, Outbound, SendResult, report, sent


class NullProvider:
    name = "null"
    in_flight = None  # answers a call at once

    def __init__(self, channel: str, settings=None) -> None:
        self.channel = channel

    async def send_batch(
        self, messages: list[Outbound], on_result: OnResult | None = None
    ) -> list[SendResult]:
        results = [sent(m, f"null-{m.ledger_id}") for m in messages]
        report(results, on_result)
        return results

    async def aclose(self) -> None:
        return None
