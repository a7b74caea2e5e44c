"""A fake ``pynvml`` module: GPUs with a programmed power trace.

Power is piecewise constant over time, so the true energy of any window is
known exactly. The total-energy counter only moves every ``counter_period``
seconds, like the real one, and ``NVML_FI_DEV_POWER_INSTANT`` returns the
instant power. Time comes from a clock the test controls.
"""

from __future__ import annotations

import bisect
import math
import types
from dataclasses import dataclass, field
from typing import Callable, Optional

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_FI_DEV_POWER_INSTANT = 186


class NVMLError(Exception):
    _messages = {
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    }

    def __init__(self, value: int) -> None:
        super().__init__(self._messages.get(value, f"NVML error {value}"))
        self.value = value


class FakeClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class FakeGpu:
    """``trace`` is a list of (start time, watts), sorted; power holds until the next."""

    name: str = "NVIDIA Fake H100"
    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    trace: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 100.0)])
    has_counter: bool = True
    counter_period: float = 0.1
    instant_power: bool = True
    lost: bool = False

    def power(self, t: float) -> float:
        starts = [s for s, _ in self.trace]
        i = bisect.bisect_right(starts, t) - 1
        return self.trace[max(i, 0)][1]

    def energy(self, t: float) -> float:
        """True joules from time 0 to t."""
        total = 0.0
        for i, (start, watts) in enumerate(self.trace):
            end = self.trace[i + 1][0] if i + 1 < len(self.trace) else math.inf
            if t <= start:
                break
            total += watts * (min(t, end) - max(start, 0.0))
        return total

    def counter_mj(self, t: float) -> int:
        last_update = math.floor(t / self.counter_period + 1e-9) * self.counter_period
        return int(round(self.energy(last_update) * 1000))


def make_fake_pynvml(gpus: list[FakeGpu], clock: Callable[[], float],
                     init_error: Optional[int] = None) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.NVML_SUCCESS = NVML_SUCCESS
    nvml.NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    nvml.NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    nvml.NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    nvml.NVMLError = NVMLError
    nvml.gpus = gpus
    nvml.calls = {"energy": 0, "power": 0, "fields": 0}
    nvml.initialised = 0

    def check(gpu: FakeGpu) -> None:
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def nvmlInit() -> None:
        if init_error is not None:
            raise NVMLError(init_error)
        nvml.initialised += 1

    def nvmlShutdown() -> None:
        nvml.initialised -= 1

    def nvmlDeviceGetCount() -> int:
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
        return gpus[index]

    def nvmlDeviceGetHandleByUUID(uuid: str) -> FakeGpu:
        for gpu in gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(6)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle: FakeGpu) -> FakeGpu:
        return handle

    def nvmlDeviceGetUUID(handle: FakeGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetName(handle: FakeGpu) -> str:
        return handle.name

    def nvmlDeviceGetTotalEnergyConsumption(handle: FakeGpu) -> int:
        check(handle)
        if not handle.has_counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        nvml.calls["energy"] += 1
        return handle.counter_mj(clock())

    def nvmlDeviceGetPowerUsage(handle: FakeGpu) -> int:
        check(handle)
        nvml.calls["power"] += 1
        return int(round(handle.power(clock()) * 1000))

    def nvmlDeviceGetFieldValues(handle: FakeGpu, field_ids: list[int]) -> list[types.SimpleNamespace]:
        check(handle)
        nvml.calls["fields"] += 1
        values = []
        for field_id in field_ids:
            ok = field_id == NVML_FI_DEV_POWER_INSTANT and handle.instant_power
            values.append(types.SimpleNamespace(
                fieldId=field_id,
                nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED,
                value=types.SimpleNamespace(uiVal=int(round(handle.power(clock()) * 1000)) if ok else 0),
            ))
        return values

    for fn in (nvmlInit, nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex,
               nvmlDeviceGetHandleByUUID, nvmlDeviceGetDeviceHandleFromMigDeviceHandle,
               nvmlDeviceGetUUID, nvmlDeviceGetName, nvmlDeviceGetTotalEnergyConsumption,
               nvmlDeviceGetPowerUsage, nvmlDeviceGetFieldValues):
        setattr(nvml, fn.__name__, fn)
    return nvml
