"""The NVML meter against a fake pynvml with a known power trace."""

import threading
import time

import pytest

from fake_nvml import FakeGpu, make_fake_pynvml
from pytest_llm_energy.meters import MeterError, MeterUnavailable, NvmlMeter
from pytest_llm_energy.meters.nvml import parse_visible_devices


def meter_for(gpus, clock, **kwargs):
    kwargs.setdefault("sample_hz", 100.0)
    return NvmlMeter(nvml=make_fake_pynvml(gpus, clock), use_env=False, clock=clock, **kwargs)


# Idle 50 W, a 50 ms prefill at 100 W, a 500 ms decode at 250 W, then idle.
PHASED = [(0.0, 50.0), (0.05, 100.0), (0.1, 250.0), (0.6, 50.0)]


def run_phases(meter, clock, sample_every=0.01, edges=(0.05, 0.1, 0.6), until=0.65):
    """Advance the fake clock, sampling instant power, reading at the edges."""
    readings = []
    clock.now = edges[0]
    readings.append(meter.read())
    t = edges[0]
    for edge in edges[1:]:
        while t + sample_every < edge - 1e-9:
            t += sample_every
            clock.now = t
            if meter.sample_hz:
                meter.sample_instant_power()
        clock.now = t = edge
        readings.append(meter.read())
    while t + sample_every <= until:
        t += sample_every
        clock.now = t
        if meter.sample_hz:
            meter.sample_instant_power()
    return readings


def test_short_prefill_is_attributed_from_instant_power_samples(clock):
    gpu = FakeGpu(trace=PHASED)
    meter = meter_for([gpu], clock)
    r0, r1, r2 = run_phases(meter, clock)

    prefill = meter.window(r0, r1, tokens=40)
    decode = meter.window(r1, r2, tokens=99)

    # Across the 50 ms prefill the counter jumped by a whole update period
    # (idle time included): 7.5 J, not the prefill's 5 J.
    assert r1.joules - r0.joules == pytest.approx(7.5)
    assert prefill.below_resolution and prefill.method == "power-samples"
    assert prefill.joules == pytest.approx(gpu.energy(0.1) - gpu.energy(0.05))  # 5 J
    assert prefill.joules == pytest.approx(5.0)
    # The decode window spans counter updates and is read from the counter.
    assert not decode.below_resolution and decode.method == "counter"
    assert decode.joules == pytest.approx(gpu.energy(0.6) - gpu.energy(0.1), abs=1e-3)  # 125 J
    assert decode.joules_per_token == pytest.approx(125.0 / 99, abs=1e-4)


def test_counter_windows_between_updates_err_by_at_most_one_period_per_edge(clock):
    gpu = FakeGpu(trace=PHASED)
    meter = meter_for([gpu], clock, sample_hz=0)
    r0, r1 = run_phases(meter, clock, edges=(0.03, 0.57))
    truth = gpu.energy(0.57) - gpu.energy(0.03)
    measured = meter.window(r0, r1).joules
    assert measured != pytest.approx(truth)  # quantised, as a real counter is
    assert abs(measured - truth) <= 2 * gpu.counter_period * 250.0


def test_without_sampler_short_window_uses_power_at_the_edges(clock):
    gpu = FakeGpu(trace=PHASED)
    meter = meter_for([gpu], clock, sample_hz=0)
    r0, r1 = run_phases(meter, clock, edges=(0.05, 0.09))
    window = meter.window(r0, r1, tokens=10)
    assert window.below_resolution and window.method == "edge-power"
    assert window.joules == pytest.approx(100.0 * 0.04)
    assert window.joules > 0


def test_gpu_without_instant_power_falls_back_to_edge_power(clock):
    gpu = FakeGpu(trace=PHASED, instant_power=False)
    meter = meter_for([gpu], clock)
    assert meter.sample_instant_power() is None
    r0, r1 = run_phases(meter, clock, edges=(0.05, 0.09))
    assert meter.window(r0, r1).method == "edge-power"


def test_sample_between_neighbours_is_interpolated(clock):
    gpu = FakeGpu(trace=[(0.0, 100.0), (1.0, 300.0)])
    meter = meter_for([gpu], clock)
    clock.now = 0.5
    meter.sample_instant_power()
    clock.now = 1.5
    meter.sample_instant_power()
    # No sample inside [0.9, 1.1]; the window's midpoint lies halfway.
    assert meter.power_between(0.9, 1.1) == pytest.approx(200.0)


