"""POST /events through a real uvicorn server on loopback (SQLite and PostgreSQL): authentication,
malformed requests, per-event answers, and a kill -9 in the middle of the load with nothing lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from bench.events_ingest import API_KEY, run
from bench.ingest import Server, free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(db_url):
    port = free_port()
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": db_url,
        "RELANCE_CONVERSIONS_API_KEY": API_KEY,
        "RELANCE_EVENTS_FILE": str(REPO / "audiences" / "events.yaml"),
        "RELANCE_SECRET_KEY": "test-secret",
    }
    srv = Server(port, env)
    srv.start()
    yield srv
    srv.stop()


def _post(server, body, key: str | None = API_KEY) -> httpx.Response:
    headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/events", content=content, headers=headers, timeout=30)


def test_events_api_answers_each_event(server):
    good = {
        "event_id": "w1", "type": "cart_abandoned", "external_id": "C1",
        "occurred_at": "2026-12-04T10:00:00Z", "properties": {"cart_value": 19.9, "items": 1},
    }  # fmt: skip
    batch = {"events": [good, dict(good, event_id="w2", type="nope"), dict(good, event_id="w3")]}

    assert _post(server, batch, key=None).status_code == 401
    assert _post(server, batch, key="wrong").status_code == 401
    assert _post(server, b"{not json", key=API_KEY).status_code == 400
    assert _post(server, {"event": []}).status_code == 400
    too_many = _post(server, [dict(good, event_id=f"m{i}") for i in range(1001)])
    assert too_many.status_code == 400 and "at most 1000" in too_many.json()["detail"]

    answer = _post(server, batch)
    assert answer.status_code == 200
    assert answer.json() == {
        "accepted": 2,
        "duplicates": 0,
        "refused": [
            {"index": 1, "event_id": "w2",
             "why": "unknown event type `nope`; declare it under `events:` in audiences/events.yaml"},
        ],
    }  # fmt: skip
    retried = _post(server, [good, dict(good, event_id="w4")])  # a plain array works too
    assert retried.json() == {"accepted": 1, "duplicates": 1, "refused": []}


def test_kill_9_during_ingestion_loses_nothing(db_url):
    """SIGKILL mid-load: clients retry unanswered batches with the same event ids; count in = count stored."""
    result = run(db_url, batches=60, clients=3, restart_after=0.3, kill=True, customers=300)
    assert result["retries"] > 0  # the kill did happen while batches were in flight
    assert result["events"] == 6000 and result["stored"] == 6000 and result["lost"] == 0
    assert result["refused"] == 0
    assert result["answered_accepted"] + result["answered_duplicates"] == 6000
