"""The meter interface and the window arithmetic every meter shares.

A meter observes cumulative energy counters (and, where the sensor has one,
power) of one or more devices. The base class keeps one
:class:`~.curve.EnergyCurve` per device from those observations: from the
runner's reads at window edges (:meth:`Meter.mark`, after synchronising the
device) and, for counters that update slowly, from a background sampler. A
window is then ``E(t1) - E(t0)`` on each device's curve, with a bound on how
wrong it can be, once the counter has updated after the window's end. Meters
added through the hook get the same arithmetic: they only say what they read.
"""

from __future__ import annotations

import abc
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ..results import MEASURED, PhaseEnergy
from .curve import EnergyCurve, PowerTimeline, WindowEnergy
from .timebase import Clock, Timebase

# Methods a window's figure can come from (``PhaseEnergy.method``).
COUNTER = "counter"      # an energy counter, split at the edges by the power timeline or evenly
INSTANT = "instant"      # no counter: instant-power samples integrated
POLLED = "polled"        # no counter: averaged power polled and integrated
REPEATED = "repeat"      # repetitions of the phase in one long window, divided
DIFFERENCE = "difference"  # the whole generation less a repeated prefill
READ = "read"            # a meter whose reading is exact when read (CPU time)

# A window waits at most this many update periods for the counter to move past its end.
SETTLE_PERIODS = 3.0
SETTLE_MIN_S = 0.05


class MeterUnavailable(Exception):
    """The meter cannot be used on this machine (no sensor, no permission)."""


class MeterError(Exception):
    """A meter that worked stopped working in the middle of a run."""


@dataclass(frozen=True)
class Reading:
    """A meter's state at one instant (a window edge).

    ``joules`` counts from an arbitrary origin fixed by the meter; only
    differences mean anything, and for counters that update slowly the
    difference of two readings is *not* a window's energy (use
    :meth:`Meter.window`). ``watts`` is the power the sensor reported, when it
    reports one. ``parts`` holds the readings of the meters inside a composite.
    """

    t: float
    joules: float
    watts: Optional[float] = None
    parts: tuple["Reading", ...] = ()


@dataclass(frozen=True)
class Sample:
    """One observation of one device.

    ``joules`` is a cumulative counter's value (None: the device has none).
    ``watts`` is mean power over the interval ending at ``watts_t`` (the
    sensor's own timestamp when it gives one, else ``t``).
    """

    device: str
    t: float
    joules: Optional[float] = None
    watts: Optional[float] = None
    watts_t: Optional[float] = None


@dataclass(frozen=True)
class DeviceSpec:
    """How a device's observations become a curve."""

    counter: bool = True
    power_span_s: Optional[float] = None  # a power sample averages this long (None: since the previous)
    power_limit_w: Optional[float] = None
    power_method: str = INSTANT  # the method of a device without a counter


@dataclass(frozen=True)
class ShortWindows:
    """How phases too short for the counter are measured (``--energy-short-windows``).

    ``auto`` repeats a phase when the bound of its own window exceeds
    ``max_bound`` of its energy; ``repeat`` always repeats prefills (and short
    generations); ``split`` never repeats.
    """

    mode: str = "auto"
    max_bound: float = 0.02
    min_repeat_s: float = 1.0
    max_repeats: int = 2000


