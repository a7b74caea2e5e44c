"""The sensorless meter: CPU time × watts per busy core, always *estimated*.

It is what a CPU-only CI runner has. The figure follows the work the process
does (every thread, plus children that have been waited for, such as sandbox
workers) rather than wall time, so a test that sleeps costs nothing and one that
keeps two cores busy costs twice as much per second.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Callable

from ..results import ESTIMATED
from .base import Clock, Meter, Reading

# A busy server or laptop core draws roughly 5-15 W at full load (package TDP
# divided by core count: 280 W / 28 cores, 45 W / 4 cores). 10 W is the middle
# of that range; teams with a known CPU should set --energy-cpu-watts.
DEFAULT_CPU_WATTS_PER_CORE = 10.0


def process_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and its reaped children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class EstimateMeter(Meter):
    name = "estimate"
    kind = ESTIMATED
    # CLOCK_PROCESS_CPUTIME_ID is read at nanosecond resolution: no window is
    # too short for this meter.
    resolution_s = 0.0

    def __init__(
        self,
        watts_per_core: float = DEFAULT_CPU_WATTS_PER_CORE,
        clock: Clock = time.perf_counter,
        cpu_seconds: Callable[[], float] = process_cpu_seconds,
    ) -> None:
        super().__init__(clock)
        if watts_per_core <= 0:
            raise ValueError("watts per core must be positive")
        self.watts_per_core = watts_per_core
        self._cpu_seconds = cpu_seconds
        self._extra_sources: list[Callable[[], float]] = []

    def add_cpu_source(self, source: Callable[[], float]) -> None:
        """Count CPU time spent elsewhere on our behalf (say, sandboxed checks).

        ``source`` returns cumulative CPU seconds; only its increase between two
        reads enters a window.
        """
        self._extra_sources.append(source)

    def read(self) -> Reading:
        cpu = self._cpu_seconds() + sum(source() for source in self._extra_sources)
        return Reading(t=self.clock(), joules=cpu * self.watts_per_core)

    def devices(self) -> list[str]:
        return [f"cpu ({os.cpu_count()} cores, {self.watts_per_core:g} W per busy core)"]
