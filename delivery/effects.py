"""Permanent provider errors that change the customer base, applied in the caller's transaction.

A provider that says "this number replied STOP", "this address does not exist" or "this push
token is gone" tells us something about the customer, not about the message: consent and
suppression change at once (through audiences.consent, the only path for such changes), in the
same transaction that records the ledger results, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from audiences.consent import deactivate_device, suppress, withdraw
from channels.base import EFFECT_DEVICE, EFFECT_INVALID, EFFECT_STOP

SOURCE = "provider_error"  # consent_event.source (max 32 characters)


def apply_effects(conn: Connection, results: Iterable[Any]) -> dict[str, int]:
    """Apply the ``effect`` of each result (others are ignored); return counts per effect.

    - ``stop``: SMS consent withdrawn, number suppressed on sms with reason ``stop``;
    - ``invalid``: consent on the channel withdrawn, address suppressed with reason ``invalid``;
    - ``device_inactive``: the device (push token) deactivated.
    """
    counts: dict[str, int] = {}
    for r in results:
        effect = getattr(r, "effect", None)
        if not effect:
            continue
        to, customer_id, channel = getattr(r, "to", None), getattr(r, "customer_id", None), r.channel
        proof = f"ledger {r.ledger_id}: {r.error}"[:500]
        if effect == EFFECT_DEVICE and to:
            deactivate_device(conn, to)
        elif effect in (EFFECT_STOP, EFFECT_INVALID) and channel:
            if customer_id is not None:
                withdraw(conn, customer_id, channel, SOURCE, proof)
            if to:
                suppress(conn, to, effect, channel=channel, source=f"ledger:{r.ledger_id}")
        else:
            continue
        counts[effect] = counts.get(effect, 0) + 1
    return counts
