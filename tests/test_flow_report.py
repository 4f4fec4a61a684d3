"""The report flow through the real Prefect engine publishes the run's artifacts."""

from __future__ import annotations

import pytest

from tests.test_report import make_ledger


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_report_flow_publishes_artifacts(prefect_harness, sqlite_engine, settings):
    from prefect.client.orchestration import get_client

    from flows.report import report_campaign

    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=120, key="winback:7")
    result = report_campaign("winback")
    assert result["run_key"] == "winback:7" and result["rows"] > 0

    async def artifacts():
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            keys = ArtifactFilterKey(any_=["winback-figures", "winback-summary"])
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=keys), limit=10)
            return {a.key: a.model_dump() for a in found}

    import asyncio

    found = asyncio.run(artifacts())
    assert set(found) == {"winback-figures", "winback-summary"}
    assert (
        "Incrementality" in found["winback-summary"]["data"] or "uplift" in found["winback-summary"]["data"]
    )


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_refresh_reports_rewrites_every_report_and_ranks_the_portfolio(
    prefect_harness, sqlite_engine, settings
):
    from flows.report import refresh_reports
    from reporting.portfolio import portfolio

    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=120, key="winback:7")
        make_ledger(conn, n=80, key="welcome:1", campaign="welcome")
    result = refresh_reports()
    assert set(result["reports"]) == {"winback", "welcome"}
    for name, html in result["reports"].items():
        text = (settings.reports_dir / f"{name}.html").read_text()
        assert html.endswith(f"{name}.html") and name in text
        assert (settings.reports_dir / f"{name}.csv").stat().st_size > 0
    with sqlite_engine.connect() as conn:
        assert result["ranking"] == [line.campaign for line in portfolio(conn)]
