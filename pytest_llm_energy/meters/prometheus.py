"""A cumulative energy counter read from a Prometheus endpoint: a server on another machine, a cluster.

``--energy-meter=prometheus`` with ``--energy-prometheus-url`` (the exporter's
``/metrics``) and ``--energy-prometheus-metric``: the DCGM exporter's
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (millijoules, one series per GPU),
Kepler's ``kepler_node_package_joules_total``, node_exporter's
``node_rapl_package_joules_total`` (joules). Every series of the metric is a
device (its labels name it), a counter curve of the base class: the
exporter's update period (``--energy-prometheus-period``, its scrape or
collection interval) is its resolution, and a background sampler places its
updates in time, so short windows are handled as for NVML.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Optional

from ..results import MEASURED
from .base import Meter, MeterError, MeterUnavailable, Sample
from .timebase import Clock, Timebase

DEFAULT_PERIOD_S = 1.0
# Units by metric name: DCGM counts millijoules, the others joules.
_MILLIJOULE_METRICS = ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",)
_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'(?P<key>[A-Za-z_][A-Za-z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')
# Labels that name a device best, in order; the rest are left out of its name.
_NAME_LABELS = ("gpu", "UUID", "Hostname", "instance", "package", "index", "container_id")


def parse_series(text: str, metric: str) -> dict[str, float]:
    """Every series of ``metric`` in a Prometheus text exposition: a device name -> its value."""
    series: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None or match["name"] != metric:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = dict((m["key"], m["value"]) for m in _LABEL.finditer(match["labels"] or ""))
        named = [f"{k}={labels[k]}" for k in _NAME_LABELS if k in labels]
        name = ",".join(named) if named else (",".join(f"{k}={v}" for k, v in sorted(labels.items())) or metric)
        series[name] = series.get(name, 0.0) + value
    return series


class PrometheusMeter(Meter):
    name = "prometheus"
    kind = MEASURED

    def __init__(self, url: str, metric: str, period_s: float = DEFAULT_PERIOD_S, unit: str = "",
                 clock: Optional[Clock] = None, timebase: Optional[Timebase] = None, timeout_s: float = 2.0) -> None:
        super().__init__(clock, timebase)
        if not url:
            raise MeterUnavailable("--energy-meter=prometheus needs --energy-prometheus-url=http://HOST:PORT/metrics")
        if not metric:
            raise MeterUnavailable("--energy-meter=prometheus needs --energy-prometheus-metric=NAME")
        self.url = url
        self.metric = metric
        self.resolution_s = period_s
        # Sample several times per update, to see when the exporter's value changes.
        self.sample_hz = max(4.0 / period_s, 1.0)
        self.scale = {"mJ": 1e-3, "J": 1.0, "uJ": 1e-6}.get(unit or ("mJ" if metric in _MILLIJOULE_METRICS else "J"))
        if self.scale is None:
            raise MeterUnavailable(f"--energy-prometheus-unit={unit!r}: expected J, mJ or uJ")
        self.timeout_s = timeout_s
        first = self._scrape(MeterUnavailable)
        if not first:
            raise MeterUnavailable(f"{url} exposes no series of {metric}")
        self._devices = sorted(first)

    def _scrape(self, error: type[Exception] = MeterError) -> dict[str, float]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                text = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise error(f"the Prometheus endpoint {self.url} cannot be read: {getattr(exc, 'reason', exc)}") from None
        return {name: value * self.scale for name, value in parse_series(text, self.metric).items()}

    def observe(self) -> list[Sample]:
        values = self._scrape()
        t = self.clock()
        return [Sample(name, t, joules) for name, joules in values.items() if name in self._devices]

    def devices(self) -> list[str]:
        return [f"{self.metric}{{{name}}}" for name in self._devices]
