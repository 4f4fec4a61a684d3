"""`relance validate`: checks across files, after each file parsed on its own (core.spec_loader).

Why here and not in relance/: these checks reach up into every layer (segments and rule fields
from audiences, the renderer from channels, the trained models), and relance/ is shared by all of
them; only the CLI may import anything.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.spec import (
    Campaign,
    CampaignRule,
    FeatureRule,
    FieldRule,
    ScoreRule,
    SegmentRule,
    TargetRule,
    TopRule,
    kind_of,
    nearest,
)
from core.spec_loader import (
    Located,
    Path_,
    Problem,
    SpecError,
    display_path,
    load_located,
    load_yaml,
    position,
    walk_rules,
)
from core.spec_rules import EventRule


@dataclass
class CheckContext:
    """What reference checks compare against; built once for a whole `relance validate`."""

    templates_dir: Path
    models_dir: Path
    segments: Any  # audiences.segments.SegmentBook
    campaign_names: set[str] = field(default_factory=set)
    renderer: Any = None
    event_types: Any = None  # audiences.event_types.EventTypes, loaded at the first `event:` rule

    @classmethod
    def from_settings(cls, campaign_names: set[str] | None = None) -> CheckContext:
        from audiences.segments import SegmentBook
        from core.settings import get_settings

        settings = get_settings()
        try:
            book = SegmentBook.load(settings.segments_file)
        except SpecError as exc:
            book = SegmentBook.broken(settings.segments_file, exc.problems)
        return cls(
            templates_dir=Path(settings.templates_dir),
            models_dir=Path(settings.models_dir),
            segments=book,
            campaign_names=campaign_names or set(),
        )

    def template_names(self) -> list[str]:
        root = self.templates_dir
        if not root.is_dir():
            return []
        return sorted(
            p.parent.relative_to(root).as_posix()
            for p in root.rglob("content.yaml")
            if not p.relative_to(root).as_posix().startswith("_")
        )

    def model_known(self, name: str) -> bool:
        root = self.models_dir
        return root.is_dir() and any(p.name == name or p.stem == name for p in root.iterdir())


# The models `relance train` knows (audiences.learning.models.TRAINERS; importing it would load
# scikit-learn into every `relance validate`, a test keeps the two in sync).
TRAINABLE_MODELS: tuple[str, ...] = ("response", "churn", "uplift")


def untrained(model: str, models_dir: Path) -> str:
    """The warning for a model with no trained version, naming the model to train or the known ones."""
    if model in TRAINABLE_MODELS:
        return f"no trained model `{model}` yet (nothing in {models_dir}/): run `relance train {model}` first"
    close = nearest(model, TRAINABLE_MODELS)
    hint = f"did you mean `{close}`?" if close else f"relance trains {', '.join(TRAINABLE_MODELS)}"
    return f"no model `{model}` in {models_dir}/; {hint}"


def check_rules(
    located: Located[Any], rule: Any, path: Path_, ctx: CheckContext, segments: bool = True
) -> list[Problem]:
    """Field, feature, segment, model and past campaign names used by ``rule`` (with nearest names)."""
    from audiences.rules import CUSTOMER_FIELDS, FEATURES

    out: list[Problem] = []

    def unknown(at: Path_, what: str, value: str, known: Any, where: str = "") -> None:
        close = nearest(value, known)
        hint = f"did you mean `{close}`?" if close else f"write one of: {', '.join(sorted(known))}"
        out.append(located.problem(at, f"`{at[-1]}: {value}` is not a known {what}{where}; {hint}"))

    for sub, at in walk_rules(rule, path):
        if isinstance(sub, FieldRule) and sub.field not in CUSTOMER_FIELDS:
            unknown((*at, "field"), "customer field", sub.field, CUSTOMER_FIELDS)
        elif isinstance(sub, FeatureRule) and sub.feature not in FEATURES:
            unknown((*at, "feature"), "feature", sub.feature, FEATURES)
        elif isinstance(sub, EventRule):
            out.extend(_event_rule_problems(located, sub, at, ctx))
        elif isinstance(sub, SegmentRule) and segments:
            problem = ctx.segments.problem_with(sub.segment)
            if problem is not None:
                out.append(located.problem((*at, "segment"), problem))
        elif isinstance(sub, ScoreRule | TopRule):
            model = sub.score.model if isinstance(sub, ScoreRule) else sub.top.model
            key = "score" if isinstance(sub, ScoreRule) else "top"
            if not ctx.model_known(model):
                out.append(located.problem((*at, key, "model"), untrained(model, ctx.models_dir), "warning"))
        elif isinstance(sub, TargetRule) and not ctx.model_known("uplift"):
            out.append(located.problem((*at, "target"), untrained("uplift", ctx.models_dir), "warning"))
        elif (
            isinstance(sub, CampaignRule)
            and ctx.campaign_names
            and sub.campaign.name not in ctx.campaign_names
        ):
            close = nearest(sub.campaign.name, ctx.campaign_names)
            hint = f"; did you mean `{close}`?" if close else ""
            out.append(
                located.problem(
                    (*at, "campaign", "name"),
                    f"no campaign named `{sub.campaign.name}` in the campaign files{hint}",
                    "warning",
                )
            )
    return out


def _event_rule_problems(located: Located[Any], rule: Any, at: Path_, ctx: CheckContext) -> list[Problem]:
    """An `event:` rule's type and properties against the declared types (audiences/events.yaml)."""
    from audiences.event_rules import event_rule_problems
    from audiences.event_types import current

    if ctx.event_types is None:
        try:
            ctx.event_types = current()
        except SpecError as exc:
            text = f"cannot check `event: {rule.event.name}`: {exc.problems[0]}"
            return [located.problem((*at, "event", "name"), text)]
    found = event_rule_problems(rule.event, ctx.event_types.types, ctx.event_types.file)
    return [located.problem((*at, "event", *where), text, key=key) for where, text, key in found]


