"""`relance validate` for journeys: the graph, branch rules, `exit_when`, send channels, customers in flight.

Beside relance.cli.validation (which calls these for a campaign file with `steps:`) so that each
module stays one concern: the campaign checks there, what only journeys need here. The graph
itself is journeys.graph's (pure); this module places its findings in the file and reads the
database for the customers an edit affects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.spec import Campaign
from core.spec_loader import Located, Problem


def check_journey(located: Located[Campaign], ctx: Any) -> list[Problem]:
    """A journey's graph, `exit_when`, and what the file does to customers in flight.

    ``ctx``: relance.cli.validation.CheckContext (which calls this; its rule checks of branches
    are done there, with the campaign's).
    """
    from journeys.graph import check_graph

    campaign = located.value
    steps = list(campaign.steps or [])
    out: list[Problem] = []
    left = campaign.exit_when.left_segment if campaign.exit_when is not None else None
    if left is not None:
        problem = ctx.segments.problem_with(left)
        if problem is not None:
            out.append(located.problem(("exit_when", "left_segment"), problem))
    out.extend(event_problems(located))
    in_flight = steps_in_flight(campaign.name)
    names = {s.name for s in steps}
    for path, text, severity in check_graph(campaign, [n for n in in_flight if n in names]):
        if path[0] != "steps" and path not in located.marks:
            out.append(located.problem(("steps",), text, severity, key=True))  # e.g. a default conversion
        else:  # a `branch:` or `wait:` mapping is named at its key
            out.append(located.problem(path, text, severity, key=path[-1] in ("branch", "wait")))
    removed = {n: count for n, count in sorted(in_flight.items()) if n not in names}
    for name, count in removed.items():
        who = "1 customer is" if count == 1 else f"{count} customers are"
        text = (f"{who} on step `{name}`, which this file no longer has: they will leave the journey "
                f"(step removed: {name}) when their step falls due")  # fmt: skip
        out.append(located.problem(("steps",), text, "warning", key=True))
    if removed:
        total = sum(in_flight.values())
        counts = ", ".join(f"{n} {c}" for n, c in sorted(in_flight.items()))
        text = f"in flight now: {total} customer(s) ({counts}); the others stay on their steps by name"
        out.append(located.problem(("steps",), text, "warning", key=True))
    return out


def event_problems(located: Located[Campaign]) -> list[Problem]:
    """`entry: {event: ...}` and `exit_when: {event: ...}` against the declared event types."""
    from audiences.event_rules import event_rule_problems
    from audiences.event_types import current
    from core.spec_rules import EventCondition
    from core.yaml_positions import SpecError

    campaign = located.value
    wanted = []
    if campaign.entry is not None:
        wanted.append((("entry",), EventCondition(name=campaign.entry.event, where=campaign.entry.where)))
    if campaign.exit_when is not None and campaign.exit_when.event:
        wanted.append((("exit_when",), EventCondition(name=campaign.exit_when.event)))
    if not wanted:
        return []
    try:
        types = current()
    except SpecError as exc:
        return [located.problem(wanted[0][0], f"cannot check the event: {exc.problems[0]}")]
    out: list[Problem] = []
    for at, condition in wanted:
        for where, text, key in event_rule_problems(condition, types.types, types.file):
            if where == ("name",):  # written `event: <name>` here, not `name:` as in a rule
                path, text = (*at, "event"), text.replace("`name: ", "`event: ", 1)
            else:
                path = (*at, *where)
            out.append(located.problem(path, text, key=key))
    return out


def steps_in_flight(journey: str) -> dict[str, int]:
    """Step name -> customers active on it now, from the database if there is one (else empty).

    Why silent: `relance validate` checks files and must work before any database exists (a new
    clone, CI); it never creates the SQLite file, and waits at most a few seconds for a server.
    """
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from core.db import get_engine, make_engine
    from core.models import JourneyEntry
    from core.settings import get_settings

    url = make_url(get_settings().database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or not Path(url.database).is_file():
            return {}
        engine = get_engine(url.render_as_string(hide_password=False))
        disposable = None
    else:
        if "connect_timeout" not in url.query and url.get_backend_name() == "postgresql":
            url = url.update_query_dict({"connect_timeout": "3"})
        engine = disposable = make_engine(url.render_as_string(hide_password=False), one_off=True)
    table = JourneyEntry.__table__
    query = (
        select(table.c.step, func.count())
        .where(table.c.journey == journey, table.c.status == "active")
        .group_by(table.c.step)
    )
    try:
        with engine.connect() as conn:
            return {step: int(n) for step, n in conn.execute(query)}
    except SQLAlchemyError:
        return {}  # no server, or not migrated yet: nobody is in flight
    finally:
        if disposable is not None:
            disposable.dispose()


def step_channel_problems(located: Located[Campaign], renderer: Any, sent: Any) -> list[Problem]:
    """A send step may use a channel its message has no rendering for: said at the step's channels.

    ``sent``: a relance.cli.validation.Sent of a send step.
    """
    try:
        have = renderer.channels_of(sent.message)
    except Exception:  # noqa: BLE001 - a template that does not compile is reported by its rendering
        return []
    missing = [c for c in sent.channels if c not in have]
    if not missing:
        return []
    own = sent.channels_at[0] == "steps"
    line, _ = located.at(sent.channels_at)
    if own:
        whose = "its `channels: order:`"
    elif sent.channels_at in located.marks:
        whose = f"the journey's `channels: order:` on line {line}"
    else:
        whose = f"the default order [{', '.join(sent.channels)}]"
    kept = ", ".join(c for c in sent.channels if c in have)
    text = (f"step `{sent.step}` may send by {' and '.join(missing)} ({whose}) but `{sent.message}` has no "
            f"{' or '.join(missing)} rendering (it has {', '.join(have) or 'none'}); write "
            f"`channels: {{order: [{kept}]}}` in the step, or add the channel to the template")  # fmt: skip
    return [located.problem(sent.channels_at if own else sent.at, text)]
