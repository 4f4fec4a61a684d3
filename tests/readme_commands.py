"""Reading the shell commands that a README shows, so that tests run exactly those.

A README block is the user's contract: the tests read it from the file rather
than repeating it, so a README changed without the code (or the reverse) fails.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```")
REPO = Path(__file__).resolve().parent.parent
RELANCE = str(Path(sys.executable).parent / "relance")


def block_after(readme: Path, heading: str, index: int = 0) -> list[str]:
    """The lines of the ``index``-th fenced block after the line starting with ``heading``."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise AssertionError(f"{readme}: no line starts with {heading!r}")
    blocks: list[list[str]] = []
    inside: list[str] | None = None
    for line in lines[start + 1 :]:
        if FENCE.match(line):
            if inside is None:
                inside = []
            else:
                blocks.append(inside)
                inside = None
                if len(blocks) > index:
                    return blocks[index]
        elif inside is not None:
            inside.append(line)
    raise AssertionError(f"{readme}: fewer than {index + 1} fenced block(s) after {heading!r}")


def commands(block: list[str]) -> list[list[str]]:
    """Each command of a block as argv, comments dropped and ``a && b`` split in order."""
    out: list[list[str]] = []
    for line in block:
        text = line.split("  #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        for part in text.split("&&"):
            out.append(shlex.split(part))
    return out


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell: none of the test run's RELANCE_/PREFECT_ settings or COLUMNS.

    PREFECT_HOME points into the test's folder so that Prefect's local database is a new user's.
    """
    drop = ("RELANCE_", "PREFECT_", "COLUMNS", "LINES", "PYTEST_", "FORCE_COLOR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PREFECT_HOME"] = str(home / ".prefect")
    return env


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.root / "relance.db")

    def scalar(self, sql: str, *args: object) -> object:
        with self.db() as conn:
            return conn.execute(sql, args).fetchone()[0]


def workspace(root: Path) -> Workspace:
    """What a user has in a clone: campaigns, templates, segments, event types, prefect.yaml; no database."""
    for folder in ("campaigns", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "audiences").mkdir()
    for name in ("segments.yaml", "events.yaml"):
        shutil.copy(REPO / "audiences" / name, root / "audiences" / name)
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    return Workspace(root, user_env(root))


def run(ws: Workspace, argv: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "relance", f"README command {argv} does not start with relance"
    return subprocess.run(
        [RELANCE, *argv[1:]], cwd=ws.root, env=ws.env, capture_output=True, text=True, timeout=timeout
    )


def ok(done: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """The command's stdout after checking its status; no traceback and no ERROR line anywhere."""
    both = done.stdout + done.stderr
    assert done.returncode == code, f"{done.args}: exit {done.returncode}\n{both[-4000:]}"
    assert "Traceback" not in both, both[-4000:]
    cut = f"{done.args}: a cell or title was cut at 80 columns:\n{done.stdout[-4000:]}"
    assert "…" not in done.stdout, cut
    assert not re.search(r"\|\s*ERROR\s*\|", both), f"{done.args} printed an ERROR line:\n{both[-4000:]}"
    return done.stdout


def rejected_lines(problems: Path) -> int:
    if not problems.exists():
        return 0
    with problems.open(encoding="utf-8") as f:
        return sum(1 for row in csv.DictReader(f) if row["outcome"] == "rejected")
