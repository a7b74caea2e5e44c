"""CPU package and DRAM energy from Linux powercap (Intel RAPL, also AMD).

Each domain exposes ``energy_uj``, a counter that wraps at
``max_energy_range_uj``. Differences are taken at every read and a background
thread reads often enough that the counter can never wrap twice unseen. The
counters update about every millisecond: each domain is a device curve of the
base class, so a value read up to 1 ms stale is placed where it was true.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..results import MEASURED
from .base import Meter, MeterError, MeterUnavailable, Sample
from .timebase import Clock, Timebase

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
# A package counter spans ~262 kJ: 15 minutes at 300 W. Reading every 30 s
# leaves a wide margin.
WRAP_GUARD_SECONDS = 30.0


@dataclass
class _Domain:
    name: str
    path: Path
    max_range_uj: int
    last_uj: int = 0
    total_uj: int = 0


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _permission_message(root: Path) -> str:
    return (
        f"RAPL energy counters under {root} are not readable by this user (permission denied); "
        f"run as root or make them readable: sudo chmod a+r {root}/intel-rapl:*/energy_uj "
        f"{root}/intel-rapl:*/intel-rapl:*/energy_uj"
    )


def discover_domains(root: Path) -> list[_Domain]:
    """Package and DRAM domains under a powercap root, each counted once.

    Sub-zones such as ``core`` and ``uncore`` are part of the package figure and
    ``psys`` overlaps everything, so only ``package-*`` and ``dram`` are summed.
    """
    if not root.is_dir():
        raise MeterUnavailable(f"no powercap directory at {root} (RAPL needs Linux with the intel_rapl driver)")
    zones: dict[str, Path] = {}
    for zone in sorted(root.glob("intel-rapl:*")) + sorted(root.glob("intel-rapl:*/intel-rapl:*")):
        zones.setdefault(os.path.realpath(zone), zone)
    domains = []
    for zone in zones.values():
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        if not (name.startswith("package") or name == "dram"):
            continue
        try:
            max_range = _read_int(zone / "max_energy_range_uj")
            current = _read_int(zone / "energy_uj")
        except PermissionError:
            raise MeterUnavailable(_permission_message(root)) from None
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(f"cannot read RAPL domain {zone}: {exc}") from None
        label = f"{zone.name}:{name}"
        domains.append(_Domain(label, zone / "energy_uj", max_range, last_uj=current))
    if not domains:
        raise MeterUnavailable(f"no RAPL package or dram domain under {root}")
    return domains


class RaplMeter(Meter):
    name = "rapl"
    kind = MEASURED
    # RAPL updates about every millisecond; no background sampling is needed
    # to place updates that close to the read.
    resolution_s = 0.001

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
        clock: Optional[Clock] = None,
        wrap_guard_s: float = WRAP_GUARD_SECONDS,
        timebase: Optional[Timebase] = None,
    ) -> None:
        super().__init__(clock, timebase)
        self.root = Path(root)
        self.domains = discover_domains(self.root)
        self._lock = threading.Lock()
        self._wrap_guard_s = wrap_guard_s
        self._stop_guard: Optional[Callable[[], None]] = None

    def start(self) -> None:
        super().start()
        if self._stop_guard is None and self._wrap_guard_s > 0:
            # An error here is retried; the next edge read reports it to the test.
            self._stop_guard = self.timebase.every(self._wrap_guard_s, self._accumulate, "llm-energy-rapl")

    def close(self) -> None:
        super().close()
        if self._stop_guard is not None:
            self._stop_guard()
            self._stop_guard = None

    def _accumulate(self) -> int:
        with self._lock:
            total = 0
            for domain in self.domains:
                try:
                    current = _read_int(domain.path)
                except PermissionError:
                    raise MeterError(_permission_message(self.root)) from None
                except (OSError, ValueError) as exc:
                    raise MeterError(f"RAPL domain {domain.name} could not be read: {exc}") from None
                delta = current - domain.last_uj
                if delta < 0:  # the counter wrapped since the last read
                    delta += domain.max_range_uj
                domain.total_uj += delta
                domain.last_uj = current
                total += domain.total_uj
            return total

    def observe(self) -> list[Sample]:
        self._accumulate()
        t = self.clock()
        return [Sample(d.name, t, d.total_uj / 1e6) for d in self.domains]


    def devices(self) -> list[str]:
        return [d.name for d in self.domains]
