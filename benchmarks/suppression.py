"""Decode cost per token of ``tests`` babbling suppression versus ``off``.

A scripted backend replays each task's canonical solution followed by babble
(extra helper functions and prints), running builtin:tiny's real forward pass
for every token so decoding costs what a model's would. Both modes run
alternately on the same completions. Prints decode time per token of each, the
ratio (target: <= 1.10), and what suppression saved in tokens and decode time.

    python benchmarks/suppression.py [--tasks 0-9] [--rounds 3] [--sync]
"""

from __future__ import annotations

import argparse
import statistics

from pytest_llm_energy.backends.hf import HFBackend
from pytest_llm_energy.backends.scripted import ScriptedBackend
from pytest_llm_energy.meters import EstimateMeter
from pytest_llm_energy.sandbox import Sandbox
from pytest_llm_energy.tasks.humaneval import HumanEvalSettings, load_problems, parse_task_selection, run_case

BABBLE = (
    "\n\ndef helper_{n}(values):\n"
    "    result = []\n"
    "    for value in values:\n"
    "        if value is not None:\n"
    "            result.append(value)\n"
    "    return result\n"
    "\n\nprint(helper_{n}([1, None, 2]))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="0-9")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--babble-blocks", type=int, default=4, help="babbled helper functions per completion")
    parser.add_argument("--sync", action="store_true", help="run checks inline instead of in the background")
    args = parser.parse_args()

    problems = [load_problems()[i] for i in parse_task_selection(args.tasks)]
    scripts = {p["prompt"]: p["canonical_solution"] + "".join(BABBLE.format(n=n) for n in range(args.babble_blocks))
               for p in problems}
    base = HFBackend.load("builtin:tiny", device="cpu")
    backend = ScriptedBackend(base, lambda prompt: next(s for k, s in scripts.items() if k.strip() in prompt),
                              run_model=True)
    meter = EstimateMeter()
    settings = HumanEvalSettings(max_new_tokens=2048, background_checks=not args.sync)

    per_token: dict[str, list[float]] = {"off": [], "tests": []}
    totals = {mode: {"tokens": 0, "seconds": 0.0, "joules": 0.0, "passed": 0} for mode in per_token}
    with Sandbox(workers=2) as box:
        run_case(problems[0], "tests", backend, meter, box, settings)  # warm-up
        for _ in range(args.rounds):
            for problem in problems:
                for mode in ("off", "tests"):
                    result = run_case(problem, mode, backend, meter, box, settings)
                    decode = result.decode
                    per_token[mode].append(decode.seconds / decode.tokens)
                    totals[mode]["tokens"] += result.new_tokens
                    totals[mode]["seconds"] += decode.seconds
                    totals[mode]["joules"] += decode.joules
                    totals[mode]["passed"] += bool(result.passed)

    off_ms = statistics.median(per_token["off"]) * 1000
    tests_ms = statistics.median(per_token["tests"]) * 1000
    print(f"{len(problems)} tasks x {args.rounds} rounds, canonical solution + {args.babble_blocks} babbled "
          f"functions, builtin:tiny forward per token, checks {'inline' if args.sync else 'in the background'}")
    for mode, ms in (("off", off_ms), ("tests", tests_ms)):
        t = totals[mode]
        print(f"{mode:5}: {ms:6.3f} ms decode per token (median), {t['tokens']:6d} tokens, "
              f"{t['seconds']:7.2f} s decode, {t['joules']:8.2f} J decode (estimated), pass {t['passed']}")
    print(f"ratio tests/off decode time per token: {tests_ms / off_ms:.3f}")
    saved = 1 - totals["tests"]["seconds"] / totals["off"]["seconds"]
    print(f"suppression saved {1 - totals['tests']['tokens'] / totals['off']['tokens']:.1%} of tokens and "
          f"{saved:.1%} of decode time")


if __name__ == "__main__":
    main()
