"""False-alarm and detection rates of the regression gate, by simulation.

Each simulated run compares --tests tests, each measured --repeats times in a
baseline and in a current run with log-normal noise of --cv, using the gate's
own statistics (Hodges-Lehmann change, interval from noise pooled over the
tests). Prints the share of per-test comparisons flagged as regressions for a
range of true changes and bounds.

    python benchmarks/gate_power.py [--tests 20] [--repeats 5] [--cv 0.05] [--runs 300]
"""

from __future__ import annotations

import argparse

from pytest_llm_energy.stats import DEFAULT_CONFIDENCE, simulated_flag_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cv", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"{args.tests} tests per run, {args.repeats} repetitions per side, {args.cv:.0%} noise (CV), "
          f"{args.runs} runs, {DEFAULT_CONFIDENCE:.1%} two-sided interval")
    print(f"{'true change':>12} {'bound':>6} {'flagged':>8}")
    for shift, bound, label in [(0.0, 0.0, "false alarms"), (0.15, 0.0, "detection"), (0.0, 0.10, "false alarms"),
                                (0.15, 0.10, "detection"), (0.25, 0.10, "detection")]:
        share = simulated_flag_rate(shift, bound, args.tests, args.repeats, args.cv, args.runs, args.seed)
        print(f"{shift:>+12.0%} {bound:>6.0%} {share:>8.2%}  ({label})")


if __name__ == "__main__":
    main()
