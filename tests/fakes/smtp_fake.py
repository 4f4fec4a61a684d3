"""A real SMTP server on loopback (aiosmtpd) that records what it accepts.

Recipients containing "nouser" get ``550 5.1.1 No such user``, containing "greylist" get
``451 4.7.1 Try again later`` for their first ``greylist_times`` attempts.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    peer: tuple


@dataclass
class SmtpHandler:
    received: list[Received] = field(default_factory=list)
    greylist_times: int = 1
    _seen: dict[str, int] = field(default_factory=dict)
    connections: set = field(default_factory=set)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd API
        self.connections.add(session.peer)
        if "nouser" in address:
            return "550 5.1.1 No such user"
        if "greylist" in address:
            self._seen[address] = self._seen.get(address, 0) + 1
            if self._seen[address] <= self.greylist_times:
                return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg, session.peer))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpFake:
    """``with SmtpFake() as smtp:`` -> smtp.port, smtp.handler.received."""

    def __init__(self) -> None:
        self.handler = SmtpHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpFake:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
