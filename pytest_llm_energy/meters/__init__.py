"""Energy sources behind one interface, and how a name selects one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from .base import CompositeMeter, Meter, MeterError, MeterUnavailable, Reading, Sample, ShortWindows
from .estimate import DEFAULT_CPU_WATTS_PER_CORE, EstimateMeter
from .nvml import DEFAULT_SAMPLE_HZ, NvmlMeter
from .prometheus import DEFAULT_PERIOD_S as DEFAULT_PROMETHEUS_PERIOD_S
from .prometheus import PrometheusMeter
from .rapl import DEFAULT_POWERCAP_ROOT, RaplMeter

__all__ = [
    "BUILTIN_METERS",
    "CompositeMeter",
    "EstimateMeter",
    "Meter",
    "MeterError",
    "MeterOptions",
    "MeterUnavailable",
    "NvmlMeter",
    "PrometheusMeter",
    "RaplMeter",
    "Reading",
    "Sample",
    "ShortWindows",
    "create_meter",
]


@dataclass(frozen=True)
class MeterOptions:
    """What the command line says about meters; factories take what they need."""

    cpu_watts: float = DEFAULT_CPU_WATTS_PER_CORE
    rapl_root: str = DEFAULT_POWERCAP_ROOT
    sample_hz: float = DEFAULT_SAMPLE_HZ
    short_windows: ShortWindows = ShortWindows()
    prometheus_url: str = ""
    prometheus_metric: str = ""
    prometheus_period_s: float = DEFAULT_PROMETHEUS_PERIOD_S
    prometheus_unit: str = ""


MeterFactory = Callable[[MeterOptions], Meter]

BUILTIN_METERS: dict[str, MeterFactory] = {
    "nvml": lambda o: NvmlMeter(sample_hz=o.sample_hz),
    "rapl": lambda o: RaplMeter(root=o.rapl_root),
    "estimate": lambda o: EstimateMeter(watts_per_core=o.cpu_watts),
    "prometheus": lambda o: PrometheusMeter(o.prometheus_url, o.prometheus_metric, o.prometheus_period_s,
                                            o.prometheus_unit),
}


def create_meter(
    name: str, options: MeterOptions, extra: Mapping[str, MeterFactory] = {}
) -> tuple[Meter, list[str]]:
    """The meter a name selects, and notices for the report header.

    ``auto`` combines every measured meter this machine has (GPU and CPU); with
    none it falls back to ``estimate`` and says why. Any other name must work:
    :class:`MeterUnavailable` tells the user what is missing.
    """
    meter, notices = _select(name, options, {**BUILTIN_METERS, **extra})
    meter.short_windows = options.short_windows
    # Devices degraded inside a working meter (a GPU without one NVML function).
    return meter, notices + list(meter.notices)


def _select(name: str, options: MeterOptions, factories: Mapping[str, MeterFactory]) -> tuple[Meter, list[str]]:
    if name != "auto":
        if name not in factories:
            known = ", ".join(["auto", *sorted(factories)])
            raise MeterUnavailable(f"unknown energy meter {name!r}; choose one of: {known}")
        return factories[name](options), []

    found: list[Meter] = []
    missing: list[str] = []
    # A Prometheus endpoint is not this machine's: auto adds it only when named.
    candidates = ("nvml", "rapl") + (("prometheus",) if options.prometheus_url else ())
    for candidate in candidates:
        try:
            found.append(factories[candidate](options))
        except MeterUnavailable as exc:
            missing.append(f"{candidate}: {exc}")
    if not found:
        notice = "no energy sensor found, figures are estimated from CPU time (" + "; ".join(missing) + ")"
        return factories["estimate"](options), [notice]
    notices = [f"not metered: {m}" for m in missing]
    return (found[0] if len(found) == 1 else CompositeMeter(found)), notices
