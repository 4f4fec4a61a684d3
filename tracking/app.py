"""The tracking server: provider webhooks, our links, the conversions API.

``create_app(settings)`` builds the FastAPI app that `relance serve-tracking`
runs under uvicorn and that tests and ``tracking.simulate`` drive in process.

Nothing is acknowledged before it is stored: every handler commits its
transaction before answering 2xx. When the database stays locked, the
handler retries briefly, then answers 503 with Retry-After so the provider
sends the batch again (SendGrid and Twilio both retry non-2xx answers).

SQLite: the app keeps its own engine whose transactions start with
``BEGIN IMMEDIATE`` (a writer takes the lock up front instead of failing
when a read turns into a write) and serializes this process's writers
behind one lock, so threads queue in Python rather than spin in SQLite's
busy handler; a short busy_timeout bounds the wait on OTHER processes.

Why one module of ~400 lines: every endpoint shares the Store (commit before acknowledging, 503
when locked out) and the request-body bound; each provider's payload is parsed in a module of
its own (sendgrid_events, twilio_events, links).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.exc import OperationalError

from audiences import customer_events, event_types
from core.db import make_engine
from core.models import Customer
from core.settings import Settings, get_settings
from core.tokens import BadToken, read_short_code, read_token
from core.yaml_positions import SpecError
from tracking import links, sendgrid_events, twilio_events
from tracking.attribution import Purchase, attribute_purchases
from tracking.events import store_events

log = logging.getLogger("relance.tracking")
T = TypeVar("T")


class Unavailable(Exception):
    """The database could not take the write in time: answer 503, the sender retries."""


def tracking_engine(url: str, busy_timeout_ms: int = 2000) -> Engine:
    """The server's engine: for SQLite, BEGIN IMMEDIATE and a short busy timeout (see module doc)."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            dbapi_conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """Runs write transactions with commit-before-ack, bounded retries and 503 on lock-out."""

    def __init__(self, engine: Engine, attempts: int = 3, backoff: float = 0.2) -> None:
        self.engine = engine
        self.attempts = attempts
        self.backoff = backoff
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    def _once(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    def run(self, fn: Callable[[Connection], T]) -> T:
        for attempt in range(self.attempts):
            try:
                if self._lock is None:
                    return self._once(fn)
                with self._lock:
                    return self._once(fn)
            except OperationalError as exc:
                log.warning("database busy (attempt %d/%d): %s", attempt + 1, self.attempts, exc.orig)
                if attempt + 1 < self.attempts:
                    time.sleep(self.backoff * (attempt + 1))
        raise Unavailable("database busy")

    async def __call__(self, fn: Callable[[Connection], T]) -> T:
        return await run_in_threadpool(self.run, fn)


class BodyTooLarge(HTTPException):
    """A request body past the bound: 413 (an HTTPException, so FastAPI's body parsing lets it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware: refuse a request body past ``limit`` bytes without reading all of it.

    A declared Content-Length past the bound is answered 413 before the app runs; a chunked (or
    lying) body is counted as it streams and stopped at the first chunk past the bound. Why our
    own: neither Starlette nor uvicorn bounds request bodies, and a handler's ``request.body()``
    holds the whole body in memory.
    """

    def __init__(self, app, limit: int) -> None:  # noqa: ANN001 - any ASGI app
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen, started = 0, False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message) -> None:  # noqa: ANN001
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:  # noqa: ANN001
        log.warning("refused %s %s: body larger than %d bytes", scope["method"], scope["path"], self.limit)
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413)
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)


class ConversionIn(BaseModel):
    """A purchase reported by the shop: the customer by internal or external id."""

    order_id: str = Field(min_length=1, max_length=64)
    customer_id: int | None = None
    customer_external_id: str | None = Field(None, max_length=64)
    amount_cents: int = Field(ge=0)
    currency: str = Field("EUR", min_length=3, max_length=3)
    ordered_at: datetime | None = Field(None, description="ISO 8601 with a time zone; default: now")

    @model_validator(mode="after")
    def _who(self) -> ConversionIn:
        if self.customer_id is None and not self.customer_external_id:
            raise ValueError("give customer_id or customer_external_id")
        if self.ordered_at is not None and self.ordered_at.tzinfo is None:
            raise ValueError("ordered_at needs a time zone, e.g. 2026-11-22T10:00:00+01:00")
        return self


