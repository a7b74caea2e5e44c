"""CPU package and DRAM energy from Linux powercap (Intel RAPL, also AMD).

Each domain exposes ``energy_uj``, a counter that wraps at
``max_energy_range_uj``. Differences are taken at every read and a background
thread reads often enough that the counter can never wrap twice unseen.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..results import MEASURED
from .base import Clock, Meter, MeterError, MeterUnavailable, Reading

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
    # RAPL updates about every millisecond.
    resolution_s = 0.001

    def __init__(
        self,
        root: str | os.PathLike[str] = DEFAULT_POWERCAP_ROOT,
        clock: Clock = time.perf_counter,
        wrap_guard_s: float = WRAP_GUARD_SECONDS,
    ) -> None:
        super().__init__(clock)
        self.root = Path(root)
        self.domains = discover_domains(self.root)
        self._lock = threading.Lock()
        self._wrap_guard_s = wrap_guard_s
        self._stop = threading.Event()
        self._guard: Optional[threading.Thread] = None

    def start(self) -> None:
        if self._guard is None and self._wrap_guard_s > 0:
            self._guard = threading.Thread(target=self._guard_loop, name="llm-energy-rapl", daemon=True)
            self._guard.start()

    def close(self) -> None:
        self._stop.set()
        if self._guard is not None:
            self._guard.join(timeout=1.0)
            self._guard = None

    def _guard_loop(self) -> None:
        while not self._stop.wait(self._wrap_guard_s):
            try:
                self._accumulate()
            except MeterError:
                return  # the next read() reports the failure to the test

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

    def read(self) -> Reading:
        total_uj = self._accumulate()
        return Reading(t=self.clock(), joules=total_uj / 1e6)

    def devices(self) -> list[str]:
        return [d.name for d in self.domains]
