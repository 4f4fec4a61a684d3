"""The console entry point. Each module below owns the commands of one area."""

import os

from relance.cli import (  # noqa: F401  (importing registers the commands)
    campaigns,
    data,
    db,
    demo,
    journeys,
    learning,
    messages,
    reports,
    runs,
    tracking,
)
from relance.cli.app import app


def main() -> None:
    # Prefect's local (ephemeral) API server may need more than its 20 s default to start on a busy
    # small machine: `relance demo` timed out there on 2 cores running the tests. Set before Prefect
    # is imported (no command module imports it at load): it reads its settings once, at import.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Prefect's server sends usage telemetry to Prefect's servers: off unless the user turns it on.
    # Offline it printed `ERROR | ... Failed to send telemetry` on every `relance run` (issue 16).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()
