"""One cumulative energy curve per device, and the energy of a window on it.

A hardware energy counter is not the energy *now*: its value is the energy at
its last update, and updates come every T (NVML: about 100 ms, 20 ms on some
boards; RAPL: about 1 ms) at a phase of their own. Reading the counter at a
window's edges therefore mis-states the window by up to one update's energy at
each edge. :class:`EnergyCurve` keeps what is actually known:

* **Knots.** Each counter value is the true energy at its update instant. The
  sampler sees an update as a change between two reads, so the instant lies in
  that interval; the period and phase fitted to all the changes seen so far
  (``t = phase + n * period``) narrow it to well under a millisecond. Nothing
  about T is assumed beyond the meter's declared upper bound.
* **The shape between knots.** Between two knots the energy grew by a known
  amount; where it went inside the interval comes from a power timeline (the
  instant-power field: each sample is the mean power over the interval before
  its own timestamp) or, without one, is spread evenly.
* **Bounds.** Power is never below ``p_lo`` nor above ``p_hi`` (the board's
  limit), and the counter never runs backwards, so the energy of any part of an
  update interval lies in a computable range. Every window carries the half
  width of the range its estimate can be wrong by.

Every window of a device is ``E(t1) - E(t0)`` of the same curve, so adjacent
windows (prefill, decode) add up to the window that spans them, exactly.
Devices without a counter integrate their power timeline instead, with the
same bounds on the partial intervals at the edges.
"""

from __future__ import annotations

import bisect
import collections
import math
import statistics
from dataclasses import dataclass
from typing import Deque, Optional

# Knots kept per device: at 50 updates/s, more than an hour.
MAX_KNOTS = 200_000
MAX_INTERVALS = 400_000
# Changes used for the period/phase fit: recent enough to follow drift.
FIT_WINDOW = 64
FIT_MIN = 4
# A fitted grid is trusted when this share of recent updates falls inside the
# interval in which each was seen.
FIT_AGREEMENT = 0.9
# The shaped split's own error estimate is multiplied by this before use.
SHAPE_SAFETY = 2.0
# How stale a polled power average can be when read.
POLLED_REFRESH_S = 0.1
# Relative noise assumed for one instant-power sample.
DEFAULT_SAMPLE_NOISE = 0.05


@dataclass(frozen=True)
class Knot:
    t: float
    uncertainty: float
    joules: float


@dataclass(frozen=True)
class WindowEnergy:
    """Energy of ``[t0, t1]`` on one curve and the half width of its error range."""

    joules: float
    bound: float
    settled: bool = True
    shaped: bool = False


