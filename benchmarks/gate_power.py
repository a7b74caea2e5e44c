"""Run-level false-alarm and detection rates of the regression gate, by simulation.

Each simulated run pair compares --tests tests (20; 2 in one scenario),
measured --repeats times in a baseline and in a current run, under the noise
scenarios in ``tests/gate_scenarios.py``. A run *fails* when any comparison is
flagged. Printed side by side, in the same simulated runs: the per-test gate
(noise pooled over tests, each test judged alone at 98.4%) and the run-level
judgement (``pytest_llm_energy/judgement.py``: per-test moderated noise, the
run's shift judged once, weighted Holm at 1% over the session). Columns:
unchanged runs that fail; runs with every test 15% regressed that fail; the
share of runs in which one 15%-regressed test is flagged. Last, ``ceiling``:
how often a test that knows the true noise (the run's mean log shift, judged
at the run comparison's share of the 1%) catches the uniform regression, the
most any gate at that rate can do.

    python benchmarks/gate_power.py [--runs 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gate_scenarios import SCENARIOS, ceiling, rates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.runs} simulated run pairs per cell, {args.repeats} repetitions per side, 15% regressions")
    print(f"{'scenario':44} {'bound':>5} | {'per-test gate: false  all   one':>32} | "
          f"{'run-level: false  all   one':>28} | ceiling")
    for scenario in SCENARIOS:
        for bound in (0.0, 0.10):
            old = rates(scenario, bound, args.repeats, args.runs, args.seed, judge="per-test")
            new = rates(scenario, bound, args.repeats, args.runs, args.seed)
            best = ceiling(scenario, bound, args.repeats, args.runs, args.seed)
            print(f"{scenario.name:44} {bound:5.0%} | {old['false']:>16.1%} {old['all']:6.1%} {old['one']:6.1%}"
                  f" | {new['false']:>12.1%} {new['all']:6.1%} {new['one']:6.1%} | {best:6.1%}", flush=True)


if __name__ == "__main__":
    main()
