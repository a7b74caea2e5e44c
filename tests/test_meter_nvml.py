"""The NVML meter against a fake pynvml with a known power trace."""

import threading
import time

import pytest

from fake_nvml import FakeGpu, make_fake_pynvml
from synthetic_gpu import synthetic_pynvml, synthetic_world
from pytest_llm_energy.meters import MeterError, MeterUnavailable, NvmlMeter
from pytest_llm_energy.meters.nvml import parse_visible_devices


def meter_for(gpus, clock, **kwargs):
    kwargs.setdefault("sample_hz", 100.0)
    return NvmlMeter(nvml=make_fake_pynvml(gpus, clock), use_env=False, clock=clock, **kwargs)


def synthetic_meter(boards, time, **kwargs):
    meter = NvmlMeter(nvml=synthetic_pynvml(boards, time), use_env=False, timebase=time, **kwargs)
    meter.start()
    time.advance(1.0)  # the sampler has seen the counter move for a while
    return meter


def busy(time, boards, seconds, watts):
    start = time.now()
    for board in boards:
        board.set_power(start, watts)
    time.advance(seconds)
    for board in boards:
        board.set_power(time.now(), board.idle_w)


def truth(boards, a, b):
    return sum(board.energy(b) - board.energy(a) for board in boards)


@pytest.mark.parametrize("period", [0.1, 0.02, 0.15])
def test_counter_period_and_phase_are_fitted_from_the_changes_seen(period):
    time, boards = synthetic_world(seed=3, period=period)
    meter = synthetic_meter(boards, time)
    curve = next(iter(meter._curves.values()))
    phase, fitted, _ = curve._grid()
    assert fitted == pytest.approx(period, rel=0.01)
    offset = (phase - boards[0].counter_phase) % period
    assert min(offset, period - offset) < 0.002
    assert meter.describe()["update_period_s"] == pytest.approx(period, rel=0.01)


def test_window_waits_for_the_counter_to_move_past_its_end():
    time, boards = synthetic_world(seed=1, period=0.1)
    meter = synthetic_meter(boards, time)
    start = meter.mark()
    busy(time, boards, 0.35, 400.0)
    end = meter.mark()
    window = meter.window(start, end)
    assert time.now() > end.t  # it waited for an update after the end
    error = abs(window.joules - truth(boards, start.t, end.t))
    assert error <= window.bound_j
    assert error / truth(boards, start.t, end.t) < 0.01


def test_adjacent_windows_add_up_to_the_window_spanning_them():
    time, boards = synthetic_world(seed=5, period=0.1, gpus=2)
    meter = synthetic_meter(boards, time)
    edges = [meter.mark()]
    for seconds, watts in ((0.012, 600.0), (0.2, 350.0), (0.05, 500.0)):
        busy(time, boards, seconds, watts)
        edges.append(meter.mark())
    meter.settle(edges[-1].t)  # then every window is read off the curve in one state
    parts = [meter.window(a, b).joules for a, b in zip(edges, edges[1:])]
    whole = meter.window(edges[0], edges[-1]).joules
    assert sum(parts) == pytest.approx(whole, rel=1e-9)


def test_a_model_spread_over_two_gpus_shows_each_one_s_share():
    time, boards = synthetic_world(seed=6, period=0.1, gpus=2)
    meter = synthetic_meter(boards, time)
    start = meter.mark()
    # The first GPU holds the layers that do most of the work.
    t = time.now()
    boards[0].set_power(t, 500.0)
    boards[1].set_power(t, 200.0)
    time.advance(1.0)
    for board in boards:
        board.set_power(time.now(), board.idle_w)
    end = meter.mark()
    window = meter.window(start, end)
    assert len(window.devices) == 2 and sum(window.devices.values()) == pytest.approx(window.joules)
    first, second = (window.devices[f"cuda:{i} {gpu.uuid}"] for i, gpu in enumerate(meter.gpus))
    for share, board in ((first, boards[0]), (second, boards[1])):
        assert share == pytest.approx(board.energy(end.t) - board.energy(start.t), rel=0.02)


def test_a_window_between_counter_updates_is_never_zero_and_its_bound_holds():
    # A 150 ms board and a 110 ms window: the counter may not move inside it.
    for seed in range(10):
        time, boards = synthetic_world(seed=seed, period=0.15, has_instant=False)
        meter = synthetic_meter(boards, time)
        start = meter.mark()
        busy(time, boards, 0.11, 300.0)
        end = meter.mark()
        window = meter.window(start, end)
        real = truth(boards, start.t, end.t)
        assert window.joules > 0
        assert abs(window.joules - real) <= window.bound_j


