"""The journey report's HTML in Chromium: offline, the page never wider than a phone, tables that scroll."""

from __future__ import annotations

import pytest

from reporting.journey_render import write_html
from reporting.journey_report import build_journey_report
from tests.browser import Browser
from tests.test_journey_report import JOURNEY, STEPS, WINDOW, make_journey
from tests.test_report_browser import measure

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.mark.parametrize("width", [375, 1280])
def test_journey_report_fits_the_window_and_its_tables_scroll(
    browser, sqlite_engine, settings, tmp_path, width
):
    with sqlite_engine.begin() as conn:
        make_journey(conn, n=300, seed=21)
    with sqlite_engine.connect() as conn:
        html = write_html(build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS), tmp_path / "journey.html")

    dom = browser.dom(html)
    for table_id in ('id="entries"', 'id="outcomes"', 'id="exits"', 'id="time"', 'id="money"', 'id="uplift"'):
        assert table_id in dom
    assert dom.count("<svg") >= 2, "entries per step and the uplift interval"
    assert "The whole journey against its control group" in dom

    m = measure(browser, html, width)
    assert m["inner"] == width, m
    assert not m["page_scrolls"], "the page itself is wider than the window: its right side is cut"
    headers = [t["header"] for t in m["tables"]]
    assert "converted" in headers and "cost" in headers, "both groups of per-step figures are shown"
    for t in m["tables"]:  # every table's last column on screen, or in a box that scrolls and says so
        if t["scrolls"]:
            assert "sideways" in t["hint"], t
        else:
            assert t["right"] <= m["viewport"], t
    if width >= 1280:
        assert not [t for t in m["tables"] if t["scrolls"]], m["tables"]
    else:
        assert [t for t in m["tables"] if t["scrolls"]], "the per-step tables are wider than a phone"
    browser.screenshot(html, tmp_path / f"journey-{width}.png", width=width)
    assert browser.network_requests == []


def test_every_table_sits_in_a_scroller(sqlite_engine, settings, tmp_path):
    """Even the short tables: a long step name or reason must scroll inside its box, not the page."""
    import re

    with sqlite_engine.begin() as conn:
        make_journey(conn, n=120, seed=22)
    with sqlite_engine.connect() as conn:
        html = write_html(
            build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS), tmp_path / "j.html"
        ).read_text()
    tables = re.findall(r"(.{0,40})<table", html)
    assert tables and all(re.search(r'<div class="scroll[ "]', before) for before in tables), tables
