"""Headless Chromium (Debian's package) for tests that look at what a person would see.

``Browser`` screenshots a local HTML file at a given width, dumps the DOM after
rendering, and records every network request the page tried: Chromium is
started with a proxy on loopback that answers 403 to everything and logs it,
so a page that fetches a font, a script or an image from anywhere is caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--proxy-bypass-list=<-loopback>",
]

# Chromium phones home even with the flags above; these requests are the browser's, never the page's.
BROWSER_OWN_HOSTS = (
    "clients2.google.com",
    "update.googleapis.com",
    "accounts.google.com",
    "optimizationguide-pa.googleapis.com",
    "safebrowsing.googleapis.com",
)


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed in CI (.ci/run installs Debian's chromium package)")
    pytest.skip("chromium not installed: `apt-get install chromium` (CI installs it)")


class _Recorder(BaseHTTPRequestHandler):
    requests: list[str]

    def _refuse(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_CONNECT = _refuse  # noqa: N815

    def log_message(self, *args) -> None:  # keep test output clean
        pass


class Browser:
    def __init__(self) -> None:
        self.binary = chromium_or_skip()
        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.proxy.requests = []  # type: ignore[attr-defined]
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()

    @property
    def network_requests(self) -> list[str]:
        """Requests the page made: Chromium's own housekeeping (updates, clock, sign-in) left out."""
        return [r for r in self.proxy.requests if not any(h in r for h in BROWSER_OWN_HOSTS)]  # type: ignore

    def _run(self, html: Path, *args: str, width: int = 1200, height: int = 1600) -> str:
        with tempfile.TemporaryDirectory() as profile:
            cmd = [
                self.binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--proxy-server=http://127.0.0.1:{self.proxy.server_port}",
                f"--window-size={width},{height}",
                *args,
                html.resolve().as_uri(),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        if done.returncode != 0:
            raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def screenshot(self, html: Path, png: Path, width: int, height: int = 1600) -> Path:
        self._run(html, f"--screenshot={png}", width=width, height=height)
        assert png.exists() and png.stat().st_size > 1000, "chromium wrote no screenshot"
        return png

    def dom(self, html: Path) -> str:
        """The DOM after layout (what the page became, not only its source)."""
        return self._run(html, "--dump-dom", "--virtual-time-budget=2000")

    def close(self) -> None:
        self.proxy.shutdown()
