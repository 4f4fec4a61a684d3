"""The provider calls of one batch, with outcomes committed as they come back.

Why: a batch of 1,000 e-mails was marked ``sending`` as a whole and its outcomes written when the
batch ended, so a ``kill -9`` made up to 1,000 outcomes unknown while at most the provider's
concurrency (256 for SendGrid) were really in flight. Here, per channel:

- the messages go to the provider in chunks; a chunk's rows move planned -> sending (COMMIT) just
  before the chunk is handed over, and only while the rows in ``sending`` stay within the
  provider's ``in_flight`` bound (a window: the next chunk waits until enough outcomes are
  committed);
- each result comes back through the provider's ``on_result`` callback and is committed with the
  others that finished meanwhile, every ``FLUSH_EVERY`` results or ``FLUSH_SECONDS``, together
  with its consent effects (delivery.effects);
- so a crash leaves at most ``in_flight`` rows in ``sending`` per channel and worker: the requests
  in flight and those whose outcome was not committed yet (at most one flush).

Providers that answer a call as a whole (outbox, null: ``in_flight = None``) get the batch in one
call, as before: the outbox's own files say what was written (delivery.reconcile).

All database writes of a batch go through ONE thread, in order: the event loop keeps feeding the
provider while a commit runs, and a chunk's results can only be written after its ``sending``
commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, update

from core.models import LedgerEntry, Status, utcnow
from delivery import ledger

log = logging.getLogger(__name__)

LEDGER = LedgerEntry.__table__
FLUSH_EVERY = 64  # results per commit at most (a commit is ~1-5 ms on SQLite)
FLUSH_SECONDS = 0.1  # and none waits longer than this for its commit
CHUNKS_PER_WINDOW = 4  # chunk = in_flight / 4: the window refills while requests are answered


@dataclass
class Unanswered:
    """The result of a message whose provider call raised or forgot it: recorded as ``unknown``."""

    ledger_id: int
    error: str
    status: str = "unknown"
    provider_message_id: str | None = None
    retryable: bool = False
    effect: str | None = None
    attempts: int = 1
    cost_units: float | None = None


class Window:
    """At most ``limit`` rows of one channel in ``sending`` (marked, outcome not committed yet)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.broken: BaseException | None = None  # the writer failed: nothing more may be marked
        self._changed = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.broken is not None or self.used + n <= self.limit)
            if self.broken is not None:
                raise RuntimeError("outcomes could not be committed: sending stops") from self.broken
            self.used += n

    async def abort(self, error: BaseException) -> None:
        async with self._changed:
            self.broken = error
            self._changed.notify_all()

    async def give(self, n: int) -> None:
        async with self._changed:
            self.used -= n
            self._changed.notify_all()


@dataclass
class _Pending:
    provider: str
    result: Any
    window: Window


@dataclass
class Writer:
    """Commits ``sending`` marks and results in order, in one thread, results in small groups."""

    engine: Engine
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    flush_every: int = FLUSH_EVERY
    flush_seconds: float = FLUSH_SECONDS

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="relance-outcomes")
        self._buffer: list[_Pending] = []
        self._unanswered = 0  # marked `sending`, result not reported yet
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._windows: list[Window] = []
        self._task = asyncio.create_task(self._guarded())

    # ---- marks ---------------------------------------------------------------
    async def mark_sending(self, ids: list[int], provider: str) -> None:
        """planned -> sending for ``ids`` (COMMIT), before their request leaves: the crash-safety line."""
        await self._loop.run_in_executor(self._db, _mark_sending, self.engine, ids, provider)
        self._unanswered += len(ids)

    def window(self, limit: int, chunk: int) -> Window:
        """A channel's window; results are committed at least every ``chunk`` (so the window refills)."""
        self.flush_every = max(1, min(self.flush_every, chunk))
        self._windows.append(Window(limit))
        return self._windows[-1]

    # ---- results ---------------------------------------------------------------
    def reporter(self, provider: str, window: Window) -> Callable[[Any], None]:
        """The ``on_result`` callback of one provider call; safe from the provider's own thread."""

        def on_result(result: Any) -> None:
            if threading.get_ident() == self._loop_thread:
                self._add(_Pending(provider, result, window))
            else:
                self._loop.call_soon_threadsafe(self._add, _Pending(provider, result, window))

        return on_result

    def _add(self, pending: _Pending) -> None:
        self._buffer.append(pending)
        self._unanswered -= 1
        self._wake.set()
        if len(self._buffer) >= self.flush_every or self._unanswered <= 0:
            self._full.set()

    async def _guarded(self) -> None:
        """A failed commit (database gone) stops every feeder: their rows stay `sending`, i.e. unknown."""
        try:
            await self._run()
        except Exception as exc:
            for window in self._windows:
                await window.abort(exc)
            raise

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if len(self._buffer) < self.flush_every and self._unanswered > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):  # let a few more results join this commit
                    await asyncio.wait_for(self._full.wait(), self.flush_seconds)
            group, self._buffer = self._buffer, []
            self._full.clear()
            await self._loop.run_in_executor(self._db, _commit, self.engine, group)
            for pending in group:
                self.counts[str(pending.result.status)] += 1
            released: dict[int, tuple[Window, int]] = {}
            for pending in group:
                window, n = released.get(id(pending.window), (pending.window, 0))
                released[id(pending.window)] = (window, n + 1)
            for window, n in released.values():
                await window.give(n)

    async def close(self) -> None:
        """Commit what is left, then stop the writer thread."""
        self._closing = True
        self._wake.set()
        self._full.set()
        try:
            await self._task
        finally:
            self._db.shutdown(wait=True)


