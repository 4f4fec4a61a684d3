"""The HTML report in a real browser: charts and tables present, nothing loaded from the network."""

from __future__ import annotations

import pytest

from tests.browser import Browser
from tests.test_report import make_ledger
from tracking.report import build_report
from tracking.report_render import write_html

pytestmark = pytest.mark.browser


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def test_report_renders_offline_with_charts_and_tables(browser, sqlite_engine, settings, tmp_path):
    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=300)
    with sqlite_engine.connect() as conn:
        html = write_html(build_report(conn, "winback"), tmp_path / "winback.html")

    dom = browser.dom(html)
    assert dom.count("<svg") >= 3, "funnel, responses and uplift charts"
    for table_id in ('id="funnel"', 'id="uplift"', 'id="money"'):
        assert table_id in dom
    assert "Incrementality against the control group" in dom
    for width, name in ((375, "phone"), (1200, "desktop")):
        browser.screenshot(html, tmp_path / f"report-{name}.png", width=width)
    assert browser.network_requests == []


def test_the_network_detector_catches_a_fetch(browser, tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://cdn.example.test/pixel.png"></body></html>')
    browser.dom(page)
    assert any("cdn.example.test" in r for r in browser.network_requests)