class Meter(abc.ABC):
    """Base class of energy sources.

    Subclasses set ``name``, ``kind`` (``measured`` or ``estimated``) and
    ``resolution_s``, the longest a reading can be stale: 0 for a reading that
    is exact when read, the counter's update period otherwise (an upper bound;
    the actual period is estimated). A one-device meter implements
    :meth:`read`; a meter of several devices implements :meth:`observe`.
    ``sample_hz`` above 0 samples in the background (what a slow counter
    needs to place its updates in time).
    """

    name: str = "meter"
    kind: str = MEASURED
    resolution_s: float = 0.0
    sample_hz: float = 0.0

    def __init__(self, clock: Optional[Clock] = None, timebase: Optional[Timebase] = None) -> None:
        self.timebase = timebase or Timebase(clock)
        self.clock = self.timebase.now
        self.short_windows = ShortWindows()
        self._curves: dict[str, EnergyCurve] = {}
        self._curve_lock = threading.Lock()
        self._stop_sampler: Optional[Callable[[], None]] = None
        # Spans of extra work (repetitions) that no window is billed for.
        self._excluded: list[tuple[Reading, Reading]] = []
        self.notices: list[str] = []

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start background sampling. Called before the first window."""
        if self._stop_sampler is None and self.sample_hz > 0 and self.resolution_s > 0:
            self._ingest(self.observe())
            self._stop_sampler = self.timebase.every(1.0 / self.sample_hz, self._tick, f"llm-energy-{self.name}")

    def close(self) -> None:
        """Stop background work and release the sensor."""
        if self._stop_sampler is not None:
            self._stop_sampler()
            self._stop_sampler = None

    def _tick(self) -> None:
        self._ingest(self.observe())

    # -- reading ---------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # read() and observe() are defined in terms of each other: a meter
        # supplies one of them (or mark(), as a composite does).
        if all(getattr(cls, name) is getattr(Meter, name) for name in ("read", "observe", "mark")):
            raise TypeError(f"{cls.__name__} must implement read() (one device) or observe() (several)")

    def read(self) -> Reading:
        """A cumulative reading taken now: one-device meters implement this; others mark an edge."""
        return self.mark()

    def observe(self) -> list[Sample]:
        """What every device shows now. The default wraps :meth:`read`."""
        reading = self.read()
        return [Sample(self.name, reading.t, reading.joules, reading.watts)]

    def device_spec(self, device: str) -> DeviceSpec:
        """How to treat a device's samples; meters with power-only devices override it."""
        return DeviceSpec()

    def device_label(self, device: str) -> str:
        """The name a device's share of a window goes by in reports (its sample key by default)."""
        return device

    def mark(self) -> Reading:
        """Observe now and return the edge of a window."""
        samples = self.observe()
        self._ingest(samples)
        joules = sum(s.joules for s in samples if s.joules is not None)
        watts = [s.watts for s in samples if s.watts is not None]
        t = max((s.t for s in samples), default=self.clock())
        return Reading(t=t, joules=joules, watts=sum(watts) if watts else None)

    def _ingest(self, samples: Sequence[Sample]) -> None:
        if self.resolution_s <= 0:
            return  # exact readings: windows are plain differences
        with self._curve_lock:
            for sample in samples:
                curve = self._curves.get(sample.device)
                if curve is None:
                    curve = self._curves[sample.device] = self._new_curve(sample.device)
                if sample.joules is not None and curve.counter:
                    curve.add_counter(sample.t, sample.joules)
                if sample.watts is not None:
                    curve.add_power(sample.watts_t if sample.watts_t is not None else sample.t, sample.watts)

    def _new_curve(self, device: str) -> EnergyCurve:
        spec = self.device_spec(device)
        return EnergyCurve(
            max_period_s=self.resolution_s,
            p_hi=spec.power_limit_w,
            power=PowerTimeline(spec.power_span_s, local_limits=spec.power_method != POLLED),
            counter=spec.counter,
        )

    def update_period(self) -> Optional[float]:
        """The longest fitted counter update period over devices (None: not known yet)."""
        with self._curve_lock:
            periods = [c.period() for c in self._curves.values() if c.counter]
        known = [p for p in periods if p]
        return max(known) if known else None

    def next_update(self, t: float) -> Optional[float]:
        """When the slowest counter is next expected to update after ``t`` (None: unknown)."""
        with self._curve_lock:
            grids = [c._grid() for c in self._curves.values() if c.counter]
        grids = [g for g in grids if g]
        if not grids:
            return None
        phase, period, _ = max(grids, key=lambda g: g[1])
        return phase + math.ceil((t - phase) / period) * period

    def describe(self) -> dict[str, Any]:
        """Where the numbers come from: shown in report headers and JSON."""
        info: dict[str, Any] = {"name": self.name, "kind": self.kind, "devices": self.devices()}
        period = self.update_period()
        if period:
            info["update_period_s"] = round(period, 6)
        return info

    def devices(self) -> list[str]:
        return []

    # -- arithmetic -------------------------------------------------------------
    def exclude(self, start: Reading, end: Reading) -> None:
        """Bill no window for the energy between two readings (the repetitions' extra work)."""
        self._excluded.append((start, end))

    def settle(self, t: float) -> bool:
        """Wait until every counter has updated after ``t``; False if one never did."""
        if self.resolution_s <= 0:
            return True
        limit = max(SETTLE_PERIODS * (self.update_period() or self.resolution_s), SETTLE_MIN_S)
        deadline = self.clock() + limit
        step = min(max(self.resolution_s / 4, 0.0005), 0.01)
        # Also bounded in tries: a clock that does not move (a test's) cannot hang it.
        for _ in range(int(limit / step) + 2):
            if self._stop_sampler is None:
                self._ingest(self.observe())  # no sampler: look ourselves
            with self._curve_lock:
                done = all(c.settled(t) for c in self._curves.values())
            if done or self.clock() >= deadline:
                return done
            self.timebase.sleep(step)
        return False

    def window(self, start: Reading, end: Reading, tokens: int = 0) -> PhaseEnergy:
        """Energy between two edges: one curve per device, with its bound.

        Repetitions measured in between (:meth:`exclude`) are taken out, so the
        extra work is never billed to the window that contains it.
        """
        t0, t1 = start.t, end.t
        inside = [(a, b) for a, b in self._excluded if t0 <= a.t and b.t <= t1]
        excluded = [(a.t, b.t) for a, b in inside]
        seconds = max(t1 - t0, 0.0) - sum(b - a for a, b in excluded)
        if self.resolution_s <= 0:
            joules = end.joules - start.joules - sum(b.joules - a.joules for a, b in inside)
            return PhaseEnergy(joules, seconds, tokens, method=READ, bound_j=0.0 if self.kind == MEASURED else None)
        self.settle(t1)
        with self._curve_lock:
            curves = dict(self._curves)
            parts = [(device, curve.window(t0, t1)) for device, curve in curves.items()]
            for a, b in excluded:
                parts += [(device, _negate(curve.window(a, b))) for device, curve in curves.items()]
        joules = sum(p.joules for _, p in parts)
        bound = sum(p.bound for _, p in parts)
        per_device: dict[str, float] = {}
        for device, part in parts:
            label = self.device_label(device)
            per_device[label] = per_device.get(label, 0.0) + part.joules
        methods = {self.device_spec(d).power_method if not curves[d].counter else COUNTER for d, _ in parts}
        period = self.update_period() or self.resolution_s
        return PhaseEnergy(
            joules=joules,
            seconds=seconds,
            tokens=tokens,
            below_resolution=seconds < 2 * period,
            method="+".join(sorted(methods)) or COUNTER,
            bound_j=bound if math.isfinite(bound) else None,
            devices=per_device,
        )


