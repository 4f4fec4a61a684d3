"""A rendered SMS: its text and what that text costs (encoding, segments), as measured once rendered.

Beside channels/email_message.py and channels/push_message.py: the consistency check reads all
three rendered types without importing the Renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels import sms_encoding


@dataclass
class RenderedSms:
    text: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    ucs2_chars: list[str]
    to: str | None = None

    @property
    def cost(self) -> float:
        """Estimated price in euros (segments x settings.sms_price_per_segment)."""
        return sms_encoding.cost(self.segments)
