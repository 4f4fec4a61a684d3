"""The rendered e-mail in a real browser: headless Chromium screenshots at phone and desktop widths."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from channels.render import RenderContext, Renderer

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def chromium_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing in CI (.ci/run installs it with apt-get)")
    pytest.skip("chromium not installed: apt-get install -y chromium")


def screenshot(html_file: Path, png: Path, width: int, profile: Path) -> None:
    subprocess.run(
        [chromium_or_skip(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
         f"--window-size={width},1200", "--hide-scrollbars", f"--screenshot={png}", html_file.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def png_size(png: Path) -> tuple[int, int]:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def render_email(out_dir: Path) -> Path:
    ctx = RenderContext(
        customer={"first_name": "Hélène", "locale": "fr_FR", "email": "h@example.com"},
        offer={
            "code": "RETOUR15",
            "discount_percent": 15,
            "price": 12.5,
            "url": "https://maison.example/retour",
        },
        campaign="winback",
        recommendations=[
            {"item": "a", "name": "Thé vert Sencha", "price": 8.9},
            {"item": "b", "name": "Miel de lavande", "price": 12.5},
            {"item": "c", "name": "Sablés bretons", "price": 4.2},
        ],
    )
    html = Renderer(REPO / "templates").render("winback/offer-15", "email", ctx).html
    path = out_dir / "email.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.browser
@pytest.mark.parametrize("width", [375, 1200])
def test_email_screenshots_at_phone_and_desktop_widths(settings, tmp_path: Path, width: int):
    chromium_or_skip()
    html_file = render_email(tmp_path)
    png = Path(os.environ.get("RELANCE_SCREENSHOTS_DIR", tmp_path)) / f"email-{width}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    screenshot(html_file, png, width, tmp_path / "profile")
    w, h = png_size(png)
    assert (w, h) == (width, 1200)
    assert png.stat().st_size > 10_000  # a rendered page, not a blank image
