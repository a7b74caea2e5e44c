"""A synthetic NVIDIA GPU whose true power is known, in virtual time.

The judge of the meter's accuracy. What the real boards do is reproduced where
it makes figures wrong:

* the total-energy counter moves in steps, every ``counter_period`` (100 ms on
  most boards, 20 ms on some) at a random phase, and holds the true energy of
  its last update;
* ``nvmlDeviceGetPowerUsage`` is a 1 s average refreshed every 100 ms;
* the instant-power field is a 20 ms trailing average, refreshed every 5 ms at a
  phase of its own, with 2% noise, and carries its own timestamp;
* each can be removed, for one GPU or all.

:class:`VirtualTime` is a timebase for the meters: sleeping advances time and
runs the sampler's ticks (with scheduling jitter) in order, so a run of minutes
takes milliseconds and is reproducible. :class:`TimedBackend` is a model whose
forward passes take scripted times at scripted powers, so the real runner and
meters can be driven against the truth.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from pytest_llm_energy.backends.base import Backend, Decoding
from pytest_llm_energy.meters.timebase import Timebase

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_UNKNOWN = 999
NVML_FI_DEV_POWER_INSTANT = 186
EPOCH = 1_780_000_000.0


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__({NVML_ERROR_NOT_SUPPORTED: "Not Supported"}.get(value, f"NVML error {value}"))
        self.value = value


class VirtualTime(Timebase):
    """Time that moves only when someone sleeps or works; periodic jobs run in between."""

    def __init__(self, seed: int = 0, jitter_s: float = 0.002) -> None:
        super().__init__(lambda: self.t)
        self.t = 0.0
        self.jitter_s = jitter_s
        self._random = random.Random(seed)
        self._jobs: list[tuple[float, int, Callable[[], None], float, dict]] = []
        self._ids = itertools.count()

    def epoch_offset(self) -> float:
        return EPOCH

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def every(self, period_s: float, work: Callable[[], None], name: str) -> Callable[[], None]:
        state = {"stopped": False}
        heapq.heappush(self._jobs, (self.t + period_s + self._delay(), next(self._ids), work, period_s, state))

        def halt() -> None:
            state["stopped"] = True

        return halt

    def _delay(self) -> float:
        return self._random.uniform(0.0, self.jitter_s)

    def advance(self, seconds: float) -> None:
        target = self.t + max(seconds, 0.0)
        while self._jobs and self._jobs[0][0] <= target:
            due, _, work, period, state = heapq.heappop(self._jobs)
            if state["stopped"]:
                continue
            self.t = max(self.t, due)
            try:
                work()
            except Exception:  # noqa: BLE001 - as the real timebase: retried next period
                pass
            # A loop that sleeps ``period`` after each tick, woken a little late.
            heapq.heappush(self._jobs, (self.t + period + self._delay(), next(self._ids), work, period, state))
        self.t = target


@dataclass
class SyntheticGpu:
    """One board: a true power profile and the sensors that see it."""

    index: int = 0
    counter_period: float = 0.1
    counter_phase: float = 0.0
    idle_w: float = 70.0
    power_limit_w: float = 700.0
    has_counter: bool = True
    has_instant: bool = True
    has_power_usage: bool = True
    instant_window: float = 0.02
    instant_refresh: float = 0.005
    instant_phase: float = 0.0
    instant_noise: float = 0.02
    average_window: float = 1.0
    average_refresh: float = 0.1
    seed: int = 0
    # Power changes: times, watts from then on, true energy at each change.
    _times: list[float] = field(default_factory=lambda: [0.0])
    _watts: list[float] = field(default_factory=list)
    _energy: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self) -> None:
        self._watts = [self.idle_w]
        self.uuid = f"GPU-5e7a0000-0000-0000-0000-{self.index:012d}"
        self.name = "NVIDIA Synthetic H100"

    def set_power(self, t: float, watts: float) -> None:
        """Power is ``watts`` from ``t`` on (times only move forward)."""
        if t < self._times[-1]:
            raise ValueError("power changes must come in time order")
        if t == self._times[-1]:
            self._watts[-1] = watts
            return
        self._energy.append(self.energy(t))
        self._times.append(t)
        self._watts.append(watts)

    def energy(self, t: float) -> float:
        """True joules from time 0 to ``t`` (idle before 0)."""
        i = max(bisect.bisect_right(self._times, t) - 1, 0)
        return self._energy[i] + self._watts[i] * (t - self._times[i])

    def mean_power(self, a: float, b: float) -> float:
        return (self.energy(b) - self.energy(a)) / (b - a)

    # -- sensors ---------------------------------------------------------------
    def counter_mj(self, t: float) -> int:
        update = self.counter_phase + math.floor((t - self.counter_phase) / self.counter_period) * self.counter_period
        return int(round(self.energy(update) * 1000.0)) + 10_000_000

    def power_usage_mw(self, t: float) -> int:
        update = math.floor(t / self.average_refresh) * self.average_refresh
        return int(round(self.mean_power(update - self.average_window, update) * 1000.0))

    def instant(self, t: float) -> tuple[int, int]:
        """(mW, timestamp µs since the epoch) of the field's latest refresh."""
        refresh = self.instant_phase + math.floor((t - self.instant_phase) / self.instant_refresh) * self.instant_refresh
        watts = self.mean_power(refresh - self.instant_window, refresh)
        noise = random.Random(hash((self.seed, self.index, round(refresh * 1e6)))).gauss(0.0, self.instant_noise)
        return int(round(watts * (1.0 + noise) * 1000.0)), int(round((refresh + EPOCH) * 1e6))


