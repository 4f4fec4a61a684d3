"""The provider protocol: what the send flow hands a provider and what it gets back.

One small surface for every channel and provider (outbox, null, smtp, sendgrid, twilio, fcm):
``send_batch(messages, on_result=None) -> results``, one result per message, never raising for one
message's failure. ``on_result`` is called with each result as soon as it is known (from any thread:
the HTTP providers run on their own loop), so the send flow commits outcomes while the rest of the
batch is still in flight and a crash leaves unknown only what was really in flight
(delivery.outcomes). ``in_flight`` says how many requests a provider holds at once (None: it answers
a whole call at once, like the outbox); the flow hands it chunks under that bound.

Providers classify their errors into ``SendError`` so that retries (channels.retry), the circuit
breaker (channels.circuit) and the consent effects (delivery.effects) are written once, not once
per provider. Providers that keep their own record of what they wrote (the outbox) also offer
``written(ledger_ids) -> {ledger_id: provider_message_id}`` for reconciliation after a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # channels.render imports Jinja2 and friends: not needed at import time here
    from channels.render import RenderedEmail, RenderedPush, RenderedSms

    Rendered = RenderedEmail | RenderedSms | RenderedPush
else:
    Rendered = Any

Status = Literal["sent", "failed", "unknown"]

# Effects of a permanent error on the customer base (applied by delivery.effects.apply_effects).
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


OnResult = Callable[[SendResult], None]


@runtime_checkable
class Provider(Protocol):
    """What the send flow uses. ``name`` is recorded on the ledger row (``ledger.provider``).

    ``in_flight``: at most this many requests at once (the flow's bound on rows in ``sending``);
    None when a call is answered as a whole (outbox, null).
    """

    name: str
    channel: str
    in_flight: int | None

    async def send_batch(
        self, messages: list[Outbound], on_result: OnResult | None = None
    ) -> list[SendResult]:
        """Send concurrently under the provider's rate limit; one result per message, in order, each
        also passed to ``on_result`` as soon as it is known."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the provider is not used afterwards."""
        ...


def report(results: Iterable[SendResult], on_result: OnResult | None) -> None:
    """Hand finished results to ``on_result`` (providers that answer a call as a whole)."""
    if on_result is not None:
        for result in results:
            on_result(result)


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
