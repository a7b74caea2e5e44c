"""The meter interface and the window arithmetic every meter shares.

A meter exposes a cumulative energy reading. The runner reads it at the edges of
a window (after synchronising the device) and asks the meter to turn the two
readings into a :class:`PhaseEnergy`. Reading only at edges keeps the decode loop
free of sensor calls.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ..results import MEASURED, PhaseEnergy

Clock = Callable[[], float]


class MeterUnavailable(Exception):
    """The meter cannot be used on this machine (no sensor, no permission)."""


class MeterError(Exception):
    """A meter that worked stopped working in the middle of a run."""


@dataclass(frozen=True)
class Reading:
    """A cumulative energy reading.

    ``joules`` counts from an arbitrary origin fixed by the meter; only
    differences mean anything. ``watts`` is the power the sensor reported at
    read time, when it reports one; it lets short windows be attributed.
    ``parts`` holds the readings of the meters inside a composite.
    """

    t: float
    joules: float
    watts: Optional[float] = None
    parts: tuple["Reading", ...] = ()


class Meter(abc.ABC):
    """Base class of energy sources.

    Subclasses set ``name``, ``kind`` (``measured`` or ``estimated``) and
    ``resolution_s`` (the counter's update period: a shorter window cannot be
    read from the counter) and implement :meth:`read`.
    """

    name: str = "meter"
    kind: str = MEASURED
    resolution_s: float = 0.0

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start background work (samplers). Called before the first window."""

    def close(self) -> None:
        """Stop background work and release the sensor."""

    # -- reading ---------------------------------------------------------------
    @abc.abstractmethod
    def read(self) -> Reading:
        """A cumulative reading taken now."""

    def power_between(self, t0: float, t1: float) -> Optional[float]:
        """Mean power over ``[t0, t1]`` from a sampler, or None without one."""
        return None

    def describe(self) -> dict[str, Any]:
        """Where the numbers come from: shown in report headers and JSON."""
        return {"name": self.name, "kind": self.kind, "devices": self.devices()}

    def devices(self) -> list[str]:
        return []

    # -- arithmetic -------------------------------------------------------------
    def window(self, start: Reading, end: Reading, tokens: int = 0) -> PhaseEnergy:
        """Energy between two readings of this meter.

        A window at least as long as the counter's update period is the plain
        counter difference. A shorter one cannot be read from the counter (the
        difference is zero or a whole update period), so it is attributed from
        power × time: the sampler's mean power inside the window when there is a
        sampler, else the power the sensor reported at the two edges.
        """
        seconds = max(end.t - start.t, 0.0)
        counted = end.joules - start.joules
        if seconds >= self.resolution_s:
            return PhaseEnergy(counted, seconds, tokens)
        watts = self.power_between(start.t, end.t)
        method = "power-samples"
        if watts is None:
            edges = [w for w in (start.watts, end.watts) if w is not None]
            if edges:
                watts = sum(edges) / len(edges)
                method = "edge-power"
        if watts is None:
            return PhaseEnergy(counted, seconds, tokens, below_resolution=True, method="counter")
        return PhaseEnergy(watts * seconds, seconds, tokens, below_resolution=True, method=method)


class CompositeMeter(Meter):
    """Several meters read together (GPU + CPU): energies add up."""

    def __init__(self, meters: Sequence[Meter], clock: Clock = time.perf_counter) -> None:
        super().__init__(clock)
        self.meters = list(meters)
        self.name = "+".join(m.name for m in self.meters)
        self.kind = MEASURED if all(m.kind == MEASURED for m in self.meters) else "estimated"
        self.resolution_s = max(m.resolution_s for m in self.meters)

    def start(self) -> None:
        for meter in self.meters:
            meter.start()

    def close(self) -> None:
        for meter in self.meters:
            meter.close()

    def read(self) -> Reading:
        parts = tuple(m.read() for m in self.meters)
        watts = [p.watts for p in parts]
        return Reading(
            t=max(p.t for p in parts),
            joules=sum(p.joules for p in parts),
            watts=sum(watts) if None not in watts else None,  # type: ignore[arg-type]
            parts=parts,
        )

    def window(self, start: Reading, end: Reading, tokens: int = 0) -> PhaseEnergy:
        # Each meter attributes its own share with its own resolution.
        phases = [m.window(s, e, tokens) for m, s, e in zip(self.meters, start.parts, end.parts)]
        methods = sorted({p.method for p in phases if p.below_resolution})
        return PhaseEnergy(
            joules=sum(p.joules for p in phases),
            seconds=max(p.seconds for p in phases),
            tokens=tokens,
            below_resolution=any(p.below_resolution for p in phases),
            method="+".join(methods) if methods else "counter",
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
