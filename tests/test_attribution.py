"""Prefill and decode figures against the synthetic GPU's known truth.

The real runner and NVML meter run in virtual time on boards whose counter
steps every 100 or 20 ms at random phases (see synthetic_gpu.py). A few
phases per scenario here; benchmarks/attribution.py runs twenty and prints the
errors.
"""

import pytest

from synthetic_gpu import Work, measure_generation
from pytest_llm_energy.meters import ShortWindows

PHASES = range(4)


@pytest.mark.parametrize("period", [0.1, 0.02])
@pytest.mark.parametrize("prefill_s, limit", [(0.01, 0.05), (0.03, 0.03), (0.15, 0.03), (0.4, 0.03)])
def test_prefill_error_is_within_target_and_bound(period, prefill_s, limit):
    for seed in PHASES:
        outcome = measure_generation(seed, Work(prefill_s=prefill_s), 21, period=period)
        assert abs(outcome.prefill_error) <= limit, outcome
        assert abs(outcome.conservation_error) <= 0.01, outcome
        assert outcome.inside_bounds, outcome


@pytest.mark.parametrize("tokens, limit", [(4, None), (68, 0.02), (201, 0.02)])
def test_decode_error_is_within_target_and_phases_add_up(tokens, limit):
    for seed in PHASES:
        outcome = measure_generation(seed, Work(prefill_s=0.03), tokens, period=0.1)
        if limit is not None:
            assert abs(outcome.decode_error) <= limit, outcome
        assert abs(outcome.conservation_error) <= 0.01, outcome
        assert outcome.prefill_j > 0 and outcome.decode_j > 0
        assert outcome.inside_bounds, outcome


@pytest.mark.parametrize("board", [{"has_instant": False}, {"has_instant": False, "has_counter": False}])
def test_degraded_boards_keep_their_bounds(board):
    for seed in PHASES:
        outcome = measure_generation(seed, Work(prefill_s=0.03), 21, period=0.1, **board)
        assert outcome.inside_bounds, outcome
        assert outcome.prefill_j > 0 and outcome.decode_j > 0


def test_polled_figures_are_labelled_polled():
    outcome = measure_generation(1, Work(prefill_s=0.03), 21, period=0.1, has_instant=False, has_counter=False)
    assert outcome.prefill_method == "repeat+polled"  # repeated, and what it was read from
    assert outcome.decode_method == "difference+polled"


def test_split_never_repeats_and_its_wider_bounds_still_hold():
    for seed in PHASES:
        outcome = measure_generation(seed, Work(prefill_s=0.01), 21, short_windows=ShortWindows(mode="split"))
        assert outcome.prefill_method == "counter" and outcome.decode_method == "counter"
        assert outcome.extra_s < 0.3  # only the wait for the counter to move past the end
        assert outcome.inside_bounds, outcome
        assert outcome.prefill_j > 0
        assert abs(outcome.conservation_error) <= 0.05


def test_repeat_repeats_even_a_long_prefill():
    outcome = measure_generation(2, Work(prefill_s=0.4), 68, short_windows=ShortWindows(mode="repeat"))
    assert outcome.prefill_method == "repeat"
    assert abs(outcome.prefill_error) <= 0.03 and outcome.inside_bounds


def test_two_gpus_one_missing_a_function_both_metered():
    def degrade(boards):
        boards[0].has_power_usage = False
        boards[1].has_instant = False

    for seed in PHASES:
        outcome = measure_generation(seed, Work(prefill_s=0.03), 68, gpus=2, tweak=degrade)
        assert outcome.inside_bounds, outcome
        assert abs(outcome.conservation_error) <= 0.02, outcome


def test_a_meter_added_through_the_hook_gets_the_same_arithmetic():
    """A one-device meter that only implements read() of a stepped counter."""
    from synthetic_gpu import SyntheticGpu, VirtualTime

    from pytest_llm_energy.meters import Meter, Reading

    time = VirtualTime(seed=3)
    board = SyntheticGpu(counter_period=0.05, counter_phase=0.013)

    class SteppedPlug(Meter):
        name = "plug"
        resolution_s = 0.1  # updates at most this far apart
        sample_hz = 200.0

        def read(self):
            return Reading(t=self.clock(), joules=board.counter_mj(self.clock()) / 1000.0)

    meter = SteppedPlug(timebase=time)
    meter.start()
    time.advance(1.0)
    start = meter.mark()
    board.set_power(time.now(), 500.0)
    time.advance(0.33)
    board.set_power(time.now(), board.idle_w)
    end = meter.mark()
    window = meter.window(start, end)
    true = board.energy(end.t) - board.energy(start.t)
    assert meter.update_period() == pytest.approx(0.05, rel=0.02)
    assert abs(window.joules - true) <= window.bound_j