def test_gpus_without_counter_are_integrated_from_polled_power(clock):
    gpu = FakeGpu(trace=[(0.0, 100.0), (0.5, 300.0)], has_counter=False)
    meter = meter_for([gpu], clock, sample_hz=0, poll_interval_s=0.02)
    assert meter.resolution_s == pytest.approx(0.1)
    first = meter.read()
    last = first
    for step in range(1, 51):
        clock.now = step * 0.02
        last = meter.read()
    truth = gpu.energy(1.0)  # 200 J
    # Trapezoids only err on the poll interval that holds the step.
    assert meter.window(first, last).joules == pytest.approx(truth, abs=0.02 * 200 / 2 + 1e-9)


def test_energy_of_all_visible_gpus_adds_up(clock):
    gpus = [
        FakeGpu(uuid="GPU-aaaa", trace=[(0.0, 100.0)]),
        FakeGpu(uuid="GPU-bbbb", trace=[(0.0, 300.0)]),
    ]
    meter = meter_for(gpus, clock)
    r0 = meter.read()
    clock.now = 2.0
    r1 = meter.read()
    assert meter.window(r0, r1).joules == pytest.approx(800.0)
    assert len(meter.devices()) == 2 and "GPU-bbbb" in meter.devices()[1]


def test_lost_gpu_raises_a_meter_error_naming_the_gpu(clock):
    gpu = FakeGpu(name="NVIDIA Fake A100")
    meter = meter_for([gpu], clock)
    meter.read()
    gpu.lost = True
    with pytest.raises(MeterError, match="GPU is lost") as info:
        meter.read()
    assert "NVIDIA Fake A100" in str(info.value)


def test_nvml_that_cannot_start_is_unavailable(clock):
    nvml = make_fake_pynvml([FakeGpu()], clock, init_error=9)
    with pytest.raises(MeterUnavailable, match="NVML could not start"):
        NvmlMeter(nvml=nvml, use_env=False, clock=clock)


@pytest.fixture
def three_gpus(clock):
    gpus = [
        FakeGpu(uuid="GPU-aaaa1111-0000"),
        FakeGpu(uuid="GPU-bbbb2222-0000"),
        FakeGpu(uuid="GPU-cccc3333-0000"),
    ]
    return gpus, make_fake_pynvml(gpus, clock)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, [0, 1, 2]),
        ("2,0", [2, 0]),
        ("GPU-bbbb2222-0000", [1]),
        ("bbbb", [1]),  # a unique prefix, as CUDA accepts
        ("0, 2", [0, 2]),
        ("1,7,0", [1]),  # CUDA stops at the first entry naming no device
        ("0,0", [0]),
        ("-1", []),
        ("", []),
        ("GPU-", []),  # ambiguous prefix
    ],
)
def test_cuda_visible_devices_selects_gpus(three_gpus, value, expected):
    gpus, nvml = three_gpus
    handles = parse_visible_devices(value, nvml)
    assert handles == [gpus[i] for i in expected]


def test_mig_uuid_resolves_to_its_parent_gpu(clock):
    gpu = FakeGpu(uuid="MIG-1234")
    nvml = make_fake_pynvml([gpu], clock)
    assert parse_visible_devices("MIG-1234", nvml) == [gpu]


def test_meter_reads_cuda_visible_devices_from_the_environment(three_gpus, clock, monkeypatch):
    gpus, nvml = three_gpus
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    meter = NvmlMeter(nvml=nvml, clock=clock)
    assert [g.handle for g in meter.gpus] == [gpus[2]]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(MeterUnavailable, match="no GPU"):
        NvmlMeter(nvml=nvml, clock=clock)


def test_background_sampler_collects_samples_and_stops_on_close():
    gpu = FakeGpu(trace=[(0.0, 150.0)])
    meter = NvmlMeter(nvml=make_fake_pynvml([gpu], time.perf_counter), use_env=False, sample_hz=200)
    meter.start()
    t0 = time.perf_counter()
    time.sleep(0.1)
    t1 = time.perf_counter()
    assert meter.power_between(t0, t1) == pytest.approx(150.0)
    meter.close()
    assert not any(t.name.startswith("llm-energy-nvml") for t in threading.enumerate())
    assert meter.nvml.initialised == 0