def synthetic_pynvml(gpus: Sequence[SyntheticGpu], time: VirtualTime) -> types.ModuleType:
    """A ``pynvml`` stand-in over synthetic boards."""
    nvml = types.ModuleType("pynvml")
    nvml.NVML_SUCCESS = NVML_SUCCESS
    nvml.NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    nvml.NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    nvml.NVMLError = NVMLError
    nvml.failures: dict[tuple[int, str], int] = {}  # (gpu index, call) -> failures left

    def fail(gpu: SyntheticGpu, call: str) -> None:
        left = nvml.failures.get((gpu.index, call), 0)
        if left:
            nvml.failures[(gpu.index, call)] = left - 1
            raise NVMLError(NVML_ERROR_UNKNOWN)

    def energy(gpu: SyntheticGpu) -> int:
        if not gpu.has_counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        fail(gpu, "energy")
        return gpu.counter_mj(time.now())

    def power(gpu: SyntheticGpu) -> int:
        if not gpu.has_power_usage:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        fail(gpu, "power")
        return gpu.power_usage_mw(time.now())

    def fields(gpu: SyntheticGpu, ids: list[int]) -> list[Any]:
        fail(gpu, "fields")
        out = []
        for field_id in ids:
            ok = field_id == NVML_FI_DEV_POWER_INSTANT and gpu.has_instant
            mw, stamp = gpu.instant(time.now()) if ok else (0, 0)
            out.append(types.SimpleNamespace(fieldId=field_id, timestamp=stamp, latencyUsec=0,
                                             nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED,
                                             value=types.SimpleNamespace(uiVal=mw)))
        return out

    def by_uuid(uuid: str) -> SyntheticGpu:
        for gpu in gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(6)

    functions = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i],
        "nvmlDeviceGetHandleByUUID": by_uuid,
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle": lambda h: h,
        "nvmlDeviceGetUUID": lambda h: h.uuid,
        "nvmlDeviceGetName": lambda h: h.name,
        "nvmlDeviceGetTotalEnergyConsumption": energy,
        "nvmlDeviceGetPowerUsage": power,
        "nvmlDeviceGetFieldValues": fields,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: int(h.power_limit_w * 1000),
        "nvmlDeviceGetPowerManagementLimit": lambda h: int(h.power_limit_w * 1000),
        "nvmlDeviceGetCudaComputeCapability": lambda h: (9, 0),
        "nvmlSystemGetDriverVersion": lambda: "570.00-synthetic",
    }
    for name, fn in functions.items():
        setattr(nvml, name, fn)
    return nvml


@dataclass
class Work:
    """What the model does: forward-pass times and the power drawn meanwhile."""

    prefill_s: float = 0.03
    token_s: float = 0.015
    prefill_w: float = 600.0
    decode_w: float = 350.0
    # Host time between forward passes (kernel launches, the runner's Python), GPU at idle.
    launch_s: float = 0.0001


class _TimedDecoding(Decoding):
    def __init__(self, backend: "TimedBackend") -> None:
        self.backend = backend

    def prefill(self, prompt_ids: Sequence[int]) -> Any:
        self.backend._busy("prefill", self.backend.work.prefill_s, self.backend.work.prefill_w)
        return self.backend._logits()

    def step(self, token_id: int) -> Any:
        self.backend._busy("step", self.backend.work.token_s, self.backend.work.decode_w)
        return self.backend._logits()


