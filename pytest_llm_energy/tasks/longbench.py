"""LongBench v1 code tasks (lcc, repobench-p): long prompts, code similarity.

Records are read from a local directory in LongBench's own JSONL format;
nothing is downloaded. Prompts, the generation length and the metric follow
LongBench v1 (``config/dataset2prompt.json``, ``dataset2maxlen.json``,
``pred.py`` and ``metrics.py``).
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..results import CaseResult

SUBSETS = ("lcc", "repobench-p")
PROMPTS = {
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",
}
MAX_NEW_TOKENS = 64  # dataset2maxlen.json: 64 for both code tasks
FIELDS = ("input", "context", "answers", "length", "dataset", "language", "all_classes", "_id")
ENV_DIR = "LONGBENCH_DIR"
# LongBench-E's length buckets, in prompt tokens.
BUCKETS = ((0, 4000, "<4k"), (4000, 8000, "4k-8k"), (8000, float("inf"), "8k+"))


class DataError(Exception):
    """LongBench data is missing or unreadable; the message names what was looked for."""


@dataclass(frozen=True)
class LoadedRecords:
    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)  # "file:line: why", one per malformed line


def load_records(directory: str, subset: str) -> LoadedRecords:
    """Every well-formed record of ``subset``; malformed lines are reported, not dropped silently."""
    if subset not in SUBSETS:
        raise DataError(f"unknown LongBench subset {subset!r}; the code tasks are {', '.join(SUBSETS)}")
    if not directory:
        raise DataError(f"no LongBench directory: set --longbench-dir, ini longbench_dir or ${ENV_DIR}")
    path = os.path.join(directory, f"{subset}.jsonl")
    if not os.path.isdir(directory):
        raise DataError(f"LongBench directory {directory} does not exist (looked for {path})")
    if not os.path.isfile(path):
        raise DataError(f"no {subset}.jsonl in {directory} (looked for {path})")
    records, skipped = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                skipped.append(f"{path}:{number}: not JSON ({exc})")
                continue
            missing = [f for f in FIELDS if not isinstance(record, dict) or f not in record]
            if missing:
                skipped.append(f"{path}:{number}: missing {', '.join(missing)}")
                continue
            if not isinstance(record["answers"], list) or not all(isinstance(a, str) for a in record["answers"]):
                skipped.append(f"{path}:{number}: answers is not a list of strings")
                continue
            records.append(record)
    return LoadedRecords(records, skipped)


def select_records(records: Sequence[Mapping[str, Any]], limit: Optional[int] = None,
                   languages: Optional[Iterable[str]] = None) -> list[Mapping[str, Any]]:
    wanted = {lang.lower() for lang in languages} if languages else None
    chosen = [r for r in records if wanted is None or str(r["language"]).lower() in wanted]
    return chosen[:limit] if limit else chosen


def build_prompt(record: Mapping[str, Any], subset: str) -> str:
    # str.format would choke on braces in code: substitute the fields one by one.
    template = PROMPTS[subset]
    return template.replace("{context}", record["context"]).replace("{input}", record.get("input", ""))


def truncate_middle(prompt: str, backend: Any, max_length: int) -> tuple[str, bool]:
    """Cut a prompt longer than ``max_length`` tokens in the middle, as LongBench's pred.py does.

    The first half and the last half of its token ids are decoded (special
    tokens skipped) and joined, keeping the instruction and the code nearest to
    the line to predict.
    """
    ids = backend.encode(prompt)
    if len(ids) <= max_length:
        return prompt, False
    half = int(max_length / 2)
    return backend.decode(ids[:half]) + backend.decode(ids[-half:]), True


def fuzz_ratio(a: str, b: str) -> int:
    """fuzzywuzzy's ``fuzz.ratio`` without python-Levenshtein, exactly."""
    if a is None or b is None:
        return 0
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, a, b).ratio()))


def code_sim_score(prediction: str, answer: str) -> float:
    """LongBench v1's metric for lcc and repobench-p, in [0, 1].

    The first line of the prediction (leading newlines stripped) holding none
    of `` ` ``, ``#``, ``//`` is compared with the answer.
    """
    first = ""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            first = line
            break
    return fuzz_ratio(first, answer) / 100


def best_score(prediction: str, answers: Sequence[str]) -> float:
    return max((code_sim_score(prediction, a) for a in answers), default=0.0)


def length_bucket(tokens: int) -> str:
    return next(name for low, high, name in BUCKETS if low <= tokens < high)


def case_id(record: Mapping[str, Any], subset: str) -> str:
    return f"{subset}/{str(record['_id'])[:8]}"


@dataclass(frozen=True)
class LongBenchSettings:
    max_length: Optional[int] = None  # None: the model's context minus the generation
    max_new_tokens: int = MAX_NEW_TOKENS


def model_context(backend: Any) -> Optional[int]:
    """The most tokens the model takes: a served model's from its server, else its config's positions."""
    served = getattr(backend, "context_length", None)
    if served:
        return int(served)
    config = getattr(getattr(backend, "model", None), "config", None)
    return getattr(config, "max_position_embeddings", None)


def run_case(record: Mapping[str, Any], subset: str, backend: Any, meter: Any, settings: LongBenchSettings,
             test_id: str = "") -> CaseResult:
    """Generate the next line with metered phases (greedy) and score it."""
    from ..runner import GenerationConfig, generate

    prompt = build_prompt(record, subset)
    max_length = settings.max_length
    if max_length is None:
        context = model_context(backend)
        max_length = context - settings.max_new_tokens if context else None
    truncated = False
    if max_length:
        prompt, truncated = truncate_middle(prompt, backend, max_length)
    generation = generate(backend, meter, prompt, GenerationConfig(max_new_tokens=settings.max_new_tokens))
    score = best_score(generation.text, record["answers"])
    return CaseResult.from_generation(
        generation,
        case_id(record, subset),
        "longbench",
        meter,
        score=score,
        test_id=test_id,
        extra={
            "subset": subset,
            "language": record["language"],
            "length_words": record["length"],
            "length_bucket": length_bucket(generation.prompt_tokens),
            "truncated": truncated,
            "prediction": generation.text[:300],
        },
    )


def longbench_parameters(directory: str, subset: str, limit: Optional[int],
                         languages: Optional[Sequence[str]]) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """Parameters (subset, record index), ids such as ``lcc/6a5c1d2e``, and malformed-line notes."""
    loaded = load_records(directory, subset)
    chosen = select_records(loaded.records, limit, languages)
    index = {id(r): i for i, r in enumerate(loaded.records)}
    params = [(subset, index[id(r)]) for r in chosen]
    ids = [case_id(r, subset) for r in chosen]
    return params, ids, loaded.skipped

