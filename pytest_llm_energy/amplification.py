"""How prompt length raises the energy of every decode token ("amplification").

A sweep generates the same number of new tokens after prompts of increasing
length and reports, per length bin, prefill energy, decode energy per token,
and the amplification: decode J/token of the bin ÷ that of the shortest bin − 1.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .results import BlockResult, CaseResult

SUITE = "amplification"
DEFAULT_BINS = (256, 512, 1024, 2048, 4096, 8192)
DEFAULT_NEW_TOKENS = 32
# Standard-library modules whose source makes a long, code-like default prompt.
_CORPUS_MODULES = ("difflib", "argparse", "textwrap", "typing", "dataclasses", "inspect")


@dataclass(frozen=True)
class Bin:
    prompt_tokens: int
    prefill_j: float
    decode_j_per_token: float
    amplification: float  # relative to the shortest bin: 0.1 = 10% more per token
    repeats: int


def default_corpus() -> str:
    import importlib
    import inspect

    parts = []
    for name in _CORPUS_MODULES:
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (OSError, TypeError):
            continue
    return "\n\n".join(parts)


def usable_bins(bins: Sequence[int], context: Optional[int], new_tokens: int) -> tuple[list[int], list[int]]:
    """The bins that fit the model's context with the new tokens, and those dropped."""
    if context is None:
        return sorted(bins), []
    fit = [b for b in sorted(bins) if b + new_tokens <= context]
    return fit, [b for b in sorted(bins) if b + new_tokens > context]


def prompt_ids_for(backend: Any, corpus: str, length: int) -> list[int]:
    ids = backend.encode(corpus)
    while len(ids) < length:
        corpus += "\n\n" + corpus
        ids = backend.encode(corpus)
    return ids[:length]


def summarize(results: Sequence["CaseResult | BlockResult"]) -> list[Bin]:
    """Per bin, medians over repetitions; amplification against the shortest bin."""
    by_bin: dict[int, list[CaseResult]] = {}
    for result in results:
        if isinstance(result, CaseResult) and result.suite == SUITE:
            by_bin.setdefault(int(result.extra.get("bin", result.prompt_tokens)), []).append(result)
    rows = []
    for length in sorted(by_bin):
        runs = by_bin[length]
        per_token = [r.decode.joules / r.decode.tokens for r in runs if r.decode.tokens]
        rows.append((length, statistics.median(r.prefill.joules for r in runs),
                     statistics.median(per_token) if per_token else 0.0, len(runs)))
    if not rows:
        return []
    reference = rows[0][2]
    return [Bin(length, prefill, per_token, (per_token / reference - 1) if reference else 0.0, count)
            for length, prefill, per_token, count in rows]
