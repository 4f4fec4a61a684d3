"""`relance run` as a newcomer types it: a configuration error fails at once, like `relance validate`.

Issue 16 (6): a campaign naming an unknown segment failed inside the flow's `record-audience` task,
which Prefect retried twice, 2 s apart, before a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from core.db import get_engine, migrate, reset_engines
from tests.readme_commands import user_env
from tests.test_ledger_support import seed_customers
from tests.test_run_support import seed_features, write_campaign

REPO = Path(__file__).resolve().parent.parent
RELANCE = str(Path(sys.executable).parent / "relance")


def newcomer_dir(tmp_path: Path, customers: int = 20) -> Path:
    """A working directory as after the README's first steps: campaigns, templates, segments, a small base."""
    (tmp_path / "audiences").mkdir()
    (tmp_path / "audiences" / "segments.yaml").write_text(
        (REPO / "audiences" / "segments.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    write_campaign(tmp_path, name="relaunch", control=0)
    url = f"sqlite:///{tmp_path / 'relance.db'}"
    migrate(url)
    engine = get_engine(url)
    seed_features(engine, seed_customers(engine, customers))
    reset_engines()
    return tmp_path


def newcomer_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh shell: no RELANCE_* or PREFECT_* variables (the test session sets some)."""
    return user_env(tmp_path) | {"COLUMNS": "200"}


def run_relance(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``relance ARGS`` in ``work`` with a fresh shell's environment."""
    return subprocess.run(
        [RELANCE, *args], cwd=work, env=newcomer_env(work), capture_output=True, text=True, timeout=timeout
    )


def test_run_with_an_unknown_segment_fails_at_once_with_file_line_and_did_you_mean(tmp_path):
    work = newcomer_dir(tmp_path)
    campaign = work / "campaigns" / "relaunch.yaml"
    campaign.write_text(
        campaign.read_text(encoding="utf-8") + "audience:\n  all:\n    - segment: new_customrs\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    done = run_relance(work, "run", "campaigns/relaunch.yaml")
    elapsed = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    line = campaign.read_text(encoding="utf-8").splitlines().index("    - segment: new_customrs") + 1
    assert f"campaigns/relaunch.yaml:{line}:" in out, out
    assert "did you mean `new_customers`?" in out, out
    assert "Traceback" not in out and "Retry" not in out, out
    assert elapsed < 4, f"{elapsed:.1f} s: the configuration error was retried or waited for Prefect"


def test_run_with_a_broken_campaign_file_reports_its_line(tmp_path):
    work = newcomer_dir(tmp_path, customers=1)
    campaign = work / "campaigns" / "relaunch.yaml"
    campaign.write_text(campaign.read_text(encoding="utf-8").replace("percent: 0", "percent: lots"))
    done = run_relance(work, "run", "campaigns/relaunch.yaml")
    out = done.stdout + done.stderr
    line = campaign.read_text(encoding="utf-8").splitlines().index("  percent: lots") + 1
    assert done.returncode == 1 and f"campaigns/relaunch.yaml:{line}:" in out, out
    assert "Traceback" not in out, out
