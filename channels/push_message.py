"""A rendered push notification and the limits it must fit.

Limits we chose (practical, not the protocols' hard caps):
- title 65 characters: iOS shows about one line (~ 40-50 chars) in the banner and Android
  truncates near 65 in the collapsed shade;
- body 240 characters: iOS shows ~ 178 characters of title + body in the lock screen, Android
  ~ 240 expanded; beyond that text is hidden, so we refuse it at validate time rather than
  cut it silently at send time;
- the whole payload (title, body, data) below 4096 bytes: FCM's and APNs' limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TITLE_MAX = 65
BODY_MAX = 240
PAYLOAD_MAX_BYTES = 4096


@dataclass
class RenderedPush:
    title: str
    body: str
    deep_link: str
    data: dict[str, str] = field(default_factory=dict)
    to: str | None = None  # a device token, filled by the sender (a customer may have several)

    def payload(self) -> dict:
        """The provider-neutral payload (FCM v1 ``message`` minus the token)."""
        return {"notification": {"title": self.title, "body": self.body}, "data": self.data}

    def payload_bytes(self) -> int:
        return len(json.dumps(self.payload(), ensure_ascii=False).encode("utf-8"))

    def problems(self) -> list[str]:
        """What breaks the limits above, in words a marketer can act on."""
        found = []
        if not self.title.strip():
            found.append("the push title is empty")
        if len(self.title) > TITLE_MAX:
            found.append(f"the push title has {len(self.title)} characters, at most {TITLE_MAX} are shown")
        if len(self.body) > BODY_MAX:
            found.append(f"the push body has {len(self.body)} characters, at most {BODY_MAX} are shown")
        if self.payload_bytes() > PAYLOAD_MAX_BYTES:
            found.append(f"the push payload is {self.payload_bytes()} bytes, above {PAYLOAD_MAX_BYTES}")
        return found
