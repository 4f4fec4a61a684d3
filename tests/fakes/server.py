"""A real HTTP server on 127.0.0.1 for fake providers: aiohttp in a background thread.

Why aiohttp: async (the benchmark needs > 1,000 requests/s with 100 ms of latency each, i.e.
100+ requests in flight), already installed (twilio's async client uses it), and an app is a
few lines. Each fake records every request and can inject, per request:
- ``latency`` (seconds, every request);
- ``fail_next(n, status, retry_after=None)``: the next n requests get that status (429, 503...);
- ``hang_next(n)``: the next n requests get no answer for ``hang_seconds`` (a read timeout);
- permanent errors per recipient: decided by each fake (e.g. an address containing "bounce").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, form dict or raw text


@dataclass
class Fault:
    status: int | None = None  # None: hang
    retry_after: float | None = None


@dataclass
class FakeServer:
    latency: float = 0.0
    hang_seconds: float = 30.0
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0  # requests being answered now (touched only on the server's loop)
    max_in_flight: int = 0
    _faults: deque[Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- what a fake implements --------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def fault_response(self, fault: Fault) -> web.Response:
        raise NotImplementedError

    # ---- injection -----------------------------------------------------------
    def fail_next(self, n: int, status: int, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.extend(Fault(status, retry_after) for _ in range(n))

    def hang_next(self, n: int = 1) -> None:
        with self._lock:
            self._faults.extend(Fault(None) for _ in range(n))

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
        self.latency = 0.0

    def paths(self, contains: str = "") -> list[Recorded]:
        return [r for r in list(self.requests) if contains in r.path]

    # ---- plumbing ------------------------------------------------------------
    async def _record(self, request: web.Request) -> Recorded:
        if request.content_type == "application/json":
            body: Any = await request.json()
        elif request.content_type == "application/x-www-form-urlencoded":
            body = dict(await request.post())
        else:
            body = await request.text()
        rec = Recorded(time.monotonic(), request.method, request.path, dict(request.headers), body)
        self.requests.append(rec)  # list.append is atomic under the GIL
        return rec

    async def _before(self, request: web.Request) -> tuple[Recorded, web.Response | None]:
        """Record, wait the latency, apply an injected fault if one is queued."""
        rec = await self._record(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is None:
            return rec, None
        if fault.status is None:
            await asyncio.sleep(self.hang_seconds)
        return rec, self.fault_response(fault)

    def start(self) -> FakeServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            app = web.Application()
            app.add_routes(self.routes())
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            self.port = self._runner.addresses[0][1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:  # handlers still hanging on an injected timeout
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