@dataclass(frozen=True)
class Sent:
    """One message a campaign (or a journey's send step) sends, and where the file says what."""

    message: str
    at: Path_  # where its `message:` is written
    variant: Any  # core.spec.Variant, or None for the implicit one
    offer: dict[str, Any]  # merged: campaign (journey) offer, step offer, variant offer
    offer_at: Path_  # where to add a missing offer field
    channels: tuple[str, ...]  # the channel order of its strategy
    channels_at: Path_  # where that order is written (the journey's, or the step's own)
    step: str | None = None  # the send step's name, for journeys


def _message_paths(campaign: Campaign) -> list[Sent]:
    """Every message a campaign sends, or every message of every send step of a journey."""
    out: list[Sent] = []
    order, order_at = tuple(campaign.channels.order), ("channels", "order")
    for i, variant in enumerate(campaign.variants):
        offer = {**campaign.offer, **variant.offer}
        offer_at = ("variants", i, "offer") if variant.offer else ("offer",)
        if variant.message is not None:
            at: Path_ = ("variants", i, "message")
            out.append(Sent(variant.message, at, variant, offer, offer_at, order, order_at))
        elif campaign.message is not None:
            out.append(Sent(campaign.message, ("message",), variant, offer, offer_at, order, order_at))
    if not campaign.variants and campaign.message is not None:
        offer = dict(campaign.offer)
        out.append(Sent(campaign.message, ("message",), None, offer, ("offer",), order, order_at))
    for i, step in enumerate(campaign.steps or []):
        if kind_of(step) != "send":
            continue
        send, base = step.send, ("steps", i, "send")
        strategy = send.channels or campaign.channels
        channels_at = (*base, "channels", "order") if send.channels else ("channels", "order")
        step_offer_at = (*base, "offer") if send.offer else ("offer",)
        for j, variant in enumerate(send.variants):
            message = variant.message or send.message
            at = (*base, "variants", j, "message") if variant.message else (*base, "message")
            offer_at = (*base, "variants", j, "offer") if variant.offer else step_offer_at
            out.append(Sent(message, at, variant, {**campaign.offer, **send.offer, **variant.offer}, offer_at,
                            tuple(strategy.order), channels_at, step.name))  # fmt: skip
        if not send.variants and send.message is not None:
            out.append(Sent(send.message, (*base, "message"), None, {**campaign.offer, **send.offer},
                            step_offer_at, tuple(strategy.order), channels_at, step.name))  # fmt: skip
    return out


