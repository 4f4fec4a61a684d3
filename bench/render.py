"""Rendering throughput: customers per second, all channels of a typical message, on one core.

A typical message: winback/offer-15 (e-mail with a loop over 3 recommended products, SMS, push),
customers alternating fr/en, with and without first name, distinct ledger ids (so every
tracking token is signed anew), short SMS links from an in-memory link registry (as a run's
DbLinkRegistry after its first message: the ids are cached in the process).

Rates are given on CPU time (process_time: what one core delivers, even when other jobs share
the machine) and on wall time. A plain-Jinja reference (the same layout rendered by an ordinary
jinja2.Environment, no sandbox, no tracking, nothing else) calibrates the machine: the issue
quotes ~30,000 plain e-mail renders/s per core for this kind of template.

    taskset -c 0 .venv/bin/python bench/render.py --customers 20000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channels.render import RenderContext, Renderer  # noqa: E402
from channels.tracking_links import MemoryLinkRegistry  # noqa: E402

NAMES = ["Hélène", "Zoé", None, "John", "Marie-Ève", "François"]
LOCALES = ["fr_FR", "fr_FR", "fr_BE", "en_GB", "fr_FR", "en_US"]


def contexts(n: int) -> list[RenderContext]:
    out = []
    for i in range(n):
        recos = [
            {
                "item": f"p{(i + k) % 50}",
                "name": f"Produit {(i + k) % 50}",
                "price": 5 + (i + k) % 20,
                "url": f"https://maison.example/p/{(i + k) % 50}",
            }
            for k in range(3)
        ]
        out.append(
            RenderContext(
                customer={
                    "id": i,
                    "first_name": NAMES[i % 6],
                    "locale": LOCALES[i % 6],
                    "email": f"c{i}@example.com",
                    "phone": "+33612345678",
                },
                features={"recency_days": i % 400},
                # a new dict per recipient, as the send flow builds it (offer_for(variant))
                offer={
                    "code": "RETOUR15",
                    "discount_percent": 15,
                    "price": 12.5,
                    "url": "https://maison.example/retour",
                },
                campaign="winback",
                ledger_id=i + 1,
                recommendations=recos,
            )
        )
    return out


def timed(fn, items) -> tuple[float, float]:
    """(per second on CPU time, per second on wall time), best of 3 runs."""
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        c0, w0 = time.process_time(), time.perf_counter()
        for item in items:
            fn(item)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return len(items) / best_cpu, len(items) / best_wall


def show(label: str, rates: tuple[float, float], unit: str = "customers/s") -> None:
    print(f"{label:34} {rates[0]:>9,.0f} {unit} CPU   {rates[1]:>9,.0f} wall")


def plain_jinja(templates: Path, renderer: Renderer, message: str, ctxs: list[RenderContext]):
    """The same layout with a plain jinja2.Environment: the machine's reference speed."""
    from jinja2 import Environment, FileSystemLoader

    from channels.template_env import helpers_for, paragraphs

    env = Environment(loader=FileSystemLoader(str(templates)), autoescape=True, trim_blocks=True)
    env.filters["paragraphs"] = paragraphs
    template = env.get_template("_layout/email.html.j2")
    base = renderer.render_all(message, ["email"], ctxs[0])["email"]
    helpers = helpers_for("fr_FR")
    content = {"headline": "Bonjour, vous nous manquez !", "body": "Texte.\n\nSuite.", "cta": "J'en profite"}
    common = {
        "locale": "fr",
        "subject": base.subject,
        "preheader": base.preheader,
        "sender": renderer.sender,
        "content": content,
        "link": "https://maison.example/retour",
        "track": str,
        "unsubscribe_url": "https://t.example/u/x",
        "open_pixel_url": "https://t.example/o/x.gif",
        **helpers.globals(),
    }
    return lambda ctx: template.render(common, offer=ctx.offer, recommendations=ctx.recommendations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--message", default="winback/offer-15")
    parser.add_argument(
        "--templates", type=Path, default=Path(__file__).resolve().parent.parent / "templates"
    )
    parser.add_argument("--long-links", action="store_true", help="SMS with long click URLs (no registry)")
    args = parser.parse_args()
    renderer = Renderer(args.templates, links=None if args.long_links else MemoryLinkRegistry())
    ctxs = contexts(args.customers)
    t0 = time.perf_counter()
    renderer.render_all(args.message, ["email", "sms", "push"], ctxs[0])
    print(f"first render (compile + CSS inlining): {(time.perf_counter() - t0) * 1000:.0f} ms")
    for ctx in ctxs[:500]:  # warm caches
        renderer.render_all(args.message, ["email", "sms", "push"], ctx)
    show(
        "plain Jinja e-mail (reference)",
        timed(plain_jinja(args.templates, renderer, args.message, ctxs), ctxs),
    )
    all_channels = ["email", "sms", "push"]
    show(
        "all channels (email+sms+push)",
        timed(lambda c: renderer.render_all(args.message, all_channels, c), ctxs),
    )
    for channel in all_channels:
        show(
            f"  {channel} only", timed(lambda c, ch=channel: renderer.render_all(args.message, [ch], c), ctxs)
        )
    emails = [renderer.render(args.message, "email", c) for c in ctxs[:5000]]
    show("  e-mail to_bytes()", timed(lambda e: e.to_bytes(), emails), "messages/s")
    show("  e-mail to_mime().as_bytes()", timed(lambda e: e.to_mime().as_bytes(), emails[:500]), "messages/s")
    sms = renderer.render(args.message, "sms", ctxs[0])
    print(f"SMS ({ctxs[0].customer['locale']}): {sms.segments} segment(s), {sms.encoding}: {sms.text!r}")


if __name__ == "__main__":
    main()
