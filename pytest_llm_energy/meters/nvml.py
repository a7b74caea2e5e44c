"""GPU energy from NVML (``nvidia-ml-py``, imported as ``pynvml``).

Per visible GPU, three sources, each optional: the total-energy counter (mJ,
Volta and newer), the instant-power field (``NVML_FI_DEV_POWER_INSTANT``, a
~20 ms average with its own timestamp) and the averaged power reading
(``nvmlDeviceGetPowerUsage``: a 1 s average on Ampere and newer). A sampler
reads them at ``sample_hz``; the counter's changes place its updates in time
and the instant field shapes the energy between them (see :mod:`.curve`). A GPU
that lacks one source is degraded alone, and says so in the report header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Optional

from ..results import MEASURED
from .base import INSTANT, POLLED, DeviceSpec, Meter, MeterError, MeterUnavailable, Sample
from .timebase import Clock, Timebase

# The longest the energy counter goes between updates: 100 ms on most boards,
# 20 ms on some, 150 ms seen. The actual period is fitted per GPU.
MAX_COUNTER_PERIOD_S = 0.25
DEFAULT_SAMPLE_HZ = 100.0
# What the instant-power field averages over (not reported by NVML).
INSTANT_WINDOW_S = 0.02
# nvmlDeviceGetPowerUsage averages over one second from compute capability 8.0 (Ampere) on.
POWER_AVERAGE_S = 1.0
# The board limit bounds power; short excursions above it are allowed for.
POWER_LIMIT_MARGIN = 1.25
# An instant-power timestamp farther than this before its read is not believed.
STAMP_TRUST_S = 1.0
# Tries of a failing read at a window edge before the test fails.
EDGE_TRIES = 3


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
    has_instant: bool
    has_power: bool
    origin_mj: float = 0.0
    power_limit_w: Optional[float] = None
    power_average_s: Optional[float] = None
    missing: list[str] = field(default_factory=list)
    failures: int = 0

    @property
    def metered(self) -> bool:
        return self.has_counter or self.has_instant or self.has_power

    @property
    def source(self) -> str:
        if self.has_counter:
            return "energy counter" + (" + instant power" if self.has_instant else ", no instant power")
        if self.has_instant:
            return "instant power only"
        return "polled power only" if self.has_power else "not metered"

    @property
    def label(self) -> str:
        return f"GPU {self.index}: {self.name} ({self.uuid}, {self.source})"


class NvmlMeter(Meter):
    name = "nvml"
    kind = MEASURED
    resolution_s = MAX_COUNTER_PERIOD_S

    def __init__(
        self,
        nvml: Optional[ModuleType] = None,
        visible_devices: Optional[str] = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        clock: Optional[Clock] = None,
        use_env: bool = True,
        timebase: Optional[Timebase] = None,
        instant_window_s: float = INSTANT_WINDOW_S,
    ) -> None:
        super().__init__(clock, timebase)
        self.nvml = nvml or load_pynvml()
        if use_env and visible_devices is None:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML could not start ({exc}); is an NVIDIA driver installed?") from None
        try:
            handles = parse_visible_devices(visible_devices, self.nvml)
            gpus = [self._probe(i, h) for i, h in enumerate(handles)]
        except self.nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML could not enumerate GPUs: {exc}") from None
        if not gpus:
            raise MeterUnavailable(
                "NVML sees no GPU"
                + (f" (CUDA_VISIBLE_DEVICES={visible_devices!r})" if visible_devices is not None else "")
            )
        self.instant_window_s = instant_window_s
        self.sample_hz = sample_hz
        self.all_gpus = gpus
        self.gpus = [g for g in gpus if g.metered]
        for gpu in gpus:
            if gpu.missing:
                self.notices.append(f"{gpu.label}: {'; '.join(gpu.missing)}")
        if not self.gpus:
            raise MeterUnavailable("no visible GPU offers an energy counter or a power reading: "
                                   + "; ".join(self.notices))
        if sample_hz <= 0 and any(not g.has_counter for g in self.gpus):
            raise MeterUnavailable("a GPU without an energy counter needs the power sampler "
                                   "(--energy-power-sample-hz above 0)")
        self._by_uuid = {g.uuid: g for g in self.gpus}

    def _probe(self, index: int, handle: Any) -> _Gpu:
        nvml = self.nvml
        name = nvml.nvmlDeviceGetName(handle)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        missing: list[str] = []
        origin = 0.0
        try:
            origin = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            has_counter = True
        except nvml.NVMLError as exc:
            has_counter = False
            missing.append(f"no energy counter ({exc}): energy integrated from power samples")
        has_instant = self._instant_w(handle) is not None
        if not has_instant:
            missing.append("no instant-power field: counter steps split evenly at window edges"
                           if has_counter else "no instant-power field")
        try:
            nvml.nvmlDeviceGetPowerUsage(handle)
            has_power = True
        except nvml.NVMLError as exc:
            has_power = False
            if not has_counter and not has_instant:
                missing.append(f"no power reading ({exc}): not metered")
        limit = None
        for getter in ("nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit"):
            try:
                limit = getattr(nvml, getter)(handle) / 1000.0 * POWER_LIMIT_MARGIN
                break
            except (AttributeError, nvml.NVMLError):
                continue
        average = None
        try:
            major, _minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            average = POWER_AVERAGE_S if major >= 8 else None
        except (AttributeError, nvml.NVMLError, TypeError, ValueError):
            average = POWER_AVERAGE_S  # unknown: assume the longer averaging, the wider bound
        return _Gpu(index, handle, name, uuid, has_counter, has_instant, has_power, origin_mj=origin,
                    power_limit_w=limit, power_average_s=average, missing=missing)

    def _instant_w(self, handle: Any) -> Optional[tuple[float, Optional[float]]]:
        """Instant power in W and its timestamp (Unix s), or None where the GPU has no such field."""
        nvml = self.nvml
        try:
            (value,) = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])
        except nvml.NVMLError:
            return None
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            return None
        stamp = getattr(value, "timestamp", 0) or 0
        return value.value.uiVal / 1000.0, (stamp / 1e6 if stamp else None)

    # -- observing ---------------------------------------------------------------
    def device_label(self, device: str) -> str:
        gpu = self._by_uuid.get(device)
        # CUDA numbers the visible GPUs as NVML's handles here are ordered: cuda:N is GPU N.
        return f"cuda:{gpu.index} {gpu.uuid}" if gpu is not None else device

    def device_spec(self, device: str) -> DeviceSpec:
        gpu = self._by_uuid[device]
        if gpu.has_instant:
            span, method = self.instant_window_s, INSTANT
        else:
            span, method = gpu.power_average_s, POLLED
        return DeviceSpec(counter=gpu.has_counter, power_span_s=span,
                          power_limit_w=gpu.power_limit_w, power_method=method)

    def _observe_gpu(self, gpu: _Gpu, offset: float) -> Sample:
        nvml = self.nvml
        t = self.clock()
        joules = None
        if gpu.has_counter:
            joules = (float(nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)) - gpu.origin_mj) / 1000.0
        watts = watts_t = None
        if gpu.has_instant:
            instant = self._instant_w(gpu.handle)
            if instant is not None:
                watts, stamp = instant
                watts_t = stamp - offset if stamp is not None else t
                if not t - STAMP_TRUST_S <= watts_t <= t + 0.01:
                    watts_t = t  # a timestamp from another clock, or none: the read's own time
        elif not gpu.has_counter:
            watts = nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1000.0
            watts_t = t
        return Sample(gpu.uuid, t, joules, watts, watts_t)

    def observe(self) -> list[Sample]:
        """Every metered GPU now; a GPU that fails at an edge fails the window (after retries)."""
        offset = self.timebase.epoch_offset()
        samples = []
        for gpu in self.gpus:
            for attempt in range(EDGE_TRIES):
                try:
                    samples.append(self._observe_gpu(gpu, offset))
                    break
                except self.nvml.NVMLError as exc:
                    if attempt + 1 == EDGE_TRIES:
                        raise MeterError(f"NVML reading failed on {gpu.label}: {exc}") from None
        return samples

    def _tick(self) -> None:
        # In the background a failing GPU is skipped and tried again next tick;
        # the other GPUs are sampled all the same.
        offset = self.timebase.epoch_offset()
        samples = []
        for gpu in self.gpus:
            try:
                samples.append(self._observe_gpu(gpu, offset))
            except self.nvml.NVMLError:
                gpu.failures += 1
        self._ingest(samples)

    # -- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        super().close()
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass

    def devices(self) -> list[str]:
        return [g.label for g in self.all_gpus]

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
        info["power_sampler_hz"] = self.sample_hz
        return info
