"""The console entry point. Each module below owns the commands of one area."""

from relance.cli import (  # noqa: F401  (importing registers the commands)
    campaigns,
    data,
    db,
    demo,
    learning,
    messages,
    reports,
    tracking,
)
from relance.cli.app import app


def main() -> None:
    app()
