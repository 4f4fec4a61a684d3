"""Incrementality statistics: treated vs control, with 95% confidence intervals.

Choices (and why):
- Conversion rate: difference of two independent proportions with a Newcombe
  hybrid score interval (method 10), which keeps its coverage for the small
  rates and small control groups typical of campaigns, where the Wald interval
  is too narrow; significance by the two-proportion z-test (pooled variance).
- Relative uplift: the ratio of rates, interval by the delta method on log(ratio).
- Revenue per customer: Welch's unequal-variance interval on the difference of
  means, from sums and sums of squares, because revenue is skewed and the two
  groups differ in size and variance.

"Conversions" here are what reporting.report passes: intention to treat, the
customers of each group who bought within the conversion window after the
(would-be) send, credited to a message or not; the minimums below apply to them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

Z95 = 1.959963984540054
MIN_CONTROL = 100  # below this many control customers no conclusion is drawn
MIN_EVENTS = 5  # ...nor with fewer conversions (window purchasers) than this in either group


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def contains_zero(self) -> bool:
        return self.low <= 0 <= self.high


@dataclass(frozen=True)
class Uplift:
    treated_n: int
    treated_conversions: int
    control_n: int
    control_conversions: int
    treated_rate: float
    control_rate: float
    absolute: Interval | None  # rate difference (treated - control)
    relative: Interval | None  # treated / control - 1
    p_value: float | None  # two-sided, two-proportion z-test
    revenue_per_customer: Interval | None  # treated mean - control mean, in currency units
    conclusion: str

    def as_dict(self) -> dict:
        return asdict(self)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for one proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval:
    """Newcombe's hybrid score interval for p1 - p2."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, low, high)


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    zstat = (x1 / n1 - x2 / n2) / se
    return float(2 * stats.norm.sf(abs(zstat)))


def relative_uplift(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    """treated/control - 1 with a delta-method interval on the log ratio; None if undefined."""
    if x1 == 0 or x2 == 0:
        return None
    ratio = (x1 / n1) / (x2 / n2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return Interval(ratio - 1, ratio * math.exp(-z * se) - 1, ratio * math.exp(z * se) - 1)


def welch_difference(
    sum1: float, sumsq1: float, n1: int, sum2: float, sumsq2: float, n2: int
) -> Interval | None:
    """Welch interval for mean1 - mean2 given sums and sums of squares."""
    if n1 < 2 or n2 < 2:
        return None
    m1, m2 = sum1 / n1, sum2 / n2
    v1 = max(0.0, (sumsq1 - n1 * m1 * m1) / (n1 - 1))
    v2 = max(0.0, (sumsq2 - n2 * m2 * m2) / (n2 - 1))
    se2 = v1 / n1 + v2 / n2
    if se2 == 0:
        return Interval(m1 - m2, m1 - m2, m1 - m2)
    df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1)) if v1 and v2 else n1 + n2 - 2
    t = float(stats.t.ppf(0.975, df))
    half = t * math.sqrt(se2)
    return Interval(m1 - m2, m1 - m2 - half, m1 - m2 + half)


def uplift(
    treated_n: int,
    treated_conversions: int,
    control_n: int,
    control_conversions: int,
    treated_revenue: tuple[float, float] = (0.0, 0.0),
    control_revenue: tuple[float, float] = (0.0, 0.0),
) -> Uplift:
    """Treated vs control; revenue tuples are (sum, sum of squares) per customer, in currency units."""
    tr = treated_conversions / treated_n if treated_n else 0.0
    cr = control_conversions / control_n if control_n else 0.0
    too_small = control_n < MIN_CONTROL or min(treated_conversions, control_conversions) < MIN_EVENTS
    if treated_n == 0 or control_n == 0:
        return Uplift(
            treated_n,
            treated_conversions,
            control_n,
            control_conversions,
            tr,
            cr,
            None,
            None,
            None,
            None,
            "no control group: incrementality cannot be measured",
        )
    absolute = newcombe_difference(treated_conversions, treated_n, control_conversions, control_n)
    p_value = two_proportion_p_value(treated_conversions, treated_n, control_conversions, control_n)
    revenue = welch_difference(
        treated_revenue[0], treated_revenue[1], treated_n, control_revenue[0], control_revenue[1], control_n
    )
    if too_small:
        conclusion = (
            f"control group too small to conclude ({control_n} customers, {control_conversions} conversions; "
            f"need at least {MIN_CONTROL} customers and {MIN_EVENTS} conversions in each group)"
        )
    elif p_value < 0.05:
        direction = "raised" if absolute.estimate > 0 else "lowered"
        conclusion = f"the campaign {direction} conversion significantly (p = {p_value:.3g})"
    else:
        conclusion = f"no significant difference from the control group (p = {p_value:.3g})"
    return Uplift(
        treated_n,
        treated_conversions,
        control_n,
        control_conversions,
        tr,
        cr,
        absolute,
        relative_uplift(treated_conversions, treated_n, control_conversions, control_n),
        p_value,
        revenue,
        conclusion,
    )
