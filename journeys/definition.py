"""What the engine reads off a journey file: its graph, its channels, and each send step as a campaign.

A send step becomes a ``Campaign`` (core.spec.Campaign.step_campaign) so that
selection, the ledger, rendering and sending apply unchanged at each send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.spec import Campaign, kind_of
from core.spec_steps import next_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JourneyFile:
    """A journey and the file it was loaded from (the send flow re-reads nothing else)."""

    path: str
    campaign: Campaign

    @property
    def name(self) -> str:
        return self.campaign.name


def steps_of(journey: Campaign) -> list[Any]:
    return list(journey.steps or [])


def first_step(journey: Campaign) -> str:
    return steps_of(journey)[0].name


def following(journey: Campaign) -> dict[str, list[str]]:
    """step name -> the names it leads to (empty: the journey ends after it)."""
    steps = steps_of(journey)
    return {s.name: next_of(steps, i) for i, s in enumerate(steps)}


def kinds(journey: Campaign) -> dict[str, str]:
    return {s.name: kind_of(s) for s in steps_of(journey)}


def step_channels(journey: Campaign, step: Any) -> list[str]:
    """The channels a send step may use: its own strategy's order, else the journey's."""
    strategy = step.send.channels or journey.channels
    return list(dict.fromkeys(strategy.order))


def journey_channels(journey: Campaign) -> list[str]:
    """Every channel some send step may use, in first-use order (entry needs one of them)."""
    out: list[str] = []
    for s in steps_of(journey):
        if kind_of(s) == "send":
            out += [c for c in step_channels(journey, s) if c not in out]
    return out or list(journey.channels.order)


def send_campaign(journey: Campaign, step: Any) -> Campaign:
    """The campaign a send step is (core.spec.Campaign.step_campaign)."""
    return journey.step_campaign(step.name)


def entry_campaign(journey: Campaign) -> Campaign:
    """The journey as a one-message campaign for selecting who enters (audience, control group, reach).

    The message is a placeholder never rendered: entering sends nothing.
    """
    from core.spec import ChannelStrategy

    return Campaign(
        name=journey.name,
        priority=journey.priority,
        schedule=journey.schedule,
        audience=journey.audience,
        control_group=journey.control_group,
        message="(journey)",
        channels=ChannelStrategy(strategy="all", order=journey_channels(journey)),
        model_versions=journey.model_versions,
    )


def load_journeys(folder: Path | str) -> list[JourneyFile]:
    """Every journey among the campaign files of ``folder`` (files that do not load are left out:
    `relance validate` names them; a tick must not stop every journey for one broken file)."""
    from core.spec_loader import load_campaign

    out: list[JourneyFile] = []
    for path in sorted(Path(folder).glob("*.y*ml")):
        try:
            campaign = load_campaign(path)
        except Exception as exc:  # noqa: BLE001 - reported by validate; other journeys go on
            log.warning("journey file %s left out of this tick: %s", path, str(exc).splitlines()[0])
            continue
        if campaign.is_journey:
            out.append(JourneyFile(str(path), campaign))
    return out