def check_messages(located: Located[Campaign], ctx: CheckContext) -> list[Problem]:
    """Every template exists, supports the campaign's channels and renders for sample customers."""
    from channels.render import Renderer
    from channels.tracking_links import MemoryLinkRegistry

    campaign = located.value
    if ctx.renderer is None:
        ctx.renderer = Renderer(ctx.templates_dir, links=MemoryLinkRegistry())  # SMS segments as sent
    out: list[Problem] = []
    checked: set[tuple[str, str, tuple[str, ...]]] = set()
    for sent in _message_paths(campaign):
        message = sent.message
        if not ctx.renderer.exists(message):
            close = nearest(message, ctx.template_names())
            hint = f"did you mean `{close}`?" if close else "create it (see templates/README.md)"
            folder = Path(ctx.templates_dir) / message / "content.yaml"
            text = f"`message: {message}` is not a template folder (no {folder}); {hint}"
            out.append(located.problem(sent.at, text))
            continue
        channels = sent.channels
        if sent.step is not None:
            from relance.cli.journey_checks import step_channel_problems

            found = step_channel_problems(located, ctx.renderer, sent)
            out.extend(found)
            if found:  # said at the step; render the channels it has
                channels = tuple(c for c in channels if c in ctx.renderer.channels_of(message))
        key = (message, repr(sorted(sent.offer.items())), channels)
        if key not in checked:
            checked.add(key)
            out.extend(_render_problems(located, ctx.renderer, sent, channels))
    return out


_UNDEFINED_OFFER = re.compile(r"`offer\.(\w+)`|offer\.(\w+)")


def _render_problems(
    located: Located[Campaign], renderer: Any, sent: Sent, channels: tuple[str, ...]
) -> list[Problem]:
    """Helper C's ``Renderer.check`` for one message, for its sample customers (fr, en, no first name).

    Problems keep their template file:line; each also names the campaign line that uses the
    message, and a missing offer field names where to add it.
    """
    from channels.render import RenderContext
    from relance.cli.messages import SAMPLE_CUSTOMERS, SAMPLE_RECOMMENDATIONS

    campaign = located.value
    message, at, offer, variant = sent.message, sent.at, sent.offer, sent.variant
    samples = [
        RenderContext(
            customer=dict(c),
            offer=offer,
            variant=variant.name if variant else "default",
            campaign=campaign.name,
            recommendations=SAMPLE_RECOMMENDATIONS,
        )  # fmt: skip
        for c in SAMPLE_CUSTOMERS
    ]
    out: list[Problem] = []
    for p in renderer.check(message, list(channels), offer, samples):
        missing = [
            n for m in _UNDEFINED_OFFER.finditer(p.message) for n in m.groups() if n and n not in offer
        ] if "undefined" in p.message else []  # fmt: skip
        if missing:
            line, _ = located.at(sent.offer_at, key=True)
            where = f"{located.file}:{line}" if line else located.file
            note = f" (add `{missing[0]}:` under `offer:` in {where})"
        else:
            line, col = located.at(at)
            note = f" (message of {located.file}:{line}:{col})" if line else f" (message of {located.file})"
        out.append(Problem(p.file, p.line, None, _with_suggestion(p.message) + note))
    return out


_NOT_DEFINED = re.compile(r"`(\w+)` is not defined.*?You can use: ([^\[]*)", re.DOTALL)


def _with_suggestion(text: str) -> str:
    """Add "did you mean" to an undefined template variable, from the names the renderer lists."""
    found = _NOT_DEFINED.search(text)
    if not found:
        return text
    names = [n.strip().removesuffix("()") for n in found.group(2).split(",")]
    close = nearest(found.group(1), names)
    return text.replace(f"`{found.group(1)}` is not defined", f"`{found.group(1)}` is not defined "
                        f"(did you mean `{close}`?)", 1) if close else text  # fmt: skip


def check_campaign(located: Located[Campaign], ctx: CheckContext) -> list[Problem]:
    """Reference checks and renderings of one loaded campaign."""
    campaign = located.value
    out = check_rules(located, campaign.audience, ("audience",), ctx)
    strategy = campaign.channels
    model = {"channel": "response"}.get(strategy.model or "response", strategy.model or "response")
    if strategy.strategy == "best" and not ctx.model_known(model):
        where = ("channels", "model") if strategy.model else ("channels", "strategy")
        out.append(located.problem(where, untrained(model, ctx.models_dir), "warning"))
    out.extend(check_messages(located, ctx))
    if campaign.is_journey:
        from relance.cli.journey_checks import check_journey

        out.extend(_step_rules(located, ctx))
        out.extend(check_journey(located, ctx))
    sched = campaign.schedule
    if sched is not None and sched.at is not None:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        at = sched.at if sched.at.tzinfo else sched.at.replace(tzinfo=ZoneInfo(sched.timezone))
        if at < datetime.now(ZoneInfo("UTC")):
            text = f"`at: {sched.at}` is in the past: it will never run"
            out.append(located.problem(("schedule", "at"), text, "warning"))
    return out


