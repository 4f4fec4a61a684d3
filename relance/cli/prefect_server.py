"""A local Prefect API server whose life is tied to the command that started it.

Why not Prefect's own ephemeral server: Prefect 3.8 starts it (``SubprocessASGIServer``) as a plain
``python -m uvicorn`` child and stops it from ``atexit``; a command killed with ``kill -9`` (or by
the OOM killer) never runs ``atexit``, so its ~200 MB server lived on, one per killed run. Here the
command starts the same server (Prefect's ``create_app`` factory under uvicorn, in ephemeral mode,
on loopback) through a small launcher that asks Linux to SIGKILL it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and points ``PREFECT_API_URL`` at it. SIGKILL because a server left
without its only client has nothing to finish, and a graceful stop could hang; its state is
Prefect's SQLite database, which survives a kill. Prefect reaches its server only through that URL,
so flows, tasks, logs, artifacts and rate limits behave as with the ephemeral server.

When an API is configured (``PREFECT_API_URL`` in the environment or the Prefect profile: an
operator's server), nothing is started. Off Linux there is no parent-death signal: Prefect's own
ephemeral server is used as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Run by the server's own interpreter: die with the parent (also when it died before prctl), then serve.
_LAUNCHER = """\
import ctypes, os, signal, sys
parent, port = int(sys.argv[1]), int(sys.argv[2])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
except (AttributeError, OSError):  # a libc without prctl: serve anyway (stopped at exit, as Prefect's)
    pass
if os.getppid() != parent:
    sys.exit(0)
import uvicorn
uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
            log_level="error", lifespan="on")
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TiedPrefectServer:
    """The server child process: ``start`` returns at once, ``wait_ready`` until it answers."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process = self._spawn()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",  # as Prefect's ephemeral server: API only, fewer services
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        # Its own process group: a Ctrl-C in the terminal interrupts the command, which still reports
        # the interrupted flow run to this server, then stops it (the death signal covers a kill).
        return subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), str(self.port)], env=env, process_group=0
        )

    def wait_ready(self, timeout: float) -> None:
        """Wait for ``/health``; a lost port race (another process took it) tries a new port."""
        import httpx

        deadline, attempts = time.monotonic() + timeout, 0
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code is not None:
                    attempts += 1
                    if attempts > 3:
                        raise RuntimeError(f"the local Prefect API server exited with status {code}")
                    self.port = _free_port()
                    self.process = self._spawn()
                with contextlib.suppress(httpx.TransportError):  # not listening yet
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the local Prefect API server did not answer within {timeout:.0f} s; "
            "set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher on a busy machine"
        )

    def stop(self) -> None:
        """Terminate, then kill after 5 s, as Prefect stops its ephemeral server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def configured_api_url() -> str | None:
    """The Prefect API this command must use (environment or profile), or None for a local one."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@contextmanager
def prefect_api() -> Iterator[str | None]:
    """Run the block against a tied local server (yield its URL), unless an API is configured.

    Enter it from the thread that lives as long as the command (the main thread): Linux sends the
    parent-death signal when the thread that started the child ends.
    """
    if configured_api_url() or not sys.platform.startswith("linux"):
        yield None
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    server = TiedPrefectServer()
    try:
        server.wait_ready(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
        # No UI is served: no "View at <dead link>" line per flow run (an empty UI URL means none).
        urls = {"PREFECT_API_URL": server.api_url, "PREFECT_UI_URL": ""}
        previous = {name: os.environ.get(name) for name in urls}
        os.environ.update(urls)  # for the processes this command starts (`relance serve`'s runs)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
                try:
                    yield server.api_url
                finally:
                    _drain()
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    finally:
        server.stop()


def _drain() -> None:
    """Send the logs and events still queued before the server stops (else: "Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)
