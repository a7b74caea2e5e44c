"""Prefill and decode figures against a synthetic GPU whose true power is known.

The real runner and NVML meter are driven in virtual time against
``tests/synthetic_gpu.py``: an energy counter that steps every T at a random
phase, a lagging 1 s averaged power, a 20 ms instant-power field with noise and
its own timestamp. Each scenario is measured over --phases random counter
phases; printed are the worst and median errors of the prefill, the decode and
prefill + decode against the true energy of the generation, how many true
errors lay inside the reported bound, and the time the repetitions added.

    python benchmarks/attribution.py [--phases 20] [--periods 0.1,0.02] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic_gpu import Work, measure_generation, synthetic_pynvml, synthetic_world  # noqa: E402

from pytest_llm_energy.meters.nvml import NvmlMeter  # noqa: E402

TOKEN_S = 0.015  # a 7B model's decode step on an H100


def scenarios() -> list[tuple[str, Work, int]]:
    rows = []
    for prefill_ms in (10, 30, 80, 150, 400):
        rows.append((f"prefill {prefill_ms} ms, decode 0.3 s", Work(prefill_s=prefill_ms / 1000), 21))
    for label, tokens in (("3 tokens", 4), ("0.3 s", 21), ("1 s", 68), ("3 s", 201)):
        rows.append((f"prefill 30 ms, decode {label}", Work(prefill_s=0.03), tokens))
    return rows


VARIANTS = {
    "full": {},
    "no instant field": {"has_instant": False},
    "polled power only": {"has_instant": False, "has_counter": False},
}


def measure_block(seed: int, seconds: float, period: float, **board: object) -> tuple[float, float, float]:
    """A ``measure`` block of ``seconds`` at 600 W right after 0.3 s at 350 W: (error, bound, truth)."""
    time, boards = synthetic_world(seed, period, **board)
    meter = NvmlMeter(nvml=synthetic_pynvml(boards, time), use_env=False, timebase=time)
    meter.start()
    time.advance(1.0)
    gpu = boards[0]
    gpu.set_power(time.now(), 350.0)
    time.advance(0.3)
    start = meter.mark()
    gpu.set_power(time.now(), 600.0)
    time.advance(seconds)
    gpu.set_power(time.now(), gpu.idle_w)
    end = meter.mark()
    window = meter.window(start, end)
    truth = gpu.energy(end.t) - gpu.energy(start.t)
    meter.close()
    return (window.joules - truth) / truth, (window.bound_j or float("inf")) / truth, truth


def blocks(phases: int, period: float, variant: str) -> None:
    """``energy.measure`` blocks cannot be repeated: their error and bound from the edges alone."""
    print(f"{'measure block after a decode':38} {'error':>13} {'bound':>13} {'in bound':>9}")
    for ms in (5, 50, 500):
        rows = [measure_block(seed, ms / 1000, period, **VARIANTS[variant]) for seed in range(phases)]
        inside = sum(abs(e) <= b for e, b, _ in rows)
        print(f"{f'{ms} ms at 600 W':38} {summarise([e for e, _, _ in rows]):>13} "
              f"{summarise([b for _, b, _ in rows]):>13} {inside:>4}/{len(rows):<4}")


def summarise(values: list[float]) -> str:
    magnitudes = [abs(v) for v in values]
    return f"{max(magnitudes) * 100:6.2f} {statistics.median(magnitudes) * 100:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=20)
    parser.add_argument("--periods", default="0.1,0.02")
    parser.add_argument("--variants", default="full,no instant field,polled power only")
    args = parser.parse_args()
    periods = [float(p) for p in args.periods.split(",")]
    print(f"synthetic H100: idle 70 W, prefill 600 W, decode 350 W, {TOKEN_S * 1000:g} ms per token; "
          f"{args.phases} random counter phases per row; errors in %, worst and median")
    header = (f"{'scenario':38} {'prefill':>13} {'decode':>13} {'p + d':>13} {'in bound':>9} "
              f"{'methods':>18} {'extra s':>8}")
    for variant in args.variants.split(","):
        for period in periods:
            if variant == "polled power only" and period != periods[0]:
                continue  # no counter: the period does not matter
            print(f"\n== {variant}, counter every {period * 1000:g} ms ==")
            print(header)
            for label, work, tokens in scenarios():
                outcomes = [measure_generation(seed, work, tokens, period=period, **VARIANTS[variant])
                            for seed in range(args.phases)]
                zero = sum(o.prefill_j <= 0 or o.decode_j <= 0 for o in outcomes)
                methods = "/".join(sorted({o.prefill_method for o in outcomes})) + " " + \
                    "/".join(sorted({o.decode_method for o in outcomes}))
                inside = sum(o.inside_bounds for o in outcomes)
                extra = statistics.median(o.extra_s for o in outcomes)
                print(f"{label:38} {summarise([o.prefill_error for o in outcomes]):>13} "
                      f"{summarise([o.decode_error for o in outcomes]):>13} "
                      f"{summarise([o.conservation_error for o in outcomes]):>13} "
                      f"{inside:>4}/{len(outcomes):<4} {methods:>18} {extra:8.2f}"
                      + (f"  {zero} zero" if zero else ""))
            blocks(args.phases, period, variant)


if __name__ == "__main__":
    main()
