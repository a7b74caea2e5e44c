"""Comparing repeated measurements without flaking.

The change of a metric between a baseline and a current run is estimated on
the log scale by the Hodges-Lehmann estimator (the median of all pairwise
differences of log values: a median-based, outlier-robust shift). Its interval
uses the measurement noise *pooled over every test of the run*: noise is a
property of the meter and the machine, shared by all cases, and pooling gives
its estimate many degrees of freedom, where five repetitions of one test alone
give four. The interval is the estimate ± t × σ·√(f·(1/m + 1/n)), where f is
the variance factor of the Hodges-Lehmann shift under normal noise (π/3 for
large samples, a little more for small ones). These are the per-test and
per-suite changes the comparison table shows; the gate that fails a session
judges them together, at the level of the run (:mod:`.judgement`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, median
from typing import Iterable, Optional, Sequence

# Two-sided: each end is a one-sided 99.2% bound, so a gate on a metric that
# did not change fires at most 0.8% of the time even with a zero bound, while
# 5 repetitions at 5% noise still catch a 15% regression 95% of the time.
DEFAULT_CONFIDENCE = 0.984


@dataclass(frozen=True)
class Noise:
    """Pooled standard deviation of log values, and its degrees of freedom."""

    sigma: float
    df: int


@dataclass(frozen=True)
class Change:
    """Relative change current/baseline − 1 with its confidence interval."""

    estimate: float
    low: float
    high: float
    baseline: float  # median of the baseline values
    current: float   # median of the current values
    n_baseline: int
    n_current: int

    def beyond(self, bound: float) -> bool:
        """The whole interval is above ``bound``: a regression beyond it."""
        return self.low > bound

    def below(self, bound: float) -> bool:
        """The whole interval is below ``bound`` (where lower is worse)."""
        return self.high < bound


def pooled_noise(groups: Iterable[Sequence[float]]) -> Optional[Noise]:
    """Within-group spread of log values, pooled over groups with two or more values."""
    squares, df = 0.0, 0
    for group in groups:
        logs = [math.log(v) for v in group if v > 0]
        if len(logs) >= 2:
            mean = sum(logs) / len(logs)
            squares += sum((x - mean) ** 2 for x in logs)
            df += len(logs) - 1
    if df == 0:
        return None
    return Noise(math.sqrt(squares / df), df)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion; within 1% for df >= 3)."""
    z = NormalDist().inv_cdf(p)
    if df >= 1000:
        return z
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def _quantile_for(confidence: float, df: int) -> float:
    return t_quantile(1 - (1 - confidence) / 2, max(df, 1))


def _hl_variance_factor(m: int, n: int) -> float:
    """Var(Hodges-Lehmann shift) / (σ²(1/m + 1/n)) under normal noise.

    π/3 in the limit; small samples are noisier (by simulation: 1.10 at m = n = 5,
    1.09 at 10, 1.06 at 20), which the second term covers.
    """
    return math.pi / 3 + 0.8 / (m + n)


def relative_change(baseline: Sequence[float], current: Sequence[float], noise: Optional[Noise] = None,
                    confidence: float = DEFAULT_CONFIDENCE) -> Change:
    """How much ``current`` changed relative to ``baseline`` (0.1 = 10% more).

    Without ``noise`` the spread of these two samples alone is used. With no
    repetitions at all there is no interval: it collapses to the estimate.
    """
    if not baseline or not current:
        raise ValueError("both samples need at least one value")
    m, n = len(baseline), len(current)
    if any(v <= 0 for v in list(baseline) + list(current)):
        # Net energy can reach zero: compare medians directly, without an interval.
        base = median(baseline)
        estimate = (median(current) - base) / abs(base) if base else 0.0
        return Change(estimate, estimate, estimate, base, median(current), m, n)
    diffs = sorted(math.log(c) - math.log(b) for b in baseline for c in current)
    estimate = median(diffs)
    noise = noise or pooled_noise([baseline, current])
    if noise is None:
        low = high = estimate
    else:
        half = _quantile_for(confidence, noise.df) * noise.sigma * math.sqrt(_hl_variance_factor(m, n) * (1 / m + 1 / n))
        low, high = estimate - half, estimate + half
    return Change(math.expm1(estimate), math.expm1(low), math.expm1(high), median(baseline), median(current), m, n)


def total_change(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], noise: Optional[Noise],
                 confidence: float = DEFAULT_CONFIDENCE) -> Change:
    """Change of a sum over tests (a suite total): the sum of medians, by the delta method."""
    base_total = sum(median(b) for b, _ in pairs)
    current_total = sum(median(c) for _, c in pairs)
    if base_total <= 0 or current_total <= 0:
        estimate = (current_total - base_total) / abs(base_total) if base_total else 0.0
        return Change(estimate, estimate, estimate, base_total, current_total, len(pairs), len(pairs))
    estimate = math.log(current_total) - math.log(base_total)
    if noise is None:
        low = high = estimate
    else:
        # The median of n log-normal values has variance ≈ (π/2)σ²/n on the log scale.
        variance = 0.0
        for b, c in pairs:
            variance += (median(b) / base_total) ** 2 * math.pi / 2 * noise.sigma ** 2 / len(b)
            variance += (median(c) / current_total) ** 2 * math.pi / 2 * noise.sigma ** 2 / len(c)
        half = _quantile_for(confidence, noise.df) * math.sqrt(variance)
        low, high = estimate - half, estimate + half
    return Change(math.expm1(estimate), math.expm1(low), math.expm1(high), base_total, current_total,
                  len(pairs), len(pairs))