class PowerTimeline:
    """Mean power over consecutive intervals.

    A sample at ``t_end`` is the mean power over the interval before it: of
    ``span`` seconds when the sensor averages over a known span (then samples
    closer together than the span overlap and only one in each span is kept),
    otherwise since the previous sample.
    """

    def __init__(self, span_s: Optional[float] = None, noise: float = DEFAULT_SAMPLE_NOISE,
                 local_limits: bool = True) -> None:
        self.span_s = span_s
        self.noise = noise
        # Whether power inside an interval stays near its neighbours' means
        # (short averaging, as the instant field's 20 ms); long averages (the
        # 1 s polled power) hide bursts, and only the device's limits hold.
        self.local_limits = local_limits
        self.limits: tuple[float, float] = (0.0, math.inf)
        # Plain lists (bisect needs O(1) indexing), trimmed by half when full.
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.watts: list[float] = []
        # Cumulative energy at each interval's start; runs of contiguous intervals share a run id.
        self.cum: list[float] = []
        self.run: list[int] = []
        self._last_end: Optional[float] = None
        self._runs = 0

    def add(self, t_end: float, watts: float) -> None:
        last = self._last_end
        if last is not None and t_end <= last + 1e-9:
            return  # the same sample read twice, or out of order
        span = self.span_s
        if last is None:
            self._last_end = t_end
            if span is None:
                return  # the first sample's interval is unknown
            start = t_end - span
        else:
            if span is not None and t_end - last < 0.75 * span:
                return  # overlaps the kept sample's span
            gap_limit = 2.0 * span if span is not None else 0.5
            start = last if t_end - last <= gap_limit else t_end - (span if span is not None else 0.0)
            self._last_end = t_end
            if start >= t_end:
                return
        contiguous = bool(self.ends) and abs(self.ends[-1] - start) < 1e-9
        if not contiguous:
            self._runs += 1
        cum = self.cum[-1] + self.watts[-1] * (self.ends[-1] - self.starts[-1]) if contiguous else 0.0
        self.starts.append(start)
        self.ends.append(t_end)
        self.watts.append(watts)
        self.cum.append(cum)
        self.run.append(self._runs)
        if len(self.ends) > MAX_INTERVALS:
            for column in (self.starts, self.ends, self.watts, self.cum, self.run):
                del column[: MAX_INTERVALS // 2]

    def __len__(self) -> int:
        return len(self.ends)

    def _index(self, t: float) -> int:
        """Index of the interval containing ``t`` (start < t <= end), or -1."""
        ends = self.ends
        i = bisect.bisect_left(ends, t)
        if i < len(ends) and self.starts[i] <= t:
            return i
        return -1

    def covers(self, a: float, b: float) -> bool:
        i, j = self._index(a), self._index(b)
        return i >= 0 and j >= 0 and self.run[i] == self.run[j]

    def cumulative(self, t: float, cut: bool = False) -> float:
        """Energy of the timeline up to ``t``, from the start of ``t``'s run.

        With ``cut``, ``t`` is taken to be where the power changed (a window
        edge: the device was synchronised there, its work began or ended): the
        interval's known energy is split as its neighbours' powers on either
        side suggest, instead of evenly.
        """
        i = self._index(t)
        start, end, watts = self.starts[i], self.ends[i], self.watts[i]
        if not cut or not start < t < end:
            return self.cum[i] + watts * (t - start)
        run = self.run[i]
        left = self.watts[i - 1] if i > 0 and self.run[i - 1] == run else watts
        right = self.watts[i + 1] if i + 1 < len(self.ends) and self.run[i + 1] == run else watts
        weighted = left * (t - start) + right * (end - t)
        if weighted <= 0:
            return self.cum[i] + watts * (t - start)
        return self.cum[i] + watts * (end - start) * left * (t - start) / weighted

    def integral(self, a: float, b: float) -> float:
        return self.cumulative(b) - self.cumulative(a)

    def partial_error(self, t: float) -> float:
        """How wrong the energy up to ``t`` can be inside the interval holding ``t``.

        The interval's mean is known, not where in it the power went: with power
        between its neighbours' lowest and highest, the energy before ``t`` lies
        in a range around the evenly spread estimate.
        """
        i = self._index(t)
        if i < 0:
            return math.inf
        if self.local_limits:
            lo_i, hi_i = max(i - 1, 0), min(i + 1, len(self.ends) - 1)
            nearby = [self.watts[k] for k in range(lo_i, hi_i + 1) if self.run[k] == self.run[i]]
            p_lo, p_hi = min(nearby) * (1 - self.noise), max(nearby) * (1 + self.noise)
        else:
            p_lo, p_hi = self.limits
        length = self.ends[i] - self.starts[i]
        total = self.watts[i] * length
        before = t - self.starts[i]
        return _box_error(total, length, before, p_lo, p_hi)

    def noise_error(self, a: float, b: float) -> float:
        """Two standard deviations of the sample noise summed over ``[a, b]``."""
        i, j = self._index(a), self._index(b)
        if i < 0 or j < 0:
            return math.inf
        square = sum((self.watts[k] * (self.ends[k] - self.starts[k])) ** 2 for k in range(i, j + 1))
        return 2.0 * self.noise * math.sqrt(square)

    def max_watts(self, a: float, b: float) -> Optional[float]:
        i, j = self._index(a), self._index(b)
        if i < 0 or j < 0:
            return None
        return max(self.watts[k] for k in range(i, j + 1))


def _box_error(total: float, length: float, before: float, p_lo: float, p_hi: float) -> float:
    """Largest error of ``total * before / length`` as the energy of the first ``before`` s."""
    low, high = _sub_range(total, length, 0.0, before, p_lo, p_hi)
    estimate = total * before / length if length > 0 else 0.0
    return max(estimate - low, high - estimate, 0.0)


class _Knots:
    """Knots of a curve computed on demand (a window needs four of them)."""

    def __init__(self, curve: "EnergyCurve") -> None:
        self._curve = curve
        self._cache: dict[int, Knot] = {}

    def __len__(self) -> int:
        return len(self._curve._hi)

    def __getitem__(self, i: int) -> Knot:
        if i < 0:
            i += len(self)
        if i not in self._cache:
            self._cache[i] = self._curve.knot(i)
        return self._cache[i]


class EnergyCurve:
    """The cumulative energy of one device over time.

    ``max_period_s`` is the longest a counter value can be stale (the declared
    update period; the fitted one replaces it once known). ``p_hi`` is the most
    the device can draw (its power limit), None when unknown.
    """

    def __init__(
        self,
        max_period_s: float,
        p_hi: Optional[float] = None,
        power: Optional[PowerTimeline] = None,
        counter: bool = True,
    ) -> None:
        self.max_period_s = max_period_s
        self.p_hi_limit = p_hi
        self.power = power
        self.counter = counter
        # Counter updates as parallel lists: the interval each was seen in, its value.
        self._lo: list[float] = []
        self._hi: list[float] = []
        self._joules: list[float] = []
        self._seen: list[float] = []
        self._last_read: Optional[float] = None
        self._read_gaps: Deque[float] = collections.deque(maxlen=FIT_WINDOW)
        self._fit: Optional[tuple[float, float, float]] = None
        self._fit_stale = True
        self._min_step_w: Optional[float] = None
        self._max_step_w: Optional[float] = None

    # -- observations ------------------------------------------------------------
    def add_counter(self, t: float, joules: float) -> None:
        """A counter read at ``t``: the energy at its last update."""
        if self._last_read is not None:
            self._read_gaps.append(t - self._last_read)
        if self._joules and joules == self._joules[-1]:
            self._seen[-1] = t
        elif not self._joules:
            self._append(t - self.max_period_s, t, joules)
        else:
            lo = self._last_read if self._last_read is not None else t - self.max_period_s
            # Loose limits on the device's power, from the mean power between updates.
            seconds = (lo + t) / 2 - (self._lo[-1] + self._hi[-1]) / 2
            if seconds > 0 and joules >= self._joules[-1] and len(self._joules) > 1:
                mean = (joules - self._joules[-1]) / seconds
                self._min_step_w = mean if self._min_step_w is None else min(self._min_step_w, mean)
                self._max_step_w = mean if self._max_step_w is None else max(self._max_step_w, mean)
            self._append(lo, t, joules)
            self._fit_stale = True
        self._last_read = t

    def _append(self, lo: float, hi: float, joules: float) -> None:
        self._lo.append(lo)
        self._hi.append(hi)
        self._joules.append(joules)
        self._seen.append(hi)
        if len(self._hi) > MAX_KNOTS:
            for column in (self._lo, self._hi, self._joules, self._seen):
                del column[: MAX_KNOTS // 2]

    def add_power(self, t_end: float, watts: float) -> None:
        if self.power is not None:
            self.power.add(t_end, watts)

    # -- period and phase ---------------------------------------------------------
    def period(self) -> Optional[float]:
        fit = self._grid()
        return fit[1] if fit else None

    def _aliased(self, diffs: list[float]) -> bool:
        """Changes at (nearly) every read: the counter may update faster than we read."""
        if not self._read_gaps:
            return True
        return statistics.median(diffs) < 1.5 * statistics.median(self._read_gaps)

    def _grid(self) -> Optional[tuple[float, float, float]]:
        """``(phase, period, uncertainty)`` fitted to recent updates, or None."""
        if not self._fit_stale:
            return self._fit
        self._fit_stale = False
        self._fit = None
        first = max(1, len(self._hi) - FIT_WINDOW)
        lows, highs = self._lo[first:], self._hi[first:]
        if len(highs) < FIT_MIN:
            return None
        mids = [(lo + hi) / 2 for lo, hi in zip(lows, highs)]
        diffs = [b - a for a, b in zip(mids, mids[1:])]
        if self._aliased(diffs):
            return None
        guess = statistics.median(diffs)
        if guess <= 0:
            return None
        index = [0]
        for d in diffs:
            index.append(index[-1] + max(1, round(d / guess)))
        n = len(mids)
        mean_i = sum(index) / n
        mean_m = sum(mids) / n
        sxx = sum((i - mean_i) ** 2 for i in index)
        if sxx <= 0:
            return None
        period = sum((i - mean_i) * (m - mean_m) for i, m in zip(index, mids)) / sxx
        phase = mean_m - period * mean_i
        tol = 1e-4
        inside = sum(lo - tol <= phase + i * period <= hi + tol for lo, hi, i in zip(lows, highs, index))
        if inside < FIT_AGREEMENT * n:
            return None
        residuals = [m - (phase + i * period) for m, i in zip(mids, index)]
        rms = math.sqrt(sum(r * r for r in residuals) / n)
        uncertainty = max(3.0 * rms / math.sqrt(n), 1e-4)
        # Every update lies inside the interval it was seen in: the phases
        # consistent with all of them narrow the fit further.
        low = max(lo - i * period for lo, i in zip(lows, index))
        high = min(hi - i * period for hi, i in zip(highs, index))
        if low <= high:
            phase = min(max(phase, low), high)
            uncertainty = max(min(uncertainty, max(phase - low, high - phase)), 1e-4)
        self._fit = (phase, period, uncertainty)
        return self._fit

    def knot(self, i: int) -> Knot:
        """Where update ``i`` most likely happened, and how sure that is."""
        fit = self._grid()
        stale = fit[1] * 1.2 if fit else self.max_period_s
        hi = self._hi[i]
        # A value is never staler than the declared period, nor (once the
        # period is fitted) than that period when it was still seen.
        lo = max(self._lo[i], hi - self.max_period_s)
        if self._seen[i] - stale <= hi:  # else the counter stalled: the rule does not hold
            lo = max(lo, self._seen[i] - stale)
        if fit is not None:
            phase, period, unc = fit
            guess = phase + round(((lo + hi) / 2 - phase) / period) * period
            if lo <= guess <= hi:
                return Knot(guess, min(unc, (hi - lo) / 2), self._joules[i])
        return Knot((lo + hi) / 2, max((hi - lo) / 2, 0.0), self._joules[i])

    def _knot_before(self, t: float) -> int:
        """Index of the last update whose instant is at or before ``t`` (-1: none)."""
        i = bisect.bisect_left(self._hi, t)
        for k in (i + 1, i, i - 1):  # an instant lies in [lo, hi]: only neighbours can qualify
            if 0 <= k < len(self._hi) and self.knot(k).t <= t:
                return k
        return i - 2 if i - 2 >= 0 else -1

    # -- power limits -----------------------------------------------------------------
    def power_limits(self, a: float, b: float) -> tuple[float, float]:
        """``(p_lo, p_hi)``: what the device's power cannot leave near ``[a, b]``."""
        p_lo = 0.5 * self._min_step_w if self._min_step_w else 0.0
        if self.p_hi_limit:
            return p_lo, self.p_hi_limit
        # No board limit known: a generous multiple of the most power seen.
        candidates = [3.0 * (self._max_step_w or 0.0)]
        if self.power is not None and len(self.power) and self.power.covers(a, b):
            top = self.power.max_watts(a, b)
            if top is not None:
                candidates.append(1.5 * top)
        return p_lo, max(candidates) or math.inf

    # -- windows -----------------------------------------------------------------
    def settled(self, t: float) -> bool:
        """Whether the counter has updated after ``t`` (or power is known past it)."""
        if not self.counter:
            return self.power is not None and len(self.power) > 0 and self.power.ends[-1] >= t
        after = [hi for lo, hi in zip(self._lo[-4:], self._hi[-4:]) if lo >= t]
        if not after:
            return False
        # The power timeline must reach past that update too, or the step
        # holding ``t`` could only be split evenly.
        power = self.power
        if power is not None and len(power):
            return power.ends[-1] >= after[0]
        return True

    def window(self, t0: float, t1: float) -> WindowEnergy:
        if t1 < t0:
            t0, t1 = t1, t0
        if not self.counter:
            return self._integrated_window(t0, t1)
        if not self._hi:
            return WindowEnergy(0.0, math.inf, settled=False)
        i0, i1 = self._knot_before(t0), self._knot_before(t1)
        settled = 0 <= i0 and i1 + 1 < len(self._hi)
        knots = _Knots(self)
        p_lo, p_hi = self.power_limits(t0, t1)
        if i0 == i1:
            parts = [self._part(knots, i0, t0, t1, p_lo, p_hi)]
            inner = 0.0
        else:
            parts = [self._part(knots, i0, t0, None, p_lo, p_hi), self._part(knots, i1, None, t1, p_lo, p_hi)]
            inner = self._joules[i1] - self._joules[i0 + 1]
        estimate = inner + sum(p[0] for p in parts)
        low = inner + sum(p[1] for p in parts)
        high = inner + sum(p[2] for p in parts)
        shaped = all(p[3] for p in parts)
        model = sum(p[4] for p in parts)
        # Where the knots sit is known to within their uncertainty: energy
        # that could lie on either side of a knot (p[5] is already in joules).
        slack = sum(p[5] for p in parts)
        # Not clamped into [low, high]: every window must stay E(t1) - E(t0) of one curve.
        hard = max(estimate - low, high - estimate) + slack
        bound = min(hard, SHAPE_SAFETY * model + slack) if shaped and settled else hard
        return WindowEnergy(estimate, bound, settled=settled, shaped=shaped and bound < hard)

    def _part(self, knots: "_Knots", i: int, x: Optional[float], y: Optional[float],
              p_lo: float, p_hi: float) -> tuple[float, float, float, bool, float, float]:
        """The window's share of update interval ``i``, from ``x`` (or its start) to ``y`` (or its end).

        Returns the estimate, the range the truth lies in, whether the power
        timeline shaped it, the shaped split's own error and the knots' time
        uncertainty.
        """
        if i < 0 or i + 1 >= len(knots):
            # Before the first knot or after the last: only the power limits and
            # the recent mean power say anything.
            edge = knots[0] if i < 0 else knots[i]
            a = x if x is not None else edge.t
            b = y if y is not None else edge.t
            width = max(b - a, 0.0)
            watts = self._recent_watts(knots)
            slack = edge.uncertainty * (p_hi if math.isfinite(p_hi) else 0.0)
            return watts * width, p_lo * width, p_hi * width, False, math.inf, slack
        first, second = knots[i], knots[i + 1]
        a, b = first.t, second.t
        x = a if x is None else x
        y = b if y is None else y
        total = second.joules - first.joules
        estimate, shaped = self._share(a, b, total, x, y, cut_x=x > a, cut_y=y < b)
        if not shaped:
            estimate = self._split_by_neighbours(knots, i, total, x, y)
        low, high = _sub_range(total, b - a, x - a, y - x, p_lo, p_hi)
        cuts = tuple(c for c in (x, y) if a < c < b)
        model = self._shape_error(a, b, total, cuts) if shaped else math.inf
        # A knot off by u moves about u times the power around it across the cut.
        near = 2.0 * total / (b - a) if b > a else p_hi
        if self.power is not None and len(self.power) and self.power.covers(a, b):
            near = max(near, 1.5 * (self.power.max_watts(a, b) or 0.0))
        slack = (first.uncertainty + second.uncertainty) * min(near, p_hi)
        return estimate, low, high, shaped, model, slack

    def _split_by_neighbours(self, knots: "_Knots", i: int, total: float, x: float, y: float) -> float:
        """Without a power timeline: split at an edge as the neighbouring intervals' powers suggest.

        An edge is where the work changed, so the power on its left is taken
        to be the mean of the interval before, on its right that of the
        interval after; the interval's own energy is kept.
        """
        a, b = knots[i].t, knots[i + 1].t

        def mean(k: int) -> Optional[float]:
            if 0 <= k and k + 1 < len(knots) and knots[k + 1].t > knots[k].t:
                return (knots[k + 1].joules - knots[k].joules) / (knots[k + 1].t - knots[k].t)
            return None

        own = total / (b - a) if b > a else 0.0
        left = mean(i - 1) or own
        right = mean(i + 1) or own

        def before(c: float) -> float:
            if c <= a:
                return 0.0
            if c >= b:
                return total
            weighted = left * (c - a) + right * (b - c)
            return total * left * (c - a) / weighted if weighted > 0 else total * (c - a) / (b - a)

        return before(y) - before(x)

    def _recent_watts(self, knots: "_Knots") -> float:
        if len(knots) >= 2:
            a, b = knots[-2], knots[-1]
            if b.t > a.t:
                return (b.joules - a.joules) / (b.t - a.t)
        return self._max_step_w or 0.0

    def _share(self, a: float, b: float, total: float, x: float, y: float,
               cut_x: bool = False, cut_y: bool = False) -> tuple[float, bool]:
        """The part of ``total`` (spent over ``[a, b]``) that fell in ``[x, y]``.

        ``cut_x``/``cut_y``: that end is a window edge, where the power changed.
        """
        power = self.power
        if power is not None and len(power) and power.covers(a, b):
            whole = power.integral(a, b)
            if whole > 0:
                inside = power.cumulative(y, cut_y) - power.cumulative(x, cut_x)
                return total * inside / whole, True
        length = b - a
        return (total * (y - x) / length if length > 0 else 0.0), False

    def _shape_error(self, a: float, b: float, total: float, cuts: tuple[float, ...]) -> float:
        """How wrong a shaped split of one update interval can be at ``cuts``.

        Each cut, and each end of the interval, falls inside one power interval
        whose inside is unknown; sample noise adds its part.
        """
        power = self.power
        if power is None:
            return math.inf
        whole = power.integral(a, b)
        if whole <= 0:
            return math.inf
        wrong = sum(power.partial_error(c) for c in cuts)
        wrong += max(power.partial_error(a), power.partial_error(b))
        wrong += power.noise_error(a, b)
        return total * wrong / whole

    def _integrated_window(self, t0: float, t1: float) -> WindowEnergy:
        power = self.power
        if power is None or not len(power) or not power.covers(t0, t1):
            return WindowEnergy(0.0, math.inf, settled=False)
        power.limits = p_lo, p_hi = self.power_limits(t0, t1)
        joules = power.integral(t0, t1)
        if power.local_limits:
            bound = power.partial_error(t0) + power.partial_error(t1) + power.noise_error(t0, t1)
        else:
            # A long average (and its refresh delay) can hold energy from up to
            # a span before or after either edge: only the limits bound it.
            reach = (power.span_s or 0.0) / 2 + POLLED_REFRESH_S
            bound = 2 * (p_hi - p_lo) * min(reach, t1 - t0 + reach) + power.noise_error(t0, t1)
        return WindowEnergy(joules, bound, settled=True, shaped=True)


def _sub_range(total: float, length: float, offset: float, width: float,
               p_lo: float, p_hi: float) -> tuple[float, float]:
    """Range of the energy of ``[offset, offset + width]`` inside an interval of ``total`` J."""
    rest = max(length - width, 0.0)
    low = max(p_lo * width, total - p_hi * rest, 0.0)
    high = min(p_hi * width, total - p_lo * rest, total)
    if high < low:
        low, high = 0.0, total
    return low, high
