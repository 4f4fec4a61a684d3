"""The provider protocol: what the send flow hands a provider and what it gets back.

One small surface for every channel and provider (outbox, null, smtp, sendgrid, twilio, fcm):
``send_batch(messages) -> results``, one result per message, never raising for one message's
failure. Providers classify their errors into ``SendError`` so that retries (channels.retry),
the circuit breaker (channels.circuit) and the consent effects (channels.effects) are written
once, not once per provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # channels.render imports Jinja2 and friends: not needed at import time here
    from channels.render import RenderedEmail, RenderedPush, RenderedSms

    Rendered = RenderedEmail | RenderedSms | RenderedPush
else:
    Rendered = Any

Status = Literal["sent", "failed", "unknown"]

# Effects of a permanent error on the customer base (applied by channels.effects.apply_effects).
EFFECT_STOP = "stop"  # the customer replied STOP (Twilio 21610): SMS consent withdrawn, number suppressed
EFFECT_INVALID = "invalid"  # the address can never receive this channel: consent withdrawn, suppressed
EFFECT_DEVICE = "device_inactive"  # the push token is gone (FCM UNREGISTERED): device deactivated
EFFECTS = (EFFECT_STOP, EFFECT_INVALID, EFFECT_DEVICE)


@dataclass(slots=True)
class Outbound:
    """One message to send: the ledger row it belongs to, the address, the rendered content."""

    ledger_id: int
    run_id: int
    customer_id: int
    campaign: str
    channel: str
    to: str = field(repr=False)  # an address or a device token: never in logs
    rendered: Rendered = field(repr=False)


@dataclass(slots=True)
class SendResult:
    """The outcome of one message. ``unknown``: the provider may have accepted it; never resend blindly.

    ``customer_id``, ``channel`` and ``to`` are carried for ``apply_effects``; ``cost_units`` is the
    number of SMS segments (None for other channels).
    """

    ledger_id: int
    status: Status
    provider_message_id: str | None = None
    error: str | None = None
    retryable: bool = False
    effect: str | None = None
    attempts: int = 1
    customer_id: int | None = None
    channel: str | None = None
    to: str | None = field(default=None, repr=False)
    cost_units: float | None = None


class SendError(Exception):
    """A classified provider error for one message.

    ``retryable``: try again later (429, 5xx, connection errors, timeouts before sending).
    ``unknown``: the request left and no answer came (read timeout): the message may be sent.
    ``effect``: a permanent error that changes the customer base (see EFFECTS).
    ``retry_after``: seconds the provider asked us to wait (HTTP Retry-After).
    ``provider_wide``: not about this recipient (bad credentials, 5xx...): counts for the breaker.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        unknown: bool = False,
        effect: str | None = None,
        retry_after: float | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.unknown = unknown
        self.effect = effect
        self.retry_after = retry_after
        self.code = code


@runtime_checkable
class Provider(Protocol):
    """What the send flow uses. ``name`` is recorded on the ledger row (``ledger.provider``)."""

    name: str
    channel: str

    async def send_batch(self, messages: list[Outbound]) -> list[SendResult]:
        """Send concurrently under the provider's rate limit; one result per message, in order."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the provider is not used afterwards."""
        ...


def cost_units(message: Outbound) -> float | None:
    """SMS segments of a message (what the operator pays for), None for e-mail and push."""
    segments = getattr(message.rendered, "segments", None) if message.channel == "sms" else None
    return float(segments) if segments is not None else None


def sent(message: Outbound, provider_message_id: str | None, attempts: int = 1) -> SendResult:
    return SendResult(
        message.ledger_id,
        "sent",
        provider_message_id,
        attempts=attempts,
        customer_id=message.customer_id,
        channel=message.channel,
        to=message.to,
        cost_units=cost_units(message),
    )


def not_sent(message: Outbound, error: SendError, attempts: int) -> SendResult:
    """``failed`` (permanent or retries exhausted) or ``unknown`` (may have left)."""
    return SendResult(
        message.ledger_id,
        "unknown" if error.unknown else "failed",
        None,
        error=error.message,
        retryable=error.retryable,
        effect=error.effect,
        attempts=attempts,
        customer_id=message.customer_id,
        channel=message.channel,
        to=message.to,
        cost_units=cost_units(message) if error.unknown else None,
    )
