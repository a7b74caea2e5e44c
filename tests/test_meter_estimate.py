"""The estimate meter, meter selection and composites."""

import time

import pytest

from fake_nvml import FakeGpu, make_fake_pynvml
from pytest_llm_energy.meters import (
    CompositeMeter,
    EstimateMeter,
    MeterOptions,
    MeterUnavailable,
    NvmlMeter,
    create_meter,
)


def test_estimate_is_cpu_seconds_times_watts_per_core(clock):
    cpu = iter([10.0, 12.5])
    meter = EstimateMeter(watts_per_core=8.0, clock=clock, cpu_seconds=lambda: next(cpu))
    r0 = meter.read()
    clock.advance(1.0)
    r1 = meter.read()
    assert meter.window(r0, r1).joules == pytest.approx(20.0)
    assert meter.kind == "estimated"


def test_estimate_follows_real_cpu_work_not_wall_time():
    meter = EstimateMeter(watts_per_core=10.0)
    r0 = meter.read()
    time.sleep(0.2)  # idle: costs (almost) nothing
    r1 = meter.read()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    r2 = meter.read()
    idle, busy = meter.window(r0, r1).joules, meter.window(r1, r2).joules
    assert busy == pytest.approx(2.0, rel=0.25)
    assert idle < 0.1 * busy


def test_estimate_rejects_non_positive_watts():
    with pytest.raises(ValueError):
        EstimateMeter(watts_per_core=0)


def unavailable(reason):
    def factory(options):
        raise MeterUnavailable(reason)

    return factory


def test_unknown_meter_names_the_choices():
    with pytest.raises(MeterUnavailable, match="unknown energy meter 'bogus'; choose one of: auto, estimate, nvml, prometheus, rapl"):
        create_meter("bogus", MeterOptions())


def test_auto_without_sensors_estimates_and_says_why():
    meter, notices = create_meter(
        "auto", MeterOptions(cpu_watts=7), {"nvml": unavailable("no driver"), "rapl": unavailable("no powercap")}
    )
    assert isinstance(meter, EstimateMeter) and meter.watts_per_core == 7
    assert len(notices) == 1 and "no driver" in notices[0] and "no powercap" in notices[0]


def test_auto_combines_gpu_and_cpu_sensors(clock, powercap):
    from pytest_llm_energy.meters import RaplMeter

    root = powercap({"intel-rapl:0": {"name": "package-0", "energy_uj": 0, "max_energy_range_uj": 10**12}})
    nvml = make_fake_pynvml([FakeGpu(trace=[(0.0, 200.0)])], clock)
    meter, notices = create_meter("auto", MeterOptions(), {
        "nvml": lambda o: NvmlMeter(nvml=nvml, use_env=False, clock=clock, sample_hz=0),
        "rapl": lambda o: RaplMeter(root=root, clock=clock, wrap_guard_s=0),
    })
    assert isinstance(meter, CompositeMeter) and meter.name == "nvml+rapl" and notices == []
    assert "nvml" in meter.name and "rapl" in meter.name


def test_auto_with_gpu_only_notes_the_cpu_is_not_metered(clock):
    nvml = make_fake_pynvml([FakeGpu()], clock)
    meter, notices = create_meter("auto", MeterOptions(), {
        "nvml": lambda o: NvmlMeter(nvml=nvml, use_env=False, clock=clock),
        "rapl": unavailable("permission denied"),
    })
    assert isinstance(meter, NvmlMeter)
    assert notices == ["not metered: rapl: permission denied"]


def test_composite_adds_each_part_read_off_its_own_curves():
    from synthetic_gpu import synthetic_pynvml, synthetic_world

    time, boards = synthetic_world(seed=1, period=0.1)
    nvml = NvmlMeter(nvml=synthetic_pynvml(boards, time), use_env=False, timebase=time)
    cpu_seconds = iter([0.0, 0.01])
    cpu = EstimateMeter(watts_per_core=10, clock=time.now, cpu_seconds=lambda: next(cpu_seconds))
    meter = CompositeMeter([nvml, cpu])
    assert meter.kind == "estimated"
    meter.start()
    time.advance(1.0)
    r0 = meter.mark()
    boards[0].set_power(time.now(), 300.0)
    time.advance(0.5)
    boards[0].set_power(time.now(), boards[0].idle_w)
    r1 = meter.mark()
    window = meter.window(r0, r1)
    gpu = nvml.window(r0.parts[0], r1.parts[0])
    # CPU: 10 ms of CPU time at 10 W, exact; GPU: its own curve, with its bound.
    assert window.joules == pytest.approx(gpu.joules + 0.1)
    assert abs(gpu.joules - 150.0) <= gpu.bound_j
    assert window.method == "counter+read"
    assert window.bound_j is None  # an estimate has no sensor bound
