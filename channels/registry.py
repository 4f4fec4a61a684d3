"""Which provider sends a channel: ``settings.<channel>_provider`` (RELANCE_EMAIL_PROVIDER...).

Providers are imported lazily: choosing the outbox must not import twilio, sendgrid or
google-auth (slow imports, and credentials they would look for).
"""

from __future__ import annotations

from importlib import import_module

from channels.base import Provider

# name -> (module, class, channels it can send)
PROVIDERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "outbox": ("channels.outbox", "OutboxProvider", ("email", "sms", "push")),
    "null": ("channels.null", "NullProvider", ("email", "sms", "push")),
    "smtp": ("channels.smtp", "SmtpProvider", ("email",)),
    "sendgrid": ("channels.sendgrid_email", "SendGridProvider", ("email",)),
    "twilio": ("channels.twilio_sms", "TwilioProvider", ("sms",)),
    "fcm": ("channels.fcm_push", "FcmProvider", ("push",)),
}


class ProviderConfigError(ValueError):
    """A channel configured with a provider that does not exist, cannot send it, or lacks credentials."""


def choices(channel: str) -> list[str]:
    return [name for name, (_, _, chans) in PROVIDERS.items() if channel in chans]


def get_provider(channel: str, settings=None) -> Provider:
    """The configured provider of ``channel`` ("email", "sms" or "push"), ready to send."""
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    if channel not in ("email", "sms", "push"):
        raise ProviderConfigError(f"unknown channel {channel!r}: write email, sms or push")
    name = str(getattr(settings, f"{channel}_provider")).strip().lower()
    env = f"RELANCE_{channel.upper()}_PROVIDER"
    if name not in PROVIDERS:
        raise ProviderConfigError(
            f"{env}={name!r} is not a provider: write one of {', '.join(choices(channel))}"
        )
    module, cls, channels = PROVIDERS[name]
    if channel not in channels:
        raise ProviderConfigError(
            f"{env}={name!r}: {name} cannot send {channel}; write one of {', '.join(choices(channel))}"
        )
    provider_cls = getattr(import_module(module), cls)
    if name in ("outbox", "null"):
        return provider_cls(channel, settings)
    return provider_cls(settings)
