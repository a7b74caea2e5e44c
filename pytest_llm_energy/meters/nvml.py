"""GPU energy from NVML (``nvidia-ml-py``, imported as ``pynvml``).

Per visible GPU, the total-energy counter (mJ, Volta and newer) is read at
window edges. GPUs without the counter are integrated from power polled in a
background thread. An optional high-rate sampler of instant power
(``NVML_FI_DEV_POWER_INSTANT``) attributes windows shorter than the counter's
~100 ms update period.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Deque, Optional

from ..results import MEASURED
from .base import Clock, Meter, MeterError, MeterUnavailable, Reading

# The energy counter and the averaged power reading refresh about every 100 ms.
COUNTER_PERIOD_S = 0.1
DEFAULT_POLL_INTERVAL_S = 0.02
DEFAULT_SAMPLE_HZ = 100.0
# Instant-power samples kept for attribution: at 100 Hz, ten minutes.
MAX_SAMPLES = 60_000
# A sample farther than this from a window says nothing about it.
MAX_SAMPLE_GAP_S = 0.5


def load_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise MeterUnavailable("NVML meter needs nvidia-ml-py: pip install nvidia-ml-py") from None
    return pynvml


def _error_code(nvml: ModuleType, exc: BaseException) -> Optional[int]:
    return getattr(exc, "value", None)


def parse_visible_devices(value: Optional[str], nvml: ModuleType) -> list[Any]:
    """NVML handles of the GPUs a CUDA process would see.

    ``CUDA_VISIBLE_DEVICES`` lists indices or UUIDs (``GPU-...`` or a unique
    prefix; ``MIG-...`` resolves to its parent GPU, whose energy is what NVML can
    count). As in CUDA, the first entry that names no device ends the list.
    Indices are NVML's (PCI bus) order: set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so
    CUDA numbers GPUs the same way.
    """
    count = nvml.nvmlDeviceGetCount()
    if value is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    uuids = None
    handles: list[Any] = []
    seen: set[str] = set()
    for token in (t.strip() for t in value.split(",")):
        handle = None
        if token.lstrip("-").isdigit():
            index = int(token)
            if 0 <= index < count:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
        elif token.startswith("MIG-"):
            try:
                mig = nvml.nvmlDeviceGetHandleByUUID(token)
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
            except nvml.NVMLError:
                handle = None
        elif token:
            if uuids is None:
                uuids = [(nvml.nvmlDeviceGetUUID(h), h) for h in
                         (nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))]
            prefix = token if token.startswith("GPU-") else "GPU-" + token
            matches = [h for uuid, h in uuids if uuid.startswith(prefix)]
            handle = matches[0] if len(matches) == 1 else None
        if handle is None:
            break
        uuid = nvml.nvmlDeviceGetUUID(handle)
        if uuid not in seen:
            seen.add(uuid)
            handles.append(handle)
    return handles


@dataclass
class _Gpu:
    index: int
    handle: Any
    name: str
    uuid: str
    has_counter: bool
    origin_mj: float = 0.0
    # Power-polling integrator state (GPUs without the counter).
    polled_j: float = 0.0
    last_t: Optional[float] = None
    last_w: Optional[float] = None
    label: str = field(default="")


class NvmlMeter(Meter):
    name = "nvml"
    kind = MEASURED

    def __init__(
        self,
        nvml: Optional[ModuleType] = None,
        visible_devices: Optional[str] = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        clock: Clock = time.perf_counter,
        use_env: bool = True,
    ) -> None:
        super().__init__(clock)
        self.nvml = nvml or load_pynvml()
        if use_env and visible_devices is None:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML could not start ({exc}); is an NVIDIA driver installed?") from None
        try:
            handles = parse_visible_devices(visible_devices, self.nvml)
            self.gpus = [self._probe(i, h) for i, h in enumerate(handles)]
        except self.nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML could not enumerate GPUs: {exc}") from None
        if not self.gpus:
            raise MeterUnavailable(
                "NVML sees no GPU"
                + (f" (CUDA_VISIBLE_DEVICES={visible_devices!r})" if visible_devices is not None else "")
            )
        self.poll_interval_s = poll_interval_s
        self.sample_hz = sample_hz
        # Polled GPUs resolve no finer than the poll interval.
        polled = not all(g.has_counter for g in self.gpus)
        self.resolution_s = max(COUNTER_PERIOD_S, poll_interval_s if polled else 0.0)
        self._lock = threading.Lock()
        self._samples: Deque[tuple[float, float]] = collections.deque(maxlen=MAX_SAMPLES)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sampler_ok = sample_hz > 0

    def _probe(self, index: int, handle: Any) -> _Gpu:
        nvml = self.nvml
        name = nvml.nvmlDeviceGetName(handle)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        try:
            origin = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            has_counter = True
        except nvml.NVMLError as exc:
            if _error_code(nvml, exc) != nvml.NVML_ERROR_NOT_SUPPORTED:
                raise
            origin, has_counter = 0.0, False
        label = f"GPU {index}: {name} ({uuid}, {'energy counter' if has_counter else 'power polling'})"
        return _Gpu(index, handle, name, uuid, has_counter, origin_mj=origin, label=label)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        if not all(g.has_counter for g in self.gpus):
            with self._lock:
                self._poll_locked()
            self._spawn(self._poll_loop, "llm-energy-nvml-poll")
        if self._sampler_ok:
            self._spawn(self._sample_loop, "llm-energy-nvml-sampler")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._threads = []
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass

    # -- power polling (GPUs without the counter) ---------------------------------
    def _poll_locked(self) -> None:
        now = self.clock()
        for gpu in self.gpus:
            if gpu.has_counter:
                continue
            watts = self._power_w(gpu)
            if gpu.last_t is not None and gpu.last_w is not None:
                gpu.polled_j += (watts + gpu.last_w) / 2 * (now - gpu.last_t)  # trapezoid
            gpu.last_t, gpu.last_w = now, watts

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                with self._lock:
                    self._poll_locked()
            except MeterError:
                return

    # -- instant-power sampler --------------------------------------------------
    def sample_instant_power(self) -> Optional[float]:
        """Record one instant-power sample summed over GPUs; None if unsupported."""
        nvml = self.nvml
        total = 0.0
        for gpu in self.gpus:
            try:
                (value,) = nvml.nvmlDeviceGetFieldValues(gpu.handle, [nvml.NVML_FI_DEV_POWER_INSTANT])
            except nvml.NVMLError:
                return None
            if value.nvmlReturn != nvml.NVML_SUCCESS:
                return None
            total += value.value.uiVal / 1000.0
        t = self.clock()
        self._samples.append((t, total))
        return total

    def _sample_loop(self) -> None:
        period = 1.0 / self.sample_hz
        while not self._stop.wait(period):
            if self.sample_instant_power() is None:
                # The GPU does not offer instant power (pre-Ampere drivers):
                # short windows fall back to the power reported at window edges.
                self._sampler_ok = False
                return

    def power_between(self, t0: float, t1: float) -> Optional[float]:
        samples = list(self._samples)
        inside = [w for t, w in samples if t0 <= t <= t1]
        if inside:
            return sum(inside) / len(inside)
        before = [(t, w) for t, w in samples if t < t0 and t0 - t <= MAX_SAMPLE_GAP_S]
        after = [(t, w) for t, w in samples if t > t1 and t - t1 <= MAX_SAMPLE_GAP_S]
        if before and after:
            (ta, wa), (tb, wb) = before[-1], after[0]
            mid = (t0 + t1) / 2
            return wa + (wb - wa) * (mid - ta) / (tb - ta)
        nearest = before[-1:] or after[:1]
        return nearest[0][1] if nearest else None

    # -- reading ---------------------------------------------------------------
    def _power_w(self, gpu: _Gpu) -> float:
        try:
            return self.nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1000.0
        except self.nvml.NVMLError as exc:
            raise MeterError(f"NVML power reading failed on {gpu.label}: {exc}") from None

    def read(self) -> Reading:
        nvml = self.nvml
        joules = 0.0
        watts = 0.0
        with self._lock:
            if not all(g.has_counter for g in self.gpus):
                self._poll_locked()  # integrate right up to this edge
            for gpu in self.gpus:
                if gpu.has_counter:
                    try:
                        counter = float(nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
                    except nvml.NVMLError as exc:
                        raise MeterError(f"NVML energy counter failed on {gpu.label}: {exc}") from None
                    joules += (counter - gpu.origin_mj) / 1000.0
                    watts += self._power_w(gpu)
                else:
                    joules += gpu.polled_j
                    watts += gpu.last_w or 0.0
        return Reading(t=self.clock(), joules=joules, watts=watts)

    def devices(self) -> list[str]:
        return [g.label for g in self.gpus]

    def fingerprint(self) -> list[dict[str, Any]]:
        """What identifies these GPUs for a baseline: name, driver, power limit."""
        nvml = self.nvml
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
        except (AttributeError, nvml.NVMLError):
            driver = None
        gpus = []
        for gpu in self.gpus:
            try:
                limit = nvml.nvmlDeviceGetPowerManagementLimit(gpu.handle) / 1000.0
            except (AttributeError, nvml.NVMLError):
                limit = None
            gpus.append({"name": gpu.name, "driver": driver, "power_limit_w": limit})
        return gpus

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["instant_power_sampler_hz"] = self.sample_hz if self._sampler_ok else 0
        return info
