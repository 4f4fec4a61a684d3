"""Which model versions a campaign's selection reads (campaign_run.models, the report, ``relance plan``).

Why not in audiences.learning.registry (where it was until issue 23): it
compiles the campaign's audience, so it sits above the rule compiler, while the
registry (files on disk) sits below it: the compiler asks the registry for the
newest version that passes its metric floors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from audiences.learning.registry import canonical
from audiences.rules import RuleContext, compile_rule
from audiences.score_rules import model_version
from core.models import utcnow


def resolve_versions(campaign: Any, *, bind: Any = None, now: datetime | None = None) -> dict[str, str]:
    """model -> version the campaign's selection uses (for campaign_run.models and the report).

    Compiles the audience exactly as the selection does (audiences.rules records
    every model it reads) and adds the model of a ``best`` channel strategy.
    """
    ctx = RuleContext(now or utcnow(), model_versions=campaign.model_versions, bind=bind)
    compile_rule(campaign.audience, ctx)
    if campaign.channels.strategy == "best" and campaign.channels.model:
        model_version(canonical(campaign.channels.model), ctx)
    return dict(ctx.models_used)
