"""Small inline SVG charts for the HTML report.

Written here rather than with a charting library because the report must be
one self-contained file that loads nothing from the network: plotting
libraries either pull JavaScript from a CDN or embed megabytes of it, while
three chart shapes (bars, a time series, intervals) are a few dozen lines of SVG.
"""

from __future__ import annotations

from html import escape

PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2"]


def bars(items: list[tuple[str, float]], width: int = 640, fmt: str = "{:,.0f}", title: str = "") -> str:
    """Horizontal bars, one per (label, value)."""
    if not items:
        return ""
    row, label_w = 26, 190
    top = max(v for _, v in items) or 1
    height = row * len(items) + 10
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(items):
        y = i * row + 5
        w = max(1.0, (width - label_w - 90) * value / top)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="12">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row - 8}" rx="3" fill="{PALETTE[0]}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="12">{escape(fmt.format(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def series(
    points: dict[str, list[tuple[str, int]]], width: int = 640, height: int = 220, title: str = ""
) -> str:
    """Lines over a shared ordered x axis (e.g. hours since the send), one per named series."""
    xs = sorted({x for pts in points.values() for x, _ in pts})
    if not xs:
        return ""
    pad_l, pad_b, pad_t = 40, 40, 10
    top = max((v for pts in points.values() for _, v in pts), default=1) or 1
    step = (width - pad_l - 10) / max(1, len(xs) - 1)

    def xy(x: str, v: int) -> str:
        return f"{pad_l + xs.index(x) * step:.1f},{height - pad_b - (height - pad_b - pad_t) * v / top:.1f}"

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 10}" y2="{height - pad_b}" stroke="#999"/>',
        f'<text x="4" y="{pad_t + 10}" font-size="11">{top}</text>',
    ]
    for i, (name, pts) in enumerate(sorted(points.items())):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(xy(x, v) for x, v in sorted(pts))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
            f'<text x="{pad_l + 8 + 110 * i}" y="{height - 8}" font-size="12" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    parts.append(
        f'<text x="{pad_l}" y="{height - pad_b + 14}" font-size="10">{escape(xs[0])}</text>'
        f'<text x="{width - 10}" y="{height - pad_b + 14}" font-size="10" text-anchor="end">'
        f"{escape(xs[-1])}</text></svg>"
    )
    return "".join(parts)


def intervals(items: list[tuple[str, float, float, float]], width: int = 640, title: str = "") -> str:
    """Point estimates with 95% intervals around a zero line, one per (label, est, low, high), in %."""
    if not items:
        return ""
    row, label_w = 30, 150
    lo = min(min(low for _, _, low, _ in items), 0.0)
    hi = max(max(high for _, _, _, high in items), 0.0)
    span = (hi - lo) or 1.0
    plot_w = width - label_w - 20

    def x(v: float) -> float:
        return label_w + plot_w * (v - lo) / span

    height = row * len(items) + 20
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height - 15}" stroke="#999" '
        f'stroke-dasharray="4"/>',
    ]
    for i, (label, est, low, high) in enumerate(items):
        y = i * row + 15
        colour = PALETTE[1] if low > 0 else PALETTE[3] if high < 0 else PALETTE[2]
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 4}" text-anchor="end" font-size="12">{escape(label)}</text>'
            f'<line x1="{x(low):.1f}" y1="{y}" x2="{x(high):.1f}" y2="{y}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{x(est):.1f}" cy="{y}" r="5" fill="{colour}"/>'
            f'<text x="{x(est):.1f}" y="{y - 8}" font-size="11" text-anchor="middle">{est:+.2f} pts</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
