"""Serve one fake provider until interrupted: ``python -m tests.fakes sendgrid --latency 0.1``.

The benchmark runs the fake in its own process so that the server and the client under test do
not share one interpreter lock.
"""

from __future__ import annotations

import argparse
import threading

from tests.fakes.fcm_fake import FcmFake
from tests.fakes.sendgrid_fake import SendGridFake
from tests.fakes.twilio_fake import TwilioFake

FAKES = {"sendgrid": SendGridFake, "twilio": TwilioFake, "fcm": FcmFake}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(FAKES))
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args()
    fake = FAKES[args.kind](latency=args.latency).start()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
