"""prefect.yaml is generated from the campaigns' schedules and checked against them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.deploy import (
    ENTRYPOINT,
    build_prefect_yaml,
    check_prefect_yaml,
    runner_deployments,
    write_prefect_yaml,
)

REPO = Path(__file__).resolve().parent.parent


def _campaigns(tmp_path: Path) -> Path:
    root = tmp_path / "campaigns"
    root.mkdir()
    (root / "winback.yaml").write_text(
        "name: winback\nmessage: winback/offer\nschedule:\n  cron: '0 10 * * 2'\n  timezone: Europe/Paris\n"
    )
    (root / "launch.yaml").write_text(
        "name: launch\nmessage: launch/news\nschedule:\n  at: 2026-12-01T09:30:00+01:00\n"
    )
    (root / "adhoc.yaml").write_text("name: adhoc\nmessage: adhoc/msg\n")  # no schedule: no deployment
    return root


def test_one_deployment_per_scheduled_campaign(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _campaigns(tmp_path)
    out = tmp_path / "prefect.yaml"
    assert write_prefect_yaml(out, root) == [
        "launch",
        "winback",
        "train-models",
        "refresh-reports",
        "advance-journeys",
    ]
    content = yaml.safe_load(out.read_text())
    by_name = {d["name"]: d for d in content["deployments"]}
    assert by_name["winback"]["entrypoint"] == ENTRYPOINT == "flows/run_campaign.py:run_campaign"
    assert by_name["winback"]["parameters"] == {"campaign_path": "campaigns/winback.yaml"}
    assert by_name["winback"]["schedules"] == [
        {"cron": "0 10 * * 2", "timezone": "Europe/Paris", "active": True}
    ]
    assert by_name["winback"]["work_pool"]["name"] == "relance"
    once = by_name["launch"]["schedules"][0]
    assert once["rrule"].startswith("DTSTART:20261201T093000") and "COUNT=1" in once["rrule"]
    reports = by_name["refresh-reports"]
    assert reports["entrypoint"] == "flows/report.py:refresh_reports"
    assert reports["schedules"] == [{"cron": "0 7 * * *", "timezone": "Europe/Paris", "active": True}]
    train = by_name["train-models"]
    assert train["entrypoint"] == "flows/train_models.py:train_models"
    assert train["schedules"] == [{"cron": "0 5 * * 1", "timezone": "Europe/Paris", "active": True}]
    journeys = by_name["advance-journeys"]  # every minute by default (RELANCE_JOURNEYS_CRON)
    assert journeys["entrypoint"] == "flows/advance_journeys.py:advance_journeys"
    assert journeys["schedules"] == [{"cron": "* * * * *", "timezone": "Europe/Paris", "active": True}]
    assert check_prefect_yaml(out, root) == []


def test_check_reports_drift_and_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _campaigns(tmp_path)
    out = tmp_path / "prefect.yaml"
    assert "missing" in check_prefect_yaml(out, root)[0]
    write_prefect_yaml(out, root)
    (root / "winback.yaml").write_text(
        "name: winback\nmessage: winback/offer\nschedule:\n  cron: '0 9 * * 3'\n  timezone: Europe/Paris\n"
    )
    (root / "promo.yaml").write_text("name: promo\nmessage: p/m\nschedule:\n  cron: '0 8 1 * *'\n")
    problems = check_prefect_yaml(out, root)
    assert any("'promo'" in p and "no deployment" in p for p in problems)
    assert any("'winback'" in p and "schedules" in p for p in problems)
    assert all("relance deploy" in p for p in problems)


def test_serve_builds_the_same_deployments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _campaigns(tmp_path)
    deployments = {d.name: d for d in runner_deployments(root)}
    assert set(deployments) == {"launch", "winback", "train-models", "refresh-reports", "advance-journeys"}
    winback = deployments["winback"]
    assert winback.parameters == {"campaign_path": "campaigns/winback.yaml"}
    schedule = winback.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("0 10 * * 2", "Europe/Paris")


def test_repository_prefect_yaml_is_in_sync_with_campaigns(monkeypatch):
    monkeypatch.chdir(REPO)
    assert check_prefect_yaml(REPO / "prefect.yaml", REPO / "campaigns") == []
    assert build_prefect_yaml(REPO / "campaigns")["deployments"] is not None


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_apply_registers_the_deployments_on_the_prefect_api(prefect_harness, tmp_path, monkeypatch):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import DeploymentSort

    from flows.deploy import apply_deployments

    monkeypatch.chdir(tmp_path)
    root = _campaigns(tmp_path)
    assert apply_deployments("relance-test", root) == [
        "launch",
        "winback",
        "train-models",
        "refresh-reports",
        "advance-journeys",
    ]

    async def read():
        async with get_client() as client:
            found = await client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["launch", "winback"])),
                limit=10,
                sort=DeploymentSort.NAME_ASC,
            )
            pool = await client.read_work_pool("relance-test")
            return found, pool

    found, pool = asyncio.run(read())
    winback = next(d for d in found if d.name == "winback")
    assert pool.type == "process" and winback.work_pool_name == "relance-test"
    assert winback.parameters == {"campaign_path": "campaigns/winback.yaml"}
    assert winback.schedules[0].schedule.cron == "0 10 * * 2"


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_prefect_deploy_all_registers_the_repository_prefect_yaml(prefect_harness):
    """The operator's path for a real server: `prefect deploy --all` reads prefect.yaml as generated."""
    import asyncio
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    expected = [d["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]]
    pool = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]["work_pool"]["name"]

    async def create_pool():
        async with get_client() as client:
            try:
                await client.read_work_pool(pool)
            except Exception:
                await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    asyncio.run(create_pool())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PWD": str(REPO)}  # as after `cd REPO`
    prefect = Path(sys.executable).parent / "prefect"
    done = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--all"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    async def read():
        async with get_client() as client:
            return await client.read_deployments(limit=50)

    registered = {d.name: d for d in asyncio.run(read())}
    assert set(expected) <= set(registered)
    for name in expected:
        assert registered[name].work_pool_name == pool
        # `{{ $PWD }}` is resolved when deploying: flow runs move to the checkout prefect deploy ran in
        assert registered[name].pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]
