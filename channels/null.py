"""A provider that discards every message: for benchmarks of everything but the provider."""

from __future__ import annotations

from channels.base import Outbound, SendResult, sent


class NullProvider:
    name = "null"

    def __init__(self, channel: str, settings=None) -> None:
        self.channel = channel

    async def send_batch(self, messages: list[Outbound]) -> list[SendResult]:
        return [sent(m, f"null-{m.ledger_id}") for m in messages]

    async def aclose(self) -> None:
        return None