def test_gpu_without_instant_power_is_degraded_alone_and_says_so():
    time, boards = synthetic_world(seed=2, period=0.1, gpus=2)
    boards[1].has_instant = False
    meter = synthetic_meter(boards, time)
    assert any("GPU 1" in n and "no instant-power field" in n for n in meter.notices)
    assert not any("GPU 0" in n for n in meter.notices)
    start = meter.mark()
    busy(time, boards, 0.5, 400.0)
    end = meter.mark()
    window = meter.window(start, end)
    assert abs(window.joules - truth(boards, start.t, end.t)) <= window.bound_j
    # GPU 0 still has its instant-power timeline; GPU 1 splits its steps evenly.
    assert len(meter._curves[boards[0].uuid].power) > 50
    assert len(meter._curves[boards[1].uuid].power) == 0


def test_gpu_without_power_usage_does_not_fail_the_run():
    time, boards = synthetic_world(seed=2, period=0.1, gpus=2)
    boards[0].has_power_usage = False
    meter = synthetic_meter(boards, time)
    start = meter.mark()
    busy(time, boards, 0.4, 400.0)
    end = meter.mark()
    window = meter.window(start, end)
    assert abs(window.joules - truth(boards, start.t, end.t)) <= window.bound_j


def test_gpu_with_no_source_at_all_is_left_out_with_a_reason():
    time, boards = synthetic_world(seed=2, period=0.1, gpus=2)
    boards[1].has_counter = boards[1].has_instant = boards[1].has_power_usage = False
    meter = synthetic_meter(boards, time)
    assert [g.index for g in meter.gpus] == [0]
    assert any("GPU 1" in n and "not metered" in n for n in meter.notices)


def test_polled_power_is_labelled_polled_and_its_bound_holds():
    for seed in range(5):
        time, boards = synthetic_world(seed=seed, period=0.1, has_counter=False, has_instant=False)
        meter = synthetic_meter(boards, time)
        time.advance(2.0)
        start = meter.mark()
        busy(time, boards, 0.005, 600.0)  # a 5 ms block right after work
        end = meter.mark()
        window = meter.window(start, end)
        assert window.method == "polled"
        assert abs(window.joules - truth(boards, start.t, end.t)) <= window.bound_j


def test_sampler_errors_are_retried_not_the_end_of_sampling():
    time, boards = synthetic_world(seed=4, period=0.1)
    nvml = synthetic_pynvml(boards, time)
    meter = NvmlMeter(nvml=nvml, use_env=False, timebase=time)
    meter.start()
    time.advance(0.5)
    nvml.failures[(0, "fields")] = 20  # a burst of failing instant-power reads
    nvml.failures[(0, "energy")] = 20  # and of counter reads
    time.advance(1.0)
    curve = next(iter(meter._curves.values()))
    assert meter.gpus[0].failures >= 1
    # Sampling goes on after the burst: fresh power samples and counter updates.
    assert curve.power.ends[-1] > time.now() - 0.05
    assert curve._hi[-1] > time.now() - 0.15


def test_repetitions_are_not_billed_to_an_enclosing_window():
    from synthetic_gpu import TimedBackend, Work
    from pytest_llm_energy.attribution import measure_repeated

    time, boards = synthetic_world(seed=6, period=0.1)
    meter = synthetic_meter(boards, time)
    backend = TimedBackend(time, boards, Work(prefill_s=0.01))
    outer_start = meter.mark()
    busy(time, boards, 0.3, 350.0)
    repeated = measure_repeated(meter, backend, lambda: backend.start().prefill([1]), meter.short_windows)
    busy(time, boards, 0.3, 350.0)
    outer_end = meter.mark()
    outer = meter.window(outer_start, outer_end)
    spent = truth(boards, outer_start.t, outer_end.t)
    assert repeated.repeats >= 90
    (rep_start, rep_end), = meter._excluded
    assert outer.joules < 0.5 * spent  # the second of repetitions is left out
    assert outer.joules == pytest.approx(spent - truth(boards, rep_start.t, rep_end.t), rel=0.01)


def test_lost_gpu_raises_a_meter_error_naming_the_gpu(clock):
    gpu = FakeGpu(name="NVIDIA Fake A100")
    meter = meter_for([gpu], clock)
    meter.mark()
    gpu.lost = True
    with pytest.raises(MeterError, match="GPU is lost") as info:
        meter.mark()
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


def test_background_sampler_runs_in_a_thread_and_stops_on_close():
    gpu = FakeGpu(trace=[(0.0, 150.0)])
    meter = NvmlMeter(nvml=make_fake_pynvml([gpu], time.perf_counter), use_env=False, sample_hz=200)
    meter.start()
    time.sleep(0.1)
    curve = next(iter(meter._curves.values()))
    assert len(curve.power) >= 5  # instant-power samples arrived from the thread
    meter.close()
    assert not any(t.name.startswith("llm-energy-nvml") for t in threading.enumerate())
    assert meter.nvml.initialised == 0