class TimedBackend(Backend):
    """A model whose forward passes take ``work``'s times on the synthetic GPUs.

    ``log`` lists ``(kind, start, end)`` of every forward pass, the truth the
    figures are judged against.
    """

    model_id = "synthetic"
    device = "cuda"

    def __init__(self, time: VirtualTime, gpus: Sequence[SyntheticGpu], work: Work) -> None:
        import torch

        self.time = time
        self.gpus = list(gpus)
        self.work = work
        self.log: list[tuple[str, float, float]] = []
        self._logit = torch.tensor([0.0, 1.0])

    def _busy(self, kind: str, seconds: float, watts: float) -> None:
        self.time.advance(self.work.launch_s)
        start = self.time.now()
        for gpu in self.gpus:
            gpu.set_power(start, watts)
        self.time.advance(seconds)
        end = self.time.now()
        for gpu in self.gpus:
            gpu.set_power(end, gpu.idle_w)
        self.log.append((kind, start, end))

    def _logits(self) -> Any:
        return self._logit

    def encode(self, text: str) -> list[int]:
        return [1] * max(len(text), 1)

    def decode(self, ids: Sequence[int]) -> str:
        return "x" * len(ids)

    def start(self) -> Decoding:
        return _TimedDecoding(self)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({0})

    def true_energy(self, a: float, b: float) -> float:
        return sum(g.energy(b) - g.energy(a) for g in self.gpus)


def truth_of_generation(log: Sequence[tuple[str, float, float]], launch_s: float) -> tuple[float, float, float]:
    """``(prefill start, prefill end, decode end)`` of the first generation in ``log``.

    The runner marks the start before the first launch and the other edges
    right after a forward pass ends.
    """
    prefill_start = log[0][1] - launch_s
    prefill_end = log[0][2]
    decode_end = prefill_end
    for kind, _start, end in log[1:]:
        if kind != "step":
            break
        decode_end = end
    return prefill_start, prefill_end, decode_end


@dataclass(frozen=True)
class Outcome:
    """One generation's figures against the truth."""

    prefill_j: float
    decode_j: float
    true_prefill_j: float
    true_decode_j: float
    prefill_bound: Optional[float]
    decode_bound: Optional[float]
    prefill_method: str
    decode_method: str
    case_s: float
    extra_s: float

    @property
    def prefill_error(self) -> float:
        return (self.prefill_j - self.true_prefill_j) / self.true_prefill_j

    @property
    def decode_error(self) -> float:
        return (self.decode_j - self.true_decode_j) / self.true_decode_j if self.true_decode_j else 0.0

    @property
    def conservation_error(self) -> float:
        truth = self.true_prefill_j + self.true_decode_j
        return (self.prefill_j + self.decode_j - truth) / truth

    @property
    def inside_bounds(self) -> bool:
        return (self.prefill_bound is not None and self.decode_bound is not None
                and abs(self.prefill_j - self.true_prefill_j) <= self.prefill_bound + 1e-9
                and abs(self.decode_j - self.true_decode_j) <= self.decode_bound + 1e-9)


def synthetic_world(seed: int, period: float, gpus: int = 1, **board: Any) -> tuple[VirtualTime, list[SyntheticGpu]]:
    """Boards with random counter and instant-field phases, in a fresh virtual time."""
    rnd = random.Random(seed)
    time = VirtualTime(seed=seed)
    boards = [SyntheticGpu(index=i, counter_period=period, counter_phase=rnd.uniform(0, period),
                           instant_phase=rnd.uniform(0, 0.005), seed=seed, **board) for i in range(gpus)]
    return time, boards


def measure_generation(seed: int, work: Work, new_tokens: int, period: float = 0.1, gpus: int = 1,
                       short_windows: Any = None, tweak: Optional[Callable[[list[SyntheticGpu]], None]] = None,
                       **board: Any) -> Outcome:
    """Start the NVML meter on synthetic boards, idle a while, generate once, compare."""
    from pytest_llm_energy.meters.nvml import NvmlMeter
    from pytest_llm_energy.runner import GenerationConfig, generate

    time, boards = synthetic_world(seed, period, gpus, **board)
    if tweak is not None:
        tweak(boards)
    backend = TimedBackend(time, boards, work)
    meter = NvmlMeter(nvml=synthetic_pynvml(boards, time), use_env=False, timebase=time)
    if short_windows is not None:
        meter.short_windows = short_windows
    meter.start()
    # A session loads the model before the first case: the sampler has seen
    # the counter for a while by then.
    time.advance(1.0 + random.Random(seed).uniform(0, period))
    began = time.now()
    generation = generate(backend, meter, "p" * 16, GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True))
    returned = time.now()
    meter.close()
    a, b, c = truth_of_generation(backend.log, work.launch_s)
    return Outcome(
        prefill_j=generation.prefill.joules,
        decode_j=generation.decode.joules,
        true_prefill_j=backend.true_energy(a, b),
        true_decode_j=backend.true_energy(b, c),
        prefill_bound=generation.prefill.bound_j,
        decode_bound=generation.decode.bound_j,
        prefill_method=generation.prefill.method,
        decode_method=generation.decode.method,
        case_s=c - a,
        extra_s=returned - began - (c - a),
    )
