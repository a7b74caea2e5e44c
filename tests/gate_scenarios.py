"""Simulated comparison runs with known truth, for the gate's run-level rates.

Each run pair has ``tests`` tests of different sizes, measured ``repeats``
times in a baseline and in a current run under one of the noise scenarios the
gate must survive. The judge is the project's own (``judgement``), fed the
values in repetition order as ``baseline.compare`` feeds it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Optional

from pytest_llm_energy.judgement import DEFAULT_RUN_TOLERANCE, FAMILY_ALPHA, RUN_SHARE, comparisons, holm, model_metric
from pytest_llm_energy.stats import pooled_noise, relative_change


@dataclass(frozen=True)
class Scenario:
    name: str
    cv: Callable[[random.Random, int], float] = lambda rng, i: 0.05
    tail: float = 0.0          # share of repetitions hit by a 1.5x spike
    rho: float = 0.0           # AR(1) correlation of consecutive repetitions
    warmup: float = 0.0        # first repetition this much high
    drift: float = 0.0         # the current run drifts this much from its first test to its last
    shift: float = 0.0         # the whole current run this much high
    tests: int = 20
    # Slow noise over successive generations in run order (AR(1) coefficient per
    # generation), with repetitions back to back or in rounds.
    slow: float = 0.0
    order: str = "back-to-back"


def _counter_cv(rng: random.Random, i: int) -> float:
    tokens = math.exp(rng.uniform(math.log(16), math.log(256)))
    seconds = tokens * 0.015
    # Whatever a window's edges leave unresolved, relative to the window: about
    # 2 ms of a 100 ms counter's placement and split, plus 1% of other noise.
    return math.hypot(0.01, 0.002 / seconds * 3)


SCENARIOS = [
    Scenario("iid lognormal 5%"),
    Scenario("heterogeneous: 5 tests at 15%, 15 at 1%", cv=lambda rng, i: 0.15 if i < 5 else 0.01),
    Scenario("heavy tails: 2% of repetitions 1.5x", tail=0.02),
    Scenario("AR(1) rho = 0.6 over repetitions", rho=0.6),
    Scenario("slow noise AR 0.6/generation, back to back", slow=0.6),
    Scenario("slow noise AR 0.6/generation, in rounds", slow=0.6, order="rounds"),
    Scenario("warm-up: first repetition 10% high", warmup=0.10),
    Scenario("drift: +5% over the current run", drift=0.05),
    Scenario("the current run +4% everywhere", shift=0.04),
    Scenario("only 2 tests", tests=2),
    Scenario("windows through a 100 ms counter", cv=_counter_cv),
]


def _series(rng: random.Random, level: float, cv: float, repeats: int, scenario: Scenario,
            factor: float) -> list[float]:
    values = []
    previous = rng.gauss(0, 1)
    for r in range(repeats):
        innovation = rng.gauss(0, 1)
        noise = scenario.rho * previous + math.sqrt(1 - scenario.rho ** 2) * innovation if r else previous
        previous = noise
        value = level * factor * math.exp(cv * noise)
        if scenario.tail and rng.random() < scenario.tail:
            value *= 1.5
        if r == 0 and scenario.warmup:
            value *= 1 + scenario.warmup
        values.append(value)
    return values


def _order(scenario: Scenario, tests: int, repeats: int) -> list[tuple[int, int]]:
    """(test, repetition) in the order the run measures them."""
    if scenario.order == "rounds":
        return [(t, r) for r in range(repeats) for t in range(tests)]
    return [(t, r) for t in range(tests) for r in range(repeats)]


def _slow_noise(rng: random.Random, scenario: Scenario, tests: int, repeats: int) -> list[list[float]]:
    """Unit-variance AR(1) noise over the run's generations, in the order they run."""
    noise = [[0.0] * repeats for _ in range(tests)]
    value = rng.gauss(0, 1)
    for t, r in _order(scenario, tests, repeats):
        value = scenario.slow * value + math.sqrt(1 - scenario.slow ** 2) * rng.gauss(0, 1)
        noise[t][r] = value
    return noise


