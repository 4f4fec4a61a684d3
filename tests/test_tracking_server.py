"""The real thing: uvicorn on a free loopback port under load, a restart mid-load, a locked database."""

from __future__ import annotations

import json
import sqlite3

import httpx

from bench.ingest import Server, free_port, run
from core.tokens import make_token
from tests.test_tracking_support import (
    events_of,
    make_keys,
    post_sendgrid,
    seed,
    sg_event,
    status_of,
)


def test_load_on_loopback_with_a_restart_loses_nothing(sqlite_engine, settings):
    result = run(settings.database_url, batches=40, clients=3, restart_after=0.3, ledger_rows=200)
    assert result["events"] == 4000
    assert result["stored"] == 4000 and result["lost"] == 0


def test_links_through_a_real_server(sqlite_engine, settings, monkeypatch):
    world = seed(sqlite_engine, n=1)
    lid = world.ledger_ids[0]
    port = free_port()
    import os

    server = Server(
        port,
        {**os.environ, "RELANCE_DATABASE_URL": settings.database_url, "RELANCE_SECRET_KEY": "test-secret"},
    )
    server.start()
    try:
        r = httpx.get(
            f"{server.url}/c/{make_token('click', lid, 'https://shop.example/a')}",
            headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/128.0"},
        )
        assert r.status_code == 302 and r.headers["location"] == "https://shop.example/a"
        one_click = httpx.post(
            f"{server.url}/u/{make_token('unsubscribe', lid)}", data={"List-Unsubscribe": "One-Click"}
        )
        assert one_click.status_code == 200
    finally:
        server.stop()
    assert [e.type for e in events_of(sqlite_engine, ledger_id=lid)] == ["clicked", "unsubscribed"]


def test_a_locked_database_answers_503_then_stores_on_retry(sqlite_engine, settings):
    world = seed(sqlite_engine, n=1)
    keys = make_keys()
    from fastapi.testclient import TestClient

    from tracking.app import create_app

    app = create_app(
        settings.model_copy(update={"sendgrid_webhook_public_key": keys.public_b64}),
        busy_timeout_ms=100,
        attempts=2,
    )
    blocker = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    batch = [sg_event("delivered", world.ledger_ids[0])]
    with TestClient(app) as client:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        busy = post_sendgrid(client, keys, batch)
        assert busy.status_code == 503 and busy.headers["retry-after"]
        assert events_of(sqlite_engine) == []
        blocker.execute("ROLLBACK")
        assert post_sendgrid(client, keys, batch).json()["stored"] == 1  # SendGrid's retry
    blocker.close()
    assert status_of(sqlite_engine, world.ledger_ids[0]) == "delivered"
    assert json.loads(events_of(sqlite_engine)[0].raw)["event"] == "delivered"