def _step_rules(located: Located[Campaign], ctx: CheckContext) -> list[Problem]:
    """The audience rules of a journey's branches, and the models of send steps choosing the best channel."""
    out: list[Problem] = []
    for i, step in enumerate(located.value.steps or []):
        kind = kind_of(step)
        if kind == "branch" and step.branch.if_.audience is not None:
            at: Path_ = ("steps", i, "branch", "if", "audience")
            out += check_rules(located, step.branch.if_.audience, at, ctx)
        own = step.send.channels if kind == "send" else None
        if own is not None and own.strategy == "best":
            model = "response" if own.model in (None, "channel") else own.model
            if not ctx.model_known(model):
                at = ("steps", i, "send", "channels", "strategy")
                out.append(located.problem(at, untrained(model, ctx.models_dir), "warning"))
    return out


def check_file(path: Path | str, ctx: CheckContext) -> tuple[Campaign | None, list[Problem]]:
    """Everything `relance validate` reports for one campaign file (errors and warnings)."""
    try:
        located = load_located(path, Campaign)
    except SpecError as exc:
        return None, exc.problems
    return located.value, check_campaign(located, ctx)


def campaign_files(folder: Path) -> list[Path]:
    """The campaign files of a folder: *.yaml and *.yml, sorted."""
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def validate_files(paths: list[Path], ctx: CheckContext | None = None) -> list[Problem]:
    """Problems of several campaign files, the segments file, and names used twice."""
    if ctx is None:
        names = set()
        for p in paths:
            with contextlib.suppress(SpecError):  # a broken file is reported by check_file below
                data, _ = load_yaml(p)
                if isinstance(data, dict) and isinstance(data.get("name"), str):
                    names.add(data["name"])
        ctx = CheckContext.from_settings(names)
    problems: list[Problem] = list(ctx.segments.problems)
    problems.extend(
        ctx.segments.check_names(lambda located, rule, at: check_rules(located, rule, at, ctx, False))
    )
    owners: dict[str, str] = {}
    segments_file = Path(ctx.segments.file).resolve()
    for path in paths:
        if Path(path).resolve() == segments_file:
            continue  # the segments file is checked above, whatever the arguments
        campaign, found = check_file(path, ctx)
        problems.extend(found)
        if campaign is not None:
            file = display_path(path)
            if campaign.name in owners:
                line, col = position(load_yaml(path)[1], ("name",))
                problems.append(
                    Problem(file, line, col, f"`name: {campaign.name}` is already the name of the campaign "
                            f"in {owners[campaign.name]}: give each campaign its own name")
                )  # fmt: skip
            owners.setdefault(campaign.name, file)
    return problems


def refuse_broken_campaign(path: Path) -> None:
    """Exit with `relance validate`'s file:line messages when the campaign cannot run as written.

    Why before a run starts: a wrong segment, field or schema value is not a transient fault, so
    Prefect must not retry it, and a marketer must read where to fix it, not a traceback. Only
    what would fail the whole run is checked here (the file, its audience rules and the segments
    they use); renderings are `relance validate`'s and `relance preview`'s work, and a template
    failing for one customer fails that message only.
    """
    from core.spec import Campaign
    from core.spec_loader import SpecError, load_located
    from relance.cli.common import fail

    try:
        located = load_located(path, Campaign)
    except SpecError as exc:
        problems = exc.problems
    else:
        ctx = CheckContext.from_settings({located.value.name})
        problems = check_rules(located, located.value.audience, ("audience",), ctx)
        if ctx.segments.file_broken and any(p.severity == "error" for p in problems):
            problems = [*ctx.segments.problems, *problems]
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        fail("\n".join([*errors, f"fix the campaign, then `relance validate {path}` checks it all"]))
