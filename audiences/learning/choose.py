"""The ``best`` channel strategy: per customer, the usable channel with the highest predicted response.

``channels: {strategy: best, model: response}`` (``model: channel`` is the same
model). The response model has the channel as a feature and
``relance score response`` stores one score per channel in the customer's
``response`` row (``customer_score.score_<channel>``); this module compiles the
argmax over the channels that are still usable after consent, suppression,
caps and windows (``ok``) into one SQL CASE, so that plan and run get the
same channel from the same query. Ties and channels without a score follow
the campaign's ``order``; a customer with no score at all gets the first
usable channel of ``order`` (as ``first_available``).

audiences.selection lists :func:`best_channel` in its CHANNEL_CHOOSERS; this
module imports nothing of the selection (issue 23: no import circle).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Subquery, and_, case, func, literal, or_, select

from audiences.learning.registry import canonical, channel_column
from audiences.rule_context import SCORES, RuleContext
from audiences.score_rules import model_version, scores_of
from core.spec import Campaign

NO_SCORE = -1.0


def channel_score(model: str, version: str, channel: str, customer_id: ColumnElement) -> ColumnElement:
    """The customer's score for one channel (a correlated lookup on the primary key), -1 when absent."""
    sub = (
        select(SCORES.c[channel_column(channel)])
        .where(
            scores_of(model, version),
            SCORES.c.customer_id == customer_id,
        )
        .scalar_subquery()
    )
    return func.coalesce(sub, NO_SCORE)


def best_channel(
    campaign: Campaign, ok: dict[str, ColumnElement], cand: Subquery, ctx: RuleContext
) -> ColumnElement:
    """CASE: the first channel (in ``order``) that is usable and scores at least every other usable one."""
    model = canonical(campaign.channels.model or "response")
    version = model_version(model, ctx)
    channels = list(ok)
    score = {ch: channel_score(model, version, ch, cand.c.customer_id) for ch in channels}
    whens = []
    for ch in channels:
        beats = [or_(~ok[other], score[ch] >= score[other]) for other in channels if other != ch]
        whens.append((and_(ok[ch], *beats), literal(ch)))
    return case(*whens, else_=None)
