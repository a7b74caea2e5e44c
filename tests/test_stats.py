"""The per-test change statistics the comparison table shows (the gate's rates: test_judgement.py)."""

import math

import pytest

from pytest_llm_energy.stats import pooled_noise, relative_change, t_quantile, total_change


@pytest.mark.parametrize("p, df, expected", [
    (0.99, 8, 2.896), (0.975, 4, 2.776), (0.95, 30, 1.697), (0.992, 160, 2.44), (0.975, 10 ** 6, 1.960),
])
def test_t_quantiles(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, rel=0.01)


def test_estimate_of_an_exact_shift():
    change = relative_change([10.0, 11.0, 12.0], [12.0, 13.2, 14.4])  # every value +20%
    assert change.estimate == pytest.approx(0.2)
    assert change.low < 0.2 < change.high  # the spread within each group widens the interval
    exact = relative_change([10.0, 10.0, 10.0], [12.0, 12.0, 12.0])
    assert exact.low == pytest.approx(0.2) and exact.high == pytest.approx(0.2)  # no spread: no width


def test_single_values_give_no_interval():
    change = relative_change([10.0], [11.0])
    assert change.estimate == pytest.approx(0.1) and change.low == change.high == change.estimate


def test_pooled_noise_of_log_values():
    noise = pooled_noise([[1.0, math.e], [10.0, 10.0 * math.e]])
    assert noise.df == 2 and noise.sigma == pytest.approx(math.sqrt(0.5))
    assert pooled_noise([[1.0], [2.0]]) is None


def test_total_change_of_a_suite():
    change = total_change([([10.0, 10.0], [12.0, 12.0]), ([30.0, 30.0], [30.0, 30.0])], noise=None)
    assert change.estimate == pytest.approx(0.05) and change.baseline == 40.0 and change.current == 42.0