def _secret(value) -> str | None:
    """A SecretStr, or a plain str (``Settings.model_copy`` does not re-validate)."""
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _public_url(settings: Settings, request: Request) -> str:
    url = settings.public_base_url.rstrip("/") + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    busy_timeout_ms: int = 2000,
    attempts: int = 3,
) -> FastAPI:
    """The tracking app for ``settings`` (default: the process settings).

    A write waits at most about ``attempts`` x ``busy_timeout_ms`` for a locked database, then 503.
    """
    settings = settings or get_settings()
    own_engine = engine is None
    engine = engine or tracking_engine(settings.database_url, busy_timeout_ms)
    store = Store(engine, attempts=attempts)
    verifier = sendgrid_events.Verifier(settings.sendgrid_webhook_public_key)
    twilio_token = _secret(settings.twilio_auth_token)
    api_key = _secret(settings.conversions_api_key)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if own_engine:
            engine.dispose()

    app = FastAPI(title="relance tracking", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.engine = settings, engine
    app.add_middleware(BodyLimit, limit=settings.tracking_max_body_bytes)

    @app.exception_handler(Unavailable)
    async def _unavailable(_request: Request, _exc: Unavailable) -> Response:
        return JSONResponse({"detail": "database busy, retry"}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    # ---- SendGrid --------------------------------------------------------
    @app.post("/webhooks/sendgrid")
    async def sendgrid_webhook(request: Request) -> Response:
        body = await request.body()
        try:
            verifier.check(
                body,
                request.headers.get(sendgrid_events.SIGNATURE_HEADER),
                request.headers.get(sendgrid_events.TIMESTAMP_HEADER),
            )
        except sendgrid_events.BadSignature as exc:
            log.warning("sendgrid webhook refused: %s", exc)
            return JSONResponse({"detail": f"refused: {exc}"}, status_code=403)
        try:
            batch = sendgrid_events.parse_batch(body)
        except ValueError as exc:
            return JSONResponse({"detail": f"bad payload: {exc}"}, status_code=400)
        result = await store(lambda conn: store_events(conn, batch))
        return JSONResponse(
            {"received": result.received, "stored": result.inserted, "duplicates": result.duplicates}
        )

    # ---- Twilio ----------------------------------------------------------
    async def _twilio_params(request: Request) -> dict | None:
        params = {k: str(v) for k, v in (await request.form()).items()}
        ok = twilio_events.is_valid(
            twilio_token,
            _public_url(settings, request),
            params,
            request.headers.get(twilio_events.SIGNATURE_HEADER),
            request.headers.get(twilio_events.SETTINGS_HEADER),
        )
        if not ok:
            log.warning("twilio webhook refused: bad signature on %s", request.url.path)
        return params if ok else None

    @app.post("/webhooks/twilio/status")
    async def twilio_status(request: Request) -> Response:
        params = await _twilio_params(request)
        if params is None:
            return PlainTextResponse("invalid signature", status_code=403)
        try:  # the query is part of the signed URL, so a ledger_id there is trustworthy
            ledger_id = (
                int(request.query_params["ledger_id"]) if "ledger_id" in request.query_params else None
            )
        except ValueError:
            ledger_id = None
        ev = twilio_events.status_event(params, ledger_id)
        await store(lambda conn: store_events(conn, [ev]))
        return Response(status_code=204)

    @app.post("/webhooks/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        params = await _twilio_params(request)
        if params is None:
            return PlainTextResponse("invalid signature", status_code=403)
        _result, answer = await store(
            lambda conn: twilio_events.handle_inbound(
                conn, params, settings.sender_name, settings.default_locale
            )
        )
        return Response(answer, media_type="application/xml")

    # ---- our links -------------------------------------------------------
    def _read(kind: str, token: str):
        try:
            return read_token(kind, token)
        except BadToken:
            return None

    async def _click(ledger_id: int, url: str, request: Request) -> Response:
        if urlsplit(url).scheme not in ("http", "https"):
            return PlainTextResponse("unsupported link target", status_code=400)
        ua = request.headers.get("user-agent")

        def _record(conn: Connection):
            info = links.ledger_info(conn, ledger_id)
            return links.record_click(conn, info, url, ua) if info else None

        await store(_record)
        # Redirect even if the ledger row is gone: the target is ours (signed), the reader wants it.
        return RedirectResponse(url, status_code=302, headers=links.NO_CACHE)

    @app.get("/c/{token}")
    async def click(token: str, request: Request) -> Response:
        data = _read("click", token)
        if data is None or not data.url:
            return PlainTextResponse("unknown link", status_code=404)
        return await _click(data.ledger_id, data.url, request)

    link_urls: dict[int, str] = {}  # link rows never change: cache their URLs for this app

    @app.get("/s/{code}")
    async def short_click(code: str, request: Request) -> Response:
        """Short SMS links: the signed code names the ledger row and a ``link`` row (the URL)."""
        try:
            ledger_id, link_id = read_short_code(code)
        except BadToken:
            return PlainTextResponse("unknown link", status_code=404)
        url = link_urls.get(link_id)
        if url is None:

            def _lookup() -> str | None:
                with engine.connect() as conn:  # a read of an immutable row: no write transaction
                    return links.link_url(conn, link_id)

            url = await run_in_threadpool(_lookup)
            if url is None:
                return PlainTextResponse("unknown link", status_code=404)
            link_urls[link_id] = url
        return await _click(ledger_id, url, request)

    @app.get("/o/{token}.gif")
    async def open_pixel(token: str, request: Request) -> Response:
        data = _read("open", token)
        if data is None:
            return PlainTextResponse("unknown pixel", status_code=404)
        ua = request.headers.get("user-agent")

        def _record(conn: Connection):
            info = links.ledger_info(conn, data.ledger_id)
            return links.record_open(conn, info, ua) if info else None

        await store(_record)
        return Response(links.PIXEL_GIF, media_type="image/gif", headers=links.NO_CACHE)

    async def _unsub_info(token: str):
        data = _read("unsubscribe", token)
        if data is None:
            return None
        return await store(lambda conn: links.ledger_info(conn, data.ledger_id))

    @app.get("/u/{token}")
    async def unsubscribe_page(token: str, request: Request) -> Response:
        info = await _unsub_info(token)
        if info is None:
            return PlainTextResponse("unknown link", status_code=404)
        lang = links.page_language(info.locale, settings.default_locale)
        html = links.unsubscribe_page(lang, request.url.path, settings.sender_name)
        return HTMLResponse(html, headers=links.NO_CACHE)

    @app.post("/u/{token}")
    async def unsubscribe(token: str, request: Request) -> Response:
        info = await _unsub_info(token)
        if info is None:
            return PlainTextResponse("unknown link", status_code=404)
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        if not one_click and form.get("confirm") is None:
            return PlainTextResponse(
                "POST List-Unsubscribe=One-Click or use the page's button", status_code=400
            )
        ua = request.headers.get("user-agent")
        how = "one_click" if one_click else "page"
        await store(lambda conn: links.record_unsubscribe(conn, info, how, ua))
        if one_click:  # RFC 8058: a plain 200, no page, no redirect
            return PlainTextResponse("unsubscribed")
        lang = links.page_language(info.locale, settings.default_locale)
        return HTMLResponse(links.unsubscribe_page(lang, request.url.path, settings.sender_name, done=True))

    # ---- conversions API -------------------------------------------------
    def _key_ok(request: Request) -> bool:
        given = request.headers.get("X-API-Key") or ""
        return api_key is not None and hmac.compare_digest(given.encode(), api_key.encode())

    @app.post("/events/conversions")
    async def conversions(payload: ConversionIn, request: Request) -> Response:
        if not _key_ok(request):
            return JSONResponse({"detail": "missing or wrong X-API-Key"}, status_code=401)

        def _attribute(conn: Connection):
            customers = Customer.__table__
            where = (
                customers.c.id == payload.customer_id
                if payload.customer_id is not None
                else customers.c.external_id == payload.customer_external_id
            )
            found = conn.execute(select(customers.c.id, customers.c.external_id).where(where)).first()
            if found is None:
                return None
            customer_id, external_id = found
            purchase = Purchase(
                payload.order_id,
                customer_id,
                (payload.ordered_at or datetime.now(UTC)).astimezone(UTC),
                payload.amount_cents,
                payload.currency.upper(),
            )
            placed = customer_events.order_placed(  # issue 18: the built-in event, same transaction
                purchase.order_id, customer_id, external_id, purchase.ordered_at, purchase.amount_cents,
                purchase.currency,
            )  # fmt: skip
            customer_events.relance_events(conn, [placed])
            return attribute_purchases(conn, [purchase])

        result = await store(_attribute)
        if result is None:
            return JSONResponse({"detail": "unknown customer"}, status_code=404)
        return JSONResponse(
            {
                "attributed_ledger_id": (result.attributed_ledger_ids or [None])[0],
                "control_ledger_ids": result.control_ledger_ids,
                "stored": result.attributed + result.control + result.window,
            }
        )

    # ---- customer events (issue 18: audiences.customer_events) ------------
    @app.post("/events")
    async def events_in(request: Request) -> Response:
        """Up to 1,000 events; 200 with a verdict per event (a bad event never refuses the others)."""
        if not _key_ok(request):
            return JSONResponse({"detail": "missing or wrong X-API-Key"}, status_code=401)
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse({"detail": f"the body is not JSON: {exc}"}, status_code=400)
        events = payload.get("events") if isinstance(payload, dict) else payload
        if not isinstance(events, list):
            return JSONResponse({"detail": 'send {"events": [ ... ]} (or a JSON array of events)'}, 400)
        if len(events) > customer_events.MAX_BATCH:
            detail = f"{len(events)} events: send at most {customer_events.MAX_BATCH} per request"
            return JSONResponse({"detail": detail}, status_code=400)
        try:
            types = await run_in_threadpool(event_types.current, settings.events_file)
        except SpecError as exc:  # the operator's file is broken: 503, the sender retries later
            log.error("events file has errors: %s", exc)
            return JSONResponse({"detail": "event types unavailable, retry"}, 503, {"Retry-After": "30"})
        checked = await run_in_threadpool(customer_events.check_batch, events, types)  # outside the lock
        verdicts = await store(lambda conn: customer_events.store_checked(conn, checked))
        return JSONResponse(customer_events.summary(verdicts))

    return app