def _negate(window: WindowEnergy) -> WindowEnergy:
    return WindowEnergy(-window.joules, window.bound, window.settled, window.shaped)


class CompositeMeter(Meter):
    """Several meters read together (GPU + CPU): energies and bounds add up."""

    def __init__(self, meters: Sequence[Meter], clock: Optional[Clock] = None) -> None:
        super().__init__(clock, timebase=meters[0].timebase if meters else None)
        self.meters = list(meters)
        self.name = "+".join(m.name for m in self.meters)
        self.kind = MEASURED if all(m.kind == MEASURED for m in self.meters) else "estimated"
        self.resolution_s = max(m.resolution_s for m in self.meters)

    @property  # type: ignore[override]
    def short_windows(self) -> ShortWindows:
        return self.meters[0].short_windows if self.meters else ShortWindows()

    @short_windows.setter
    def short_windows(self, value: ShortWindows) -> None:
        for meter in getattr(self, "meters", []):
            meter.short_windows = value

    def start(self) -> None:
        for meter in self.meters:
            meter.start()

    def close(self) -> None:
        for meter in self.meters:
            meter.close()

    def mark(self) -> Reading:
        parts = tuple(m.mark() for m in self.meters)
        watts = [p.watts for p in parts]
        return Reading(
            t=max(p.t for p in parts),
            joules=sum(p.joules for p in parts),
            watts=sum(watts) if None not in watts else None,  # type: ignore[arg-type]
            parts=parts,
        )

    def exclude(self, start: Reading, end: Reading) -> None:
        for meter, s, e in zip(self.meters, start.parts, end.parts):
            meter.exclude(s, e)

    def update_period(self) -> Optional[float]:
        periods = [p for p in (m.update_period() for m in self.meters) if p]
        return max(periods) if periods else None

    def next_update(self, t: float) -> Optional[float]:
        slowest = max(self.meters, key=lambda m: m.update_period() or 0.0)
        return slowest.next_update(t)

    def window(self, start: Reading, end: Reading, tokens: int = 0) -> PhaseEnergy:
        # Each meter attributes its own share on its own curves.
        phases = [m.window(s, e, tokens) for m, s, e in zip(self.meters, start.parts, end.parts)]
        bounds = [p.bound_j for p in phases]
        return PhaseEnergy(
            joules=sum(p.joules for p in phases),
            seconds=max(p.seconds for p in phases),
            tokens=tokens,
            below_resolution=any(p.below_resolution for p in phases),
            method="+".join(sorted({p.method for p in phases})),
            bound_j=sum(bounds) if None not in bounds else None,  # type: ignore[arg-type]
            devices={d: j for p in phases for d, j in p.devices.items()},
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "devices": self.devices(),
            "parts": [m.describe() for m in self.meters],
        }

    def devices(self) -> list[str]:
        return [d for m in self.meters for d in m.devices()]

    @property
    def notices(self) -> list[str]:  # type: ignore[override]
        return [n for m in getattr(self, "meters", []) for n in m.notices]

    @notices.setter
    def notices(self, value: list[str]) -> None:
        pass