def _mark_sending(engine: Engine, ids: list[int], provider: str) -> None:
    with engine.begin() as conn:
        for start in range(0, len(ids), 900):
            conn.execute(
                update(LEDGER)
                .where(LEDGER.c.id.in_(ids[start : start + 900]), LEDGER.c.status == str(Status.planned))
                .values(
                    status=str(Status.sending),
                    provider=provider,  # who to ask after a crash (delivery.reconcile)
                    attempts=LEDGER.c.attempts + 1,
                    updated_at=utcnow(),
                )
            )


def _commit(engine: Engine, group: list[_Pending]) -> None:
    """Results and their consent effects in ONE transaction."""
    from delivery.effects import apply_effects

    rows = [
        {
            "ledger_id": p.result.ledger_id,
            "status": str(p.result.status),
            "provider": p.provider,
            "provider_message_id": p.result.provider_message_id,
            "reason": p.result.error,
            "attempts": p.result.attempts,
            "cost_units": getattr(p.result, "cost_units", None),
        }
        for p in group
    ]
    effects = [p.result for p in group if not isinstance(p.result, Unanswered)]
    with engine.begin() as conn:
        ledger.record_results(conn, rows)
        if effects:
            apply_effects(conn, effects)


# --------------------------------------------------------------------------
# Feeding the providers
# --------------------------------------------------------------------------


async def send_all(
    engine: Engine,
    outbound: dict[str, list[Any]],
    providers: Callable[[str], Any],
    breakers: dict[str, Any],
    limiters: dict[str, Any],
    run_id: int,
) -> dict[str, int]:
    """Every channel's messages to its provider concurrently; return counts per status committed."""
    writer = Writer(engine)
    try:
        await asyncio.gather(
            *(
                _feed(writer, ch, msgs, providers, breakers.get(ch), limiters.get(ch), run_id)
                for ch, msgs in outbound.items()
            )
        )
    finally:
        await writer.close()
    return dict(writer.counts)


def chunking(in_flight: int | None, n: int) -> tuple[int, int]:
    """(window, chunk size) for ``n`` messages to a provider holding ``in_flight`` requests at once."""
    if not in_flight or in_flight >= n:
        return max(1, n), max(1, n)
    return in_flight, max(1, in_flight // CHUNKS_PER_WINDOW)


async def _feed(
    writer: Writer,
    channel: str,
    msgs: list[Any],
    providers: Callable[[str], Any],
    breaker: Any,
    limiter: Any,
    run_id: int,
) -> None:
    # a provider per batch and event loop: HTTP clients are bound to the loop that made them
    provider = providers(channel)
    try:
        limit, step = chunking(getattr(provider, "in_flight", None), len(msgs))
        window = writer.window(limit, step)
        calls = []
        for start in range(0, len(msgs), step):
            chunk = msgs[start : start + step]
            await window.take(len(chunk))
            if limiter is not None:
                await limiter.acquire(len(chunk))
            await writer.mark_sending([m.ledger_id for m in chunk], provider.name)
            calls.append(asyncio.create_task(_call(writer, provider, chunk, window, breaker, run_id)))
        await asyncio.gather(*calls)
    finally:
        await provider.aclose()


async def _call(writer: Writer, provider: Any, chunk: list[Any], window: Window, breaker: Any, run_id: int):
    """One provider call; messages it did not answer are recorded ``unknown``, never resent blindly."""
    reported: set[int] = set()
    report = writer.reporter(provider.name, window)

    def on_result(result: Any) -> None:
        reported.add(result.ledger_id)
        report(result)

    try:
        results = await provider.send_batch(chunk, on_result=on_result)
        reason = "provider gave no result"
    except Exception as exc:  # noqa: BLE001 - the provider raised mid-call: some messages may have left
        log.error("run %s: %s provider raised %s", run_id, provider.channel, type(exc).__name__)
        results, reason = [], f"provider error ({type(exc).__name__}): outcome unknown"
    await asyncio.sleep(0)  # callbacks scheduled from the provider's thread run before we look
    for result in results:  # a provider that returned results without reporting them
        if result.ledger_id not in reported:
            on_result(result)
    for m in chunk:
        if m.ledger_id not in reported:
            on_result(Unanswered(m.ledger_id, reason))
    if breaker is not None and results:
        breaker.record(results)
