"""Session-level gates: thresholds the run as a whole must meet."""

from __future__ import annotations

from typing import Optional, Sequence

from .results import BlockResult, CaseResult
from .tasks.humaneval import pass_at_k_summary

# pass@1 values are means of fractions; compare with a little slack for
# floating-point error, never for noise.
EPSILON = 1e-9


def humaneval_by_mode(results: Sequence["CaseResult | BlockResult"]) -> dict[str, list[CaseResult]]:
    groups: dict[str, list[CaseResult]] = {}
    for result in results:
        if isinstance(result, CaseResult) and result.suite == "humaneval":
            groups.setdefault(result.babbling, []).append(result)
    return groups


def accuracy_gates(results: Sequence["CaseResult | BlockResult"], min_pass_at_1: Optional[float],
                   max_accuracy_drop: float) -> list[str]:
    """One line per failed gate, naming the gate, the measured value and the bound."""
    failures: list[str] = []
    groups = humaneval_by_mode(results)
    pass1 = {mode: pass_at_k_summary(group).values.get(1) for mode, group in groups.items()}
    if min_pass_at_1 is not None:
        for mode, value in sorted(pass1.items()):
            if value is not None and value < min_pass_at_1 - EPSILON:
                failures.append(
                    f"HumanEval pass@1 with babbling={mode} is {value:.3f}, below --min-pass-at-1={min_pass_at_1:g}"
                )
    if pass1.get("off") is not None and pass1.get("tests") is not None:
        drop = pass1["off"] - pass1["tests"]
        if drop > max_accuracy_drop + EPSILON:
            failures.append(
                f"babbling suppression lowered HumanEval pass@1 by {drop:.3f} ({pass1['off']:.3f} -> "
                f"{pass1['tests']:.3f}), more than --babbling-max-accuracy-drop={max_accuracy_drop:g}"
            )
    return failures


def code_sim_gates(results: Sequence["CaseResult | BlockResult"], min_code_sim: Optional[float]) -> list[str]:
    scores = [r.score for r in results if isinstance(r, CaseResult) and r.suite == "longbench" and r.score is not None]
    if min_code_sim is None or not scores:
        return []
    mean = sum(scores) / len(scores)
    if mean < min_code_sim - EPSILON:
        return [f"LongBench mean code similarity is {mean:.3f} over {len(scores)} cases, "
                f"below --min-code-sim={min_code_sim:g}"]
    return []
