"""One pooled aiohttp session per batch and a JSON POST whose transport errors are classified.

Why aiohttp and not httpx (which the project also has): measured here against the fake
provider on loopback, httpx 0.28's AsyncClient fell from ~300 requests/s with one connection to
~80/s with 64 concurrent connections, while aiohttp went from ~500/s to ~1,050/s (2 loaded
cores, see notes/readme-channels.md). aiohttp is already installed as twilio's async transport.

Transport errors: a connection that could not be made (refused, connect timeout) is retryable,
the request never left; anything after it left (read timeout, dropped connection) is
``unknown``: the provider may have accepted the message.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDict

from channels.base import OnResult, Outbound, SendError, SendResult
from channels.ratelimit import TokenBucket
from channels.retry import RetryPolicy, send_with_retry

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body or b"null")


class IoLoop:
    """A provider's own event loop in a daemon thread, holding one pooled session for the process.

    Why: the send flow runs each batch in its own event loop (``asyncio.run`` per batch task,
    several at once in threads), and an aiohttp session belongs to one loop. Creating a session
    per batch re-opens every connection per batch (measured: 616 e-mails/s with batches of 1,000
    vs 963/s with batches of 5,000). Running the requests on one long-lived loop keeps the
    connections alive across batches and makes ``concurrency`` hold for the whole process.
    """

    def __init__(self, name: str, concurrency: int, timeout: float, headers: dict[str, str] | None = None):
        self.name, self.concurrency, self.timeout, self.headers = name, concurrency, timeout, headers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.http: aiohttp.ClientSession | None = None
        self.slots: asyncio.Semaphore | None = None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=f"{self.name}-io", daemon=True).start()
                self._loop = loop
            return self._loop

    async def run(self, make_coro: Callable[[], Awaitable[T]]) -> T:
        """Run ``make_coro()`` on the provider's loop and await it from the caller's loop."""
        loop = self._start()

        async def on_io_loop() -> T:
            if self.http is None:
                self.http = session(self.concurrency, self.timeout, self.headers)
                self.slots = asyncio.Semaphore(max(1, self.concurrency))
            return await make_coro()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_io_loop(), loop))

    async def send_all(
        self,
        messages: list[Outbound],
        send_one: Callable[[aiohttp.ClientSession, Outbound], Awaitable[str | None]],
        policy: RetryPolicy,
        bucket: TokenBucket | None,
        on_result: OnResult | None = None,
    ) -> list[SendResult]:
        """A batch on this loop: each message through ``send_one(session, message)``, concurrently,
        retried per ``policy``; the pooled connections outlive the batch. ``on_result`` is called on
        this loop's thread as each message finishes."""
        if not messages:
            return []

        async def batch() -> list[SendResult]:
            send = lambda m: send_one(self.http, m)  # noqa: E731
            return await run_reporting(messages, send, policy, bucket, self.slots, on_result)

        return await self.run(batch)

    async def aclose(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def close() -> None:
            if self.http is not None:
                await self.http.close()
            self.http = None

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(close(), loop))
        loop.call_soon_threadsafe(loop.stop)


class LoopProvider:
    """What the providers sending on an ``IoLoop`` share (SendGrid, FCM): the batch call, the bound of
    requests in flight and the close. A subclass sets ``io``, ``policy``, ``bucket`` and ``concurrency``
    and writes ``_send_one(http, message)``."""

    io: IoLoop
    policy: RetryPolicy
    bucket: TokenBucket | None
    concurrency: int
    _send_one: Callable[[Any, Outbound], Awaitable[str | None]]  # one request and its answer's meaning

    async def send_batch(
        self, messages: list[Outbound], on_result: OnResult | None = None
    ) -> list[SendResult]:
        """Sent on the provider's own loop: its pooled connections outlive the batch.
        ``on_result`` is called on that loop's thread."""
        return await self.io.send_all(messages, self._send_one, self.policy, self.bucket, on_result)

    @property
    def in_flight(self) -> int:
        return max(1, self.concurrency)

    async def aclose(self) -> None:
        await self.io.aclose()


async def run_reporting(
    messages: list[Outbound],
    send_one: Callable[[Outbound], Awaitable[str | None]],
    policy: RetryPolicy,
    bucket: TokenBucket | None,
    slots: asyncio.Semaphore,
    on_result: OnResult | None,
) -> list[SendResult]:
    """channels.retry.run_concurrently, and each result handed to ``on_result`` as soon as it is known
    (the send flow commits it then: a crash leaves unknown only the requests still in flight)."""

    async def one(m: Outbound) -> SendResult:
        result = await send_with_retry(m, send_one, policy, bucket, slots)
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(m) for m in messages)))


def session(concurrency: int, timeout: float, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A session for one batch (sessions belong to one event loop; a batch has its own loop)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(5.0, timeout)),
        connector=aiohttp.TCPConnector(limit=max(1, concurrency)),
        headers=headers,
    )


async def post_json(
    http: aiohttp.ClientSession, url: str, body: Any, provider: str, headers: dict[str, str] | None = None
) -> Answer:
    try:
        async with http.post(url, json=body, headers=headers) as response:
            return Answer(response.status, CIMultiDict(response.headers), await response.read())
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise SendError(f"{provider} unreachable ({type(exc).__name__})", retryable=True) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise SendError(
            f"{provider}: no answer ({type(exc).__name__}), outcome unknown", unknown=True
        ) from exc
