"""Request bodies past the bound are refused with 413 before they are read whole (issue 16, 8).

Through a real uvicorn server on loopback and raw sockets, so that the test sees what a client
sees: a 413 while the body is still (declared or) being sent, not after the server read it all.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from bench.ingest import Server, free_port
from tests.test_tracking_support import (
    events_of,
    make_keys,
    seed,
    sendgrid_headers,
    sg_event,
)

LIMIT = 1_048_576  # the default of RELANCE_TRACKING_MAX_BODY_BYTES
POSTS = ["/webhooks/sendgrid", "/webhooks/twilio/status", "/webhooks/twilio/inbound", "/events/conversions"]


@pytest.fixture(scope="module")
def keys():
    return make_keys()


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Iterator[tuple[str, Engine]]:
    from core.db import get_engine, migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('body-limit') / 'relance.db'}"
    migrate(url)
    yield url, get_engine(url)


@pytest.fixture(scope="module")
def server(database, keys):
    """One tracking server for the module (its start is most of these tests' time)."""
    env = {
        **os.environ,
        "RELANCE_DATABASE_URL": database[0],
        "RELANCE_SECRET_KEY": "test-secret",
        "RELANCE_SENDGRID_WEBHOOK_PUBLIC_KEY": keys.public_b64,
    }
    env.pop("RELANCE_TRACKING_MAX_BODY_BYTES", None)
    srv = Server(free_port(), env)
    srv.start()
    yield srv
    srv.stop()


def _answer(sock: socket.socket) -> str:
    """The status line and headers the server sent (it must answer without the rest of the body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def _request_head(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", POSTS)
def test_a_declared_10_mb_body_is_refused_before_it_is_sent(server, path):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = {"Content-Type": "application/json", "Content-Length": str(10 * 1024 * 1024)}
        sock.sendall(_request_head(server.port, path, head) + b"[" + b" " * 1000)  # and no more
        answer = _answer(sock)
    assert answer.startswith("HTTP/1.1 413"), answer


def test_a_chunked_body_is_stopped_at_the_bound(server):
    """A chunked body never finished: the server answers once it has counted past the bound."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        sock.sendall(_request_head(server.port, "/webhooks/sendgrid", head))
        chunk = b" " * 65536
        for _ in range(LIMIT // len(chunk) + 1):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = _answer(sock)  # the last chunk (0) is never sent
    assert answer.startswith("HTTP/1.1 413"), answer


def test_batches_under_the_bound_are_still_accepted(server, database, keys):
    engine = database[1]
    lid = seed(engine, n=1).ledger_ids[0]
    batch = [sg_event("delivered", lid, pad="x" * 1000) for _ in range(700)]  # ~0.8 MB: a full batch
    body = json.dumps(batch).encode()
    assert 700_000 < len(body) < LIMIT
    r = httpx.post(
        f"{server.url}/webhooks/sendgrid", content=body, headers=sendgrid_headers(keys, body), timeout=60
    )
    assert r.status_code == 200 and r.json()["stored"] == 700, r.text

    small = json.dumps([sg_event("opened", lid)]).encode()
    pieces = iter([small[:20], small[20:]])  # the same endpoint, chunked: counted as it streams
    r = httpx.post(
        f"{server.url}/webhooks/sendgrid", content=pieces, headers=sendgrid_headers(keys, small), timeout=30
    )
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert len(events_of(engine, ledger_id=lid)) == 701
