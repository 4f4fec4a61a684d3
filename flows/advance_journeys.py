"""The `advance-journeys` Prefect flow: one tick of every journey, then its messages sent.

Thin on purpose (as run_campaign): the set-based moves are journeys.engine's,
exactly-once sending is delivery's. One task advances every journey (a
statement per step kind, never a task per customer); one task per journey run
with messages left sends it, so several runs go out side by side and a crashed
or paused run is taken up by the next tick. Deployed every minute by default
(``RELANCE_JOURNEYS_CRON``); with a Prefect server and a work pool on
PostgreSQL, other workers share a run's batches as they do a campaign's
(``relance work <run key>``, the `send-run` flow).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from core.db import ready_engine
from core.settings import get_settings
from delivery import ledger
from flows.retries import worth_retrying as _worth_retrying
from journeys import tick as ticks
from journeys.definition import JourneyFile, load_journeys


@task(name="advance-journeys", retries=2, retry_delay_seconds=2, retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)  # fmt: skip
def advance_task(journeys: list[JourneyFile], now: datetime) -> dict[str, Any]:
    """Move every due entry of every journey (one transaction per journey)."""
    result = ticks.TickResult(now)
    ticks.advance_all(ready_engine(), journeys, now, result)
    moves = {name: a.total for name, a in result.advanced.items()}
    get_run_logger().info("advanced %s in %.2f s", moves or "nothing (nothing due)", result.advance_seconds)
    return moves


@task(name="send-journey-runs", retries=2, retry_delay_seconds=1, retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)  # fmt: skip
def send_task(journeys: list[JourneyFile], now: datetime) -> dict[str, int]:
    """Send every journey run with messages left (claims let other workers share the batches)."""
    result = ticks.TickResult(now)
    ticks.send_pending(ready_engine(), journeys, result)
    if result.paused:
        get_run_logger().warning("paused (circuit breaker or alert): %s", ", ".join(result.paused))
    return dict(result.sent)


@flow(name="advance-journeys", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def advance_journeys(now: str | None = None, campaigns_dir: str | None = None) -> dict[str, Any]:
    """Advance every journey in the campaigns folder at ``now`` (default: the scheduled time, or now)."""
    moment = ledger.run_datetime(now or _scheduled_now())
    journeys = load_journeys(campaigns_dir or get_settings().campaigns_dir)
    if not journeys:
        return {"now": moment.isoformat(), "journeys": 0, "moves": {}, "sent": {}}
    moves = advance_task(quote(journeys), moment)
    sent = send_task(quote(journeys), moment)
    if now is None and any(j.campaign.entry is not None for j in journeys):
        more_moves, more_sent = _tick_until_the_next_run(journeys)
        moves = {k: moves.get(k, 0) + more_moves.get(k, 0) for k in {*moves, *more_moves}}
        sent = {k: sent.get(k, 0) + more_sent.get(k, 0) for k in {*sent, *more_sent}}
    return {"now": moment.isoformat(), "journeys": len(journeys), "moves": moves, "sent": sent}


def _tick_until_the_next_run(journeys: list[JourneyFile]) -> tuple[dict[str, int], dict[str, int]]:
    """Triggered journeys: tick again every RELANCE_JOURNEYS_TICK_SECONDS until the next scheduled run.

    Why inside the flow run: a deployment runs at most once a minute (cron), and an event must
    become a message within a minute; ticks every 10 s keep the wait under the tick interval plus
    the tick itself, with no Prefect task per event.
    """
    import time

    settings = get_settings()
    every, period = settings.journeys_tick_seconds, settings.journeys_tick_period_seconds
    started = time.monotonic()
    moves: dict[str, int] = {}
    sent: dict[str, int] = {}
    while time.monotonic() - started + every < period:
        time.sleep(every)
        moment = ledger.run_datetime(None)
        for name, n in advance_task(quote(journeys), moment).items():
            moves[name] = moves.get(name, 0) + n
        for status, n in send_task(quote(journeys), moment).items():
            sent[status] = sent.get(status, 0) + n
    return moves, sent


def _scheduled_now() -> str | None:
    from prefect.runtime import deployment, flow_run

    if deployment.id and flow_run.scheduled_start_time:
        return flow_run.scheduled_start_time.isoformat()
    return None


@task(name="enter-journey", retries=2, retry_delay_seconds=2, retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)  # fmt: skip
def enter_task(journey: JourneyFile, now: datetime, entry_key: str | None) -> int:
    """Enter the customers a scheduled occurrence selects (idempotent per entry key)."""
    from audiences.selection import tune_connection
    from journeys.engine import enter

    with ready_engine().begin() as conn:
        tune_connection(conn)
        entered = enter(conn, journey.campaign, now, entry_key)
    get_run_logger().info("journey %s: %s customer(s) entered", journey.name, entered)
    return entered


def run_journey(path: str, now: datetime, entry_key: str | None = None) -> dict[str, Any]:
    """A scheduled journey occurrence inside a flow: enter its audience, then tick that journey now."""
    from core.spec_loader import load_campaign

    journey = JourneyFile(path, load_campaign(path))
    entered = 0 if journey.campaign.entry is not None else enter_task(quote(journey), now, entry_key)
    moves = advance_task(quote([journey]), now)
    sent = send_task(quote([journey]), now)
    return {"journey": journey.name, "now": now.isoformat(), "entered": entered, "moves": moves, "sent": sent}
