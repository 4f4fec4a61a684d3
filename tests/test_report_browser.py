"""The HTML report in a real browser: charts and tables present, nothing loaded from the network."""

from __future__ import annotations

import html as html_lib
import json
import re
from pathlib import Path

import pytest

from reporting.report import build_report
from reporting.report_render import write_html
from tests.browser import Browser
from tests.test_report import make_ledger

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


# A measuring script added to a copy of the report (the report itself has none): for every table,
# where its last header cell sits, and whether a box around it scrolls with a visible hint.
MEASURE = """<script>
const viewport = document.documentElement.clientWidth;
const found = [];
for (const table of document.querySelectorAll("table")) {
  const cells = table.querySelectorAll("tr:first-child > th");
  if (!cells.length) continue;
  const last = cells[cells.length - 1];
  let box = table.parentElement, scroller = null;
  for (; box && box !== document.body; box = box.parentElement) {
    const o = getComputedStyle(box).overflowX;
    if ((o === "auto" || o === "scroll") && box.scrollWidth > box.clientWidth) { scroller = box; break; }
  }
  const hint = scroller && scroller.previousElementSibling;
  found.push({
    table: table.id || table.className,
    header: last.textContent.trim(),
    right: last.getBoundingClientRect().right,
    scrolls: !!scroller,
    hint: hint && hint.getClientRects().length ? hint.textContent.trim() : "",
  });
}
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify({viewport, inner: window.innerWidth,
  page_scrolls: document.documentElement.scrollWidth > viewport, tables: found});
parent.document.body.appendChild(out);
</script>"""


def measure(browser: Browser, html: Path, width: int) -> dict:
    """Layout facts measured by JavaScript in Chromium, the report shown ``width`` px wide.

    Headless Chromium will not open a window narrower than 500 px, so the report is shown in
    an iframe of the given width (srcdoc: same origin, so its script can write the result out).
    """
    page = html.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>")
    frame = html.with_name(f"frame-{width}.html")
    frame.write_text(
        '<!doctype html><html><body style="margin:0">'
        f'<iframe style="border:0;width:{width}px;height:1600px" srcdoc="{html_lib.escape(page)}"></iframe>'
        "</body></html>",
        encoding="utf-8",
    )
    window = max(width, 500)
    dom = browser._run(frame, "--dump-dom", "--virtual-time-budget=2000", width=window)
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.mark.parametrize("width", [375, 1280])
def test_wide_tables_fit_or_scroll_visibly(browser, sqlite_engine, settings, tmp_path, width):
    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=300, key="winback:1")
        make_ledger(conn, n=300, seed=8, key="winback:2")
    with sqlite_engine.connect() as conn:
        html = write_html(build_report(conn, "winback"), tmp_path / "winback.html")

    m = measure(browser, html, width)
    assert m["inner"] == width, m
    assert not m["page_scrolls"], "the page itself is wider than the window: its right side is cut"
    revenue = [t for t in m["tables"] if t["header"] == "revenue"]
    assert len(revenue) == 3, "per variant, channel and locale each show revenue"
    for t in m["tables"]:  # every table's last column on screen, or in a box that scrolls and says so
        if t["scrolls"]:
            assert "sideways" in t["hint"], t
        else:
            assert t["right"] <= m["viewport"], t
    if width >= 1280:  # a desktop window shows every table whole, no scrolling
        assert not [t for t in m["tables"] if t["scrolls"]], m["tables"]
    assert browser.network_requests == []
