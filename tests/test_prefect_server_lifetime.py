"""The Prefect API server a `relance run` starts lives no longer than the command (issue 16, 7 and 9).

Both tests run the command as a newcomer types it, in a fresh shell environment (no PREFECT_*
variables: the test session turns Prefect's telemetry off, a user's shell does not).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.test_cli_run_errors import RELANCE, newcomer_dir, newcomer_env, run_relance

SERVER = "prefect.server.api.server"


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (Linux)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            out += [int(c) for c in children.read_text().split()]
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper holds no memory and serves nothing: dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _server_of(pid: int) -> tuple[int, int] | None:
    """(pid, port) of the Prefect API server among the descendants of ``pid``, if started."""
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            args = _cmdline(child)
            if any(SERVER in a for a in args):
                port = args[args.index("--port") + 1] if "--port" in args else args[-1]
                return child, int(port)
            todo.append(child)
    return None


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_a_run_killed_with_sigkill_leaves_no_prefect_server(tmp_path):
    work = newcomer_dir(tmp_path, customers=30)
    run = subprocess.Popen(
        [RELANCE, "run", "campaigns/relaunch.yaml"],
        cwd=work,
        env=newcomer_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and run.poll() is None:
            server = server or _server_of(run.pid)
            if server:
                try:  # the server is up and serving this run: kill the command now
                    if httpx.get(f"http://127.0.0.1:{server[1]}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        assert server is not None and run.poll() is None, "the run ended before its Prefect server answered"
        run.kill()  # kill -9: no atexit, no finally
        run.wait()
        gone_by = time.monotonic() + 5
        while _alive(server[0]) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not _alive(server[0]), f"Prefect server {server[0]} outlived its killed `relance run`"
    finally:
        if run.poll() is None:
            run.kill()
        if server and _alive(server[0]):
            os.kill(server[0], signal.SIGKILL)  # never leave the orphan on the machine


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_a_run_prints_no_prefect_error_or_telemetry_noise(tmp_path):
    work = newcomer_dir(tmp_path, customers=12)
    done = run_relance(work, "run", "campaigns/relaunch.yaml", timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "ERROR" not in out and "telemetry" not in out.lower(), out
    assert "Error logging to API" not in out and "Traceback" not in out, out
    assert "total" in done.stdout and "12" in done.stdout and "outbox:" in done.stdout, out