def run_pairs(rng: random.Random, scenario: Scenario, repeats: int, regressed: Optional[set[int]] = None,
              regression: float = 0.15) -> tuple[dict, dict]:
    """One run pair's values per test (baseline, current) and their places in execution order."""
    regressed = regressed or set()
    pairs = {}
    k = scenario.tests
    slow = (_slow_noise(rng, scenario, k, repeats), _slow_noise(rng, scenario, k, repeats)) if scenario.slow else None
    for i in range(k):
        level = rng.uniform(0.5, 50.0)
        cv = scenario.cv(rng, i)
        drift = 1 + scenario.drift * (i / max(k - 1, 1))
        factor = (1 + scenario.shift) * drift * ((1 + regression) if i in regressed else 1.0)
        if slow is not None:
            pairs[f"t{i}"] = ([level * math.exp(cv * z) for z in slow[0][i]],
                              [level * factor * math.exp(cv * z) for z in slow[1][i]])
            continue
        pairs[f"t{i}"] = (_series(rng, level, cv, repeats, scenario, 1.0),
                          _series(rng, level, cv, repeats, scenario, factor))
    place = {(t, r): float(i) for i, (t, r) in enumerate(_order(scenario, k, repeats))}
    positions = {f"t{i}": ([place[i, r] for r in range(repeats)],) * 2 for i in range(k)}
    return pairs, positions


def run_model(rng: random.Random, scenario: Scenario, repeats: int, regressed: Optional[set[int]] = None):
    pairs, positions = run_pairs(rng, scenario, repeats, regressed)
    return model_metric("total_j", pairs, positions=positions)


def simulate_run(rng: random.Random, scenario: Scenario, repeats: int, bound: float,
                 regressed: Optional[set[int]] = None, regression: float = 0.15,
                 judge: str = "run") -> tuple[bool, set[int]]:
    """One run pair: whether the gate failed it, and which tests it flagged.

    ``judge="run"`` is the run-level judgement; ``"per-test"`` the per-test
    gate (pooled noise, each test at 98.4%) for comparison.
    """
    pairs, positions = run_pairs(rng, scenario, repeats, regressed, regression)
    if judge == "per-test":
        noise = pooled_noise([g for pair in pairs.values() for g in pair])
        flagged = {int(t[1:]) for t, (b, c) in pairs.items() if relative_change(b, c, noise).beyond(bound)}
        return bool(flagged), flagged
    model = model_metric("total_j", pairs, positions=positions)
    verdicts = holm(comparisons(model, bound))
    flagged = {int(v.scope[1:]) for v in verdicts if v.failed and v.scope.startswith("t")}
    return any(v.failed for v in verdicts), flagged


def _mean_shift(pairs: dict) -> float:
    """The plain mean over tests of the change in mean log value."""
    shifts = [sum(map(math.log, c)) / len(c) - sum(map(math.log, b)) / len(b) for b, c in pairs.values()]
    return sum(shifts) / len(shifts)


def ceiling(scenario: Scenario, bound: float, repeats: int = 5, runs: int = 1000, seed: int = 1,
            regression: float = 0.15, level: float = FAMILY_ALPHA * RUN_SHARE) -> float:
    """How often a uniform regression is caught by a test that *knows* the noise.

    The mean log shift of the run, judged at the run comparison's share of the
    1% against the bound it is judged by, with its null spread taken from
    ``runs`` simulated unchanged run pairs (the truth, which a real gate has to
    estimate). What no test of the run's shift can much improve on.
    """
    rng = random.Random(seed)
    null = [_mean_shift(run_pairs(rng, scenario, repeats)[0]) for _ in range(runs)]
    centre = sum(null) / runs
    spread = math.sqrt(sum((x - centre) ** 2 for x in null) / (runs - 1))
    threshold = math.log1p(max(bound, DEFAULT_RUN_TOLERANCE)) + NormalDist().inv_cdf(1 - level) * spread
    everyone = set(range(scenario.tests))
    caught = sum(_mean_shift(run_pairs(rng, scenario, repeats, everyone, regression)[0]) > threshold
                 for _ in range(runs))
    return caught / runs


def rates(scenario: Scenario, bound: float, repeats: int = 5, runs: int = 1000, seed: int = 1,
          regression: float = 0.15, judge: str = "run") -> dict[str, float]:
    """Run-level rates: unchanged runs that fail, all tests regressed caught, one test caught."""
    rng = random.Random(seed)
    unchanged = sum(simulate_run(rng, scenario, repeats, bound, judge=judge)[0] for _ in range(runs))
    everyone = set(range(scenario.tests))
    all_caught = sum(simulate_run(rng, scenario, repeats, bound, everyone, regression, judge)[0]
                     for _ in range(runs))
    one = 0
    for _ in range(runs):
        target = rng.randrange(scenario.tests)
        _, flagged = simulate_run(rng, scenario, repeats, bound, {target}, regression, judge)
        one += target in flagged
    return {"false": unchanged / runs, "all": all_caught / runs, "one": one / runs}
