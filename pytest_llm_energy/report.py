"""Turning results into the terminal table and the JSON file."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
import tempfile
from collections import OrderedDict
from typing import Any, Iterable, Optional, Sequence

from tabulate import tabulate

from .amplification import summarize as summarize_amplification
from .results import BlockResult, CaseResult, PhaseEnergy
from .stats import DEFAULT_CONFIDENCE
from .tasks.longbench import BUCKETS as LENGTH_BUCKETS

JSON_SCHEMA = "pytest-llm-energy/1"
HEADERS = (
    "test", "prefill J", "decode J", "total J", "decode mJ/tok",
    "prompt tok", "new tok", "seconds", "method", "source",
)
SCORE_HEADERS = ("passed", "babble tok")
WIDE_BOUND_MARK = "†"
DEFAULT_MARK_BOUND = 0.05
METHOD_NOTES = {
    "counter": "counter = energy counter, its updates placed in time, split at the edges by instant power "
               "(or evenly without it)",
    "repeat": "repeat = the phase run back to back for a second or more in one window, divided "
              "(the repetitions are billed to no test)",
    "difference": "difference = the whole generation less its repeated prefill",
    "instant": "instant = no energy counter: instant power integrated",
    "polled": "polled = no energy counter: 1 s averaged power integrated (short windows are very uncertain)",
    "read": "read = a meter exact when read",
}


def wide(phase: PhaseEnergy, mark_bound: float) -> bool:
    """Whether a figure's bound exceeds ``mark_bound`` of it (unbounded measured figures count)."""
    share = phase.relative_bound
    return share is not None and share > mark_bound


def format_joules(joules: float, marked: bool = False) -> str:
    return f"{joules:.4g}" + (WIDE_BOUND_MARK if marked else "")


def _methods(*phases: PhaseEnergy) -> str:
    return "/".join(dict.fromkeys(p.method for p in phases if p.method))


def format_seconds(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds >= 0.1 else f"{seconds:.3g}"


def _sum_phases(phases: Sequence[PhaseEnergy]) -> PhaseEnergy:
    return PhaseEnergy(
        joules=sum(p.joules for p in phases),
        seconds=sum(p.seconds for p in phases),
        tokens=sum(p.tokens for p in phases),
        below_resolution=any(p.below_resolution for p in phases),
        method="+".join(sorted({p.method for p in phases})),
        bound_j=None if any(p.bound_j is None for p in phases) else sum(p.bound_j or 0.0 for p in phases),
        devices=_sum_devices(phases),
    )


def _sum_devices(phases: Sequence[PhaseEnergy]) -> dict[str, float]:
    total: dict[str, float] = {}
    for phase in phases:
        for device, joules in phase.devices.items():
            total[device] = total.get(device, 0.0) + joules
    return total


def short_test_names(test_ids: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Drop the file part of test ids when every test comes from one file.

    Returns that file ("" when the ids span several files) and a mapping from
    id to the name to show.
    """
    ids = list(dict.fromkeys(test_ids))
    files = {test_id.partition("::")[0] for test_id in ids}
    if len(files) != 1 or not all("::" in test_id for test_id in ids):
        return "", {test_id: test_id for test_id in ids}
    return files.pop(), {test_id: test_id.partition("::")[2] for test_id in ids}


def table_rows(results: Sequence[CaseResult | BlockResult],
               names: Optional[dict[str, str]] = None,
               mark_bound: float = DEFAULT_MARK_BOUND) -> list[list[Any]]:
    """One row per test (its generations summed), one per ``measure`` block."""
    names = names or {}
    scored = any(isinstance(r, CaseResult) and r.passed is not None for r in results)
    cases: "OrderedDict[str, list[CaseResult]]" = OrderedDict()
    blocks: "OrderedDict[str, list[BlockResult]]" = OrderedDict()
    for result in results:
        key = result.test_id or getattr(result, "case_id", "")
        cases.setdefault(key, [])
        blocks.setdefault(key, [])
        (cases if isinstance(result, CaseResult) else blocks)[key].append(result)  # type: ignore[index]
    rows: list[list[Any]] = []
    for test_id in cases:
        name = names.get(test_id, test_id)
        group = cases[test_id]
        if group:
            rows.append(_case_row(name, group, scored, mark_bound))
        for block in blocks[test_id]:
            rows.append([
                f"{name} [{block.label}]", "", "",
                format_joules(block.energy.joules, wide(block.energy, mark_bound)),
                "", "", "", format_seconds(block.energy.seconds), _methods(block.energy), block.meter_kind,
            ] + (["", ""] if scored else []))
    return rows


def _case_row(name: str, group: Sequence[CaseResult], scored: bool = False,
              mark_bound: float = DEFAULT_MARK_BOUND) -> list[Any]:
    prefill = _sum_phases([r.prefill for r in group])
    decode = _sum_phases([r.decode for r in group])
    total = _sum_phases([prefill, decode])
    per_token = decode.joules_per_token
    return [
        name if len(group) == 1 else f"{name} ({len(group)} generations)",
        format_joules(prefill.joules, wide(prefill, mark_bound)),
        format_joules(decode.joules, wide(decode, mark_bound)) if decode.tokens else "-",
        format_joules(total.joules, wide(total, mark_bound)),
        f"{per_token * 1000:.4g}" if per_token is not None else "-",
        sum(r.prompt_tokens for r in group),
        sum(r.new_tokens for r in group),
        format_seconds(prefill.seconds + decode.seconds),
        _methods(*(p for r in group for p in (r.prefill, r.decode))),
        group[0].meter_kind,
    ] + (_score_cells(group) if scored else [])


def _score_cells(group: Sequence[CaseResult]) -> list[Any]:
    verdicts = [r.passed for r in group if r.passed is not None]
    babble = [r.babble_tokens for r in group if r.babble_tokens is not None]
    passed = "-" if not verdicts else (
        ("yes" if verdicts[0] else "no") if len(verdicts) == 1 else f"{sum(verdicts)}/{len(verdicts)}"
    )
    return [passed, str(sum(babble)) if babble else "-"]


def summary_lines(results: Sequence[CaseResult | BlockResult], meta: dict[str, Any],
                  mark_bound: float = DEFAULT_MARK_BOUND, tablefmt: str = "simple") -> list[str]:
    """The terminal summary: a header naming the sources, the table, footnotes."""
    if not results:
        return ["no energy was measured (no test used the energy fixture)"]
    model = meta.get("model", {})
    meter = meta.get("meter", {})
    spans = model.get("spans") or []
    where = f"spread over {', '.join(spans)}" if len(spans) > 1 else f"on {model.get('device', '?')}"
    if model.get("served_model"):
        # The windows of a served model hold more than its forward passes.
        where = (f"serving {model['served_model']} (version {model.get('server_version') or '?'}; "
                 "windows include HTTP, queueing and detokenisation)")
    lines = [f"model {model.get('id')} {where}, meter {meter.get('name')} ({meter.get('kind')})"]
    lines += [f"note: {n}" for n in meta.get("notices", [])]
    common_file, names = short_test_names(getattr(r, "test_id", "") or getattr(r, "case_id", "") for r in results)
    if common_file:
        lines.append(f"tests in {common_file}")
    rows = table_rows(results, names, mark_bound)
    scored = bool(rows) and len(rows[0]) > len(HEADERS)
    if tablefmt == "github":  # a "|" in a test id would split a Markdown cell
        rows = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    headers = HEADERS + (SCORE_HEADERS if scored else ())
    lines.append(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                          colalign=("left",) + ("right",) * 7 + ("left", "left") + ("right",) * (len(headers) - 10)))
    cases = [r for r in results if isinstance(r, CaseResult)]
    total = sum(r.total_joules for r in results)
    lines.append(
        f"total {format_joules(total)} J over {len(cases)} generation(s)"
        f" and {len(results) - len(cases)} measured block(s)"
    )
    groups = group_totals(results)
    if len(groups) > 1:
        lines.append("by suite and babbling mode: " + ", ".join(
            f"{name} {format_joules(joules)} J ({count})" for name, (joules, count) in groups.items()))
    if any(_is_wide(r, mark_bound) for r in results):
        lines.append(
            f"{WIDE_BOUND_MARK} figure whose error bound exceeds {mark_bound:.0%} of it "
            "(bound_j in the JSON report gives every figure's bound)"
        )
    period = meter.get("update_period_s") or max(
        (p.get("update_period_s") or 0 for p in meter.get("parts", [])), default=0)
    if period:
        lines.append(f"energy counter updates every {period * 1000:.1f} ms (fitted)")
    used = dict.fromkeys(m for r in results for p in _phases(r) for m in p.method.split("+"))
    notes = [METHOD_NOTES[m] for m in used if m in METHOD_NOTES and m != "read"]
    if notes:
        lines.append("method: " + "; ".join(notes))
    if meter.get("kind") != "measured":
        lines.append("figures marked 'estimated' come from CPU time x watts per core, not a sensor")
    repeats = meta.get("repeat", 1)
    if repeats > 1:
        lines.append(f"energies are medians over {repeats} repetitions after a warm-up (--energy-repeat)")
    return lines


def group_totals(results: Sequence[CaseResult | BlockResult]) -> "OrderedDict[str, tuple[float, int]]":
    """Total joules and result count per suite (and babbling mode, where it is not off)."""
    groups: "OrderedDict[str, tuple[float, int]]" = OrderedDict()
    for result in results:
        if isinstance(result, CaseResult):
            name = result.suite + (f" [{result.babbling}]" if result.babbling != "off" else "")
        else:
            name = "measure blocks"
        joules, count = groups.get(name, (0.0, 0))
        groups[name] = (joules + result.total_joules, count + 1)
    return groups


def _phases(result: CaseResult | BlockResult) -> tuple[PhaseEnergy, ...]:
    if isinstance(result, CaseResult):
        return (result.prefill, result.decode) if result.decode.tokens > 0 else (result.prefill,)
    return (result.energy,)


def _is_wide(result: CaseResult | BlockResult, mark_bound: float) -> bool:
    return any(wide(p, mark_bound) for p in _phases(result))


def json_document(results: Sequence[CaseResult | BlockResult], meta: dict[str, Any],
                  outcomes: dict[str, str], exit_status: Optional[int]) -> dict[str, Any]:
    cases = [r for r in results if isinstance(r, CaseResult)]
    return {
        "schema": JSON_SCHEMA,
        "session": {**meta, "exit_status": exit_status},
        "totals": {
            "prefill_joules": sum(r.prefill.joules for r in cases),
            "decode_joules": sum(r.decode.joules for r in cases),
            "block_joules": sum(r.total_joules for r in results if isinstance(r, BlockResult)),
            "total_joules": sum(r.total_joules for r in results),
            "generations": len(cases),
            "new_tokens": sum(r.new_tokens for r in cases),
        },
        "tests": [{"test_id": test_id, "outcome": outcome} for test_id, outcome in outcomes.items()],
        "amplification": [asdict(b) for b in summarize_amplification(results)],
        "results": [r.to_dict() for r in results],
    }


def write_json(path: str, document: dict[str, Any]) -> None:
    """Write atomically, so an interrupted run never leaves half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".llm-energy-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(staging, path)
    except BaseException:
        try:
            os.unlink(staging)
        except OSError:
            pass
        raise


def humaneval_lines(results: Sequence[CaseResult | BlockResult], babbled_listed: int = 10,
                    tablefmt: str = "simple") -> list[str]:
    """Per babbling mode: pass@k, tokens, babble and energy; the saving of suppression."""
    from .gates import humaneval_by_mode
    from .tasks.humaneval import pass_at_k_summary

    groups = humaneval_by_mode(results)
    if not groups:
        return []
    rows = []
    summaries = {}
    for mode in sorted(groups, key=lambda m: ("off", "stop", "tests").index(m) if m in ("off", "stop", "tests") else 9):
        group = groups[mode]
        summary = pass_at_k_summary(group)
        summaries[mode] = (summary, group)
        new_tokens = sum(r.new_tokens for r in group)
        babble = sum(r.babble_tokens or 0 for r in group)
        rows.append([
            mode,
            " ".join(f"pass@{k}={v:.3f}" for k, v in sorted(summary.values.items())),
            summary.tasks,
            summary.samples,
            new_tokens,
            f"{babble} ({babble / new_tokens:.0%})" if new_tokens else "0",
            format_joules(sum(r.prefill.joules for r in group)),
            format_joules(sum(r.decode.joules for r in group)),
            format_joules(sum(r.total_joules for r in group)),
        ])
    lines = ["HumanEval by babbling mode", tabulate(
        rows, headers=("babbling", "accuracy", "tasks", "samples", "new tok", "babble tok", "prefill J",
                       "decode J", "total J"),
        tablefmt=tablefmt, disable_numparse=True)]
    if "off" in summaries and "tests" in summaries:
        (off, off_group), (tests, tests_group) = summaries["off"], summaries["tests"]
        decode_off = sum(r.decode.joules for r in off_group)
        total_off = sum(r.total_joules for r in off_group)
        decode_saving = 1 - sum(r.decode.joules for r in tests_group) / decode_off if decode_off else 0.0
        total_saving = 1 - sum(r.total_joules for r in tests_group) / total_off if total_off else 0.0
        change = tests.values.get(1, 0.0) - off.values.get(1, 0.0)
        lines.append(
            f"suppression (tests vs off): decode energy {-decode_saving:+.1%}, total energy {-total_saving:+.1%}, "
            f"pass@1 {change:+.3f}"
        )
    babbled = sorted(
        {(r.case_id, r.babbling): r for group in groups.values() for r in group
         if r.babble_tokens and r.new_tokens}.values(),
        key=lambda r: -(r.babble_tokens or 0) / r.new_tokens,
    )
    if babbled:
        shown = ", ".join(f"{r.case_id} [{r.babbling}] {r.babble_tokens} tok ({r.babble_tokens / r.new_tokens:.0%})"
                          for r in babbled[:babbled_listed])
        more = f" and {len(babbled) - babbled_listed} more" if len(babbled) > babbled_listed else ""
        lines.append(f"babbled (tokens after the first passing line): {shown}{more}")
    return lines


def markdown_document(results: Sequence[CaseResult | BlockResult], meta: dict[str, Any], mark_bound: float,
                      gate_failures: Sequence[str]) -> str:
    """The terminal summary as GitHub-flavoured Markdown (for CI job summaries)."""
    lines = ["## LLM energy", ""]
    if gate_failures:
        lines += ["### :x: Energy gates failed", ""] + [f"- {line}" for line in gate_failures] + [""]
    lines += summary_lines(results, meta, mark_bound, tablefmt="github")
    for section in (humaneval_lines(results, tablefmt="github"), longbench_lines(results, tablefmt="github"),
                    amplification_lines(results, tablefmt="github")):
        if section:
            lines += ["### " + section[0]] + section[1:]
    # Every block (paragraph, table, heading) stands apart, so a line after a
    # table is not read as one of its rows.
    blocks: list[str] = []
    for line in lines:
        for part in line.splitlines() or [""]:
            is_row = part.startswith("|")
            if blocks and blocks[-1] and part and (blocks[-1].startswith("|") != is_row or not is_row):
                blocks.append("")
            blocks.append(part)
    return "\n".join(blocks).rstrip() + "\n"


def write_markdown(path: str, text: str, append: bool = False) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)


def junit_properties(results: Sequence[CaseResult | BlockResult]) -> list[tuple[str, object]]:
    """Energy figures of one test as junitxml properties."""
    cases = [r for r in results if isinstance(r, CaseResult)]
    blocks = [r for r in results if isinstance(r, BlockResult)]
    properties: list[tuple[str, object]] = []
    if cases:
        prefill = _sum_phases([r.prefill for r in cases])
        decode = _sum_phases([r.decode for r in cases])
        properties += [
            ("energy_prefill_j", round(prefill.joules, 6)),
            ("energy_decode_j", round(decode.joules, 6)),
            ("energy_prompt_tokens", sum(r.prompt_tokens for r in cases)),
            ("energy_new_tokens", sum(r.new_tokens for r in cases)),
        ]
        if decode.joules_per_token is not None:
            properties.append(("energy_decode_j_per_token", round(decode.joules_per_token, 9)))
        verdicts = [r.passed for r in cases if r.passed is not None]
        if verdicts:
            properties.append(("energy_case_passed", sum(verdicts) / len(verdicts)))
    if blocks:
        properties.append(("energy_blocks_j", round(sum(r.energy.joules for r in blocks), 6)))
    if results:
        properties += [
            ("energy_total_j", round(sum(r.total_joules for r in results), 6)),
            ("energy_meter", results[0].meter),
            ("energy_source", results[0].meter_kind),
        ]
    return properties


def comparison_lines(comparison: Any, limit: int = 30) -> list[str]:
    """This run against the baseline: per suite, per test, accuracy, and caveats."""
    lines = [f"comparison with {comparison.baseline}"]
    for difference in comparison.fingerprint_differences:
        lines.append(f"warning: the baseline ran elsewhere: {difference}")
    noise = ", ".join(f"{metric} {n.sigma:.1%} ({n.df} df)" for metric, n in comparison.noise.items() if n)
    lines.append(f"measurement noise (pooled over tests): {noise}" if noise else
                 "no repetitions: changes have no confidence interval (use --energy-repeat=5)")

    def cell(change: Any) -> str:
        if change.low == change.high:
            return f"{change.estimate:+.1%}"
        return f"{change.estimate:+.1%} [{change.low:+.1%}, {change.high:+.1%}]"

    rows = []
    by_scope: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
    for item in list(comparison.suites) + list(comparison.tests):
        by_scope.setdefault(item.scope, {})[item.metric] = item.change
    for scope, metrics in list(by_scope.items())[:limit]:
        total, per_token = metrics.get("total_j"), metrics.get("decode_j_per_token")
        rows.append([
            scope,
            format_joules(total.baseline) if total else "-",
            format_joules(total.current) if total else "-",
            cell(total) if total else "-",
            f"{per_token.baseline * 1000:.4g}" if per_token else "-",
            f"{per_token.current * 1000:.4g}" if per_token else "-",
            cell(per_token) if per_token else "-",
        ])
    if rows:
        interval = f"change [{DEFAULT_CONFIDENCE:.1%} CI]"
        lines.append(tabulate(rows, headers=("test", "total J was", "total J now", interval,
                                             "decode mJ/tok was", "now", interval),
                              tablefmt="simple", disable_numparse=True))
    if len(by_scope) > limit:
        lines.append(f"... and {len(by_scope) - limit} more (all in the JSON report)")
    lines += verdict_lines(comparison, limit)
    for accuracy in comparison.accuracy:
        lines.append(f"{accuracy.suite} pass@1: {accuracy.baseline:.3f} -> {accuracy.current:.3f} "
                     f"({accuracy.delta:+.3f})")
    if comparison.only_baseline:
        lines.append(f"only in the baseline: {len(comparison.only_baseline)} test(s), e.g. {comparison.only_baseline[0]}")
    if comparison.only_current:
        lines.append(f"new in this run: {len(comparison.only_current)} test(s), e.g. {comparison.only_current[0]}")
    return lines


def verdict_lines(comparison: Any, limit: int = 30) -> list[str]:
    """How each bounded comparison was judged, and whether the run could have caught a regression."""
    verdicts = list(getattr(comparison, "verdicts", []))
    if not verdicts:
        return []
    lines = []
    for metric, model in comparison.models.items():
        if not any(v.metric == metric for v in verdicts):
            continue
        notes = [f"run shift {math.expm1(model.run_shift):+.1%}",
                 f"typical noise {model.prior_sigma:.1%} per repetition",
                 f"repetition correlation {model.autocorrelation:.2f}"]
        if model.design_effect > 1.05:
            notes.append(f"neighbouring tests correlated {model.cross_correlation:.2f}, "
                         f"run variance x{model.design_effect:.1f}")
        if model.dropped_warmup:
            notes.append("first repetition dropped as a warm-up (" + ", ".join(model.dropped_warmup) + ")")
        lines.append(f"{metric}: " + "; ".join(notes))
    rows = []
    for verdict in verdicts[: limit + 1]:
        power = "-" if verdict.power is None else f"{verdict.power:.0%}"
        needed = "-" if verdict.repeats_needed is None else (
            f"{verdict.repeats_needed}" if verdict.repeats_needed <= 200 else ">200")
        rows.append([
            verdict.scope if verdict.scope != "run" else "(whole run)",
            verdict.metric,
            f"{verdict.estimate:+.1%} [{verdict.low:+.1%}, {verdict.high:+.1%}]",
            f"{verdict.bound:+.0%}",
            "FAILED" if verdict.failed else "ok",
            power,
            needed,
        ])
    lines.append(tabulate(rows, headers=("judged", "metric", "change [family-wise interval]", "bound", "verdict",
                                         "catches one test", "repeats for 95%"),
                          tablefmt="simple", disable_numparse=True))
    if len(verdicts) > limit + 1:
        lines.append(f"... and {len(verdicts) - limit - 1} more verdicts (all in the JSON report)")
    lines.append("tests and suites are judged beyond the run's shift; every comparison of the session is judged "
                 "together (weighted Holm), an unchanged run failing at most 1% of the time; 'catches one test' "
                 "is the chance a regression of --energy-compare-detect in that test alone would be flagged")
    weak = [v for v in verdicts if v.power is not None and v.power < 0.8]
    if weak:
        needed = sorted(v.repeats_needed or 0 for v in weak)
        lines.append(f"{len(weak)} test(s) could catch that regression less than 80% of the time with these "
                     f"repetitions; a median of {needed[len(needed) // 2]} per side would make it 95% "
                     "(--energy-repeat)")
    return lines


def comparison_document(comparison: Any) -> dict[str, Any]:
    def change(item: Any) -> dict[str, Any]:
        c = item.change
        return {"scope": item.scope, "metric": item.metric, "baseline": c.baseline, "current": c.current,
                "change": c.estimate, "low": c.low, "high": c.high, "n_baseline": c.n_baseline,
                "n_current": c.n_current}

    return {
        "baseline": str(comparison.baseline),
        "fingerprint_differences": list(comparison.fingerprint_differences),
        "noise": {m: ({"sigma": n.sigma, "df": n.df} if n else None) for m, n in comparison.noise.items()},
        "suites": [change(i) for i in comparison.suites],
        "tests": [change(i) for i in comparison.tests],
        "accuracy": [{"suite": a.suite, "baseline": a.baseline, "current": a.current, "delta": a.delta}
                     for a in comparison.accuracy],
        "only_baseline": list(comparison.only_baseline),
        "only_current": list(comparison.only_current),
        "models": {m: {"run_shift": math.expm1(model.run_shift), "typical_noise": model.prior_sigma,
                       "prior_df": model.prior_df, "autocorrelation": model.autocorrelation,
                       "cross_correlation": model.cross_correlation, "design_effect": model.design_effect,
                       "run_df": model.run_df,
                       "dropped_warmup": list(model.dropped_warmup),
                       "tests": {t.scope: {"noise": t.sigma, "df": t.df} for t in model.tests}}
                   for m, model in getattr(comparison, "models", {}).items()},
        "verdicts": [{"scope": v.scope, "metric": v.metric, "bound": v.bound, "change": v.estimate,
                      "low": v.low, "high": v.high, "p_value": v.p_value, "failed": v.failed,
                      "detect_power": v.power, "repeats_for_95": v.repeats_needed}
                     for v in getattr(comparison, "verdicts", [])],
    }


def longbench_lines(results: Sequence[CaseResult | BlockResult], tablefmt: str = "simple") -> list[str]:
    """Per subset: mean code similarity and energy; per length bucket: decode energy per token."""
    cases = [r for r in results if isinstance(r, CaseResult) and r.suite == "longbench"]
    if not cases:
        return []
    rows = []
    for subset in sorted({r.extra.get("subset", "?") for r in cases}):
        group = [r for r in cases if r.extra.get("subset") == subset]
        decode_tokens = sum(r.decode.tokens for r in group)
        rows.append([
            subset, len(group), f"{sum(r.score or 0.0 for r in group) / len(group):.3f}",
            f"{sum(r.prompt_tokens for r in group) / len(group):.0f}",
            format_joules(sum(r.prefill.joules for r in group)),
            f"{sum(r.decode.joules for r in group) / decode_tokens * 1000:.4g}" if decode_tokens else "-",
            sum(bool(r.extra.get("truncated")) for r in group),
        ])
    lines = ["LongBench code tasks", tabulate(
        rows, headers=("subset", "cases", "code sim", "mean prompt tok", "prefill J", "decode mJ/tok", "truncated"),
        tablefmt=tablefmt, disable_numparse=True)]
    buckets = []
    reference = None
    for _, _, name in LENGTH_BUCKETS:
        group = [r for r in cases if r.extra.get("length_bucket") == name]
        tokens = sum(r.decode.tokens for r in group)
        if not group or not tokens:
            continue
        per_token = sum(r.decode.joules for r in group) / tokens
        reference = reference or per_token
        buckets.append(f"{name}: {per_token * 1000:.4g} mJ/tok ({per_token / reference - 1:+.1%}, {len(group)} cases)")
    if buckets:
        lines.append("decode energy per token by prompt length: " + ", ".join(buckets))
    return lines


def amplification_lines(results: Sequence[CaseResult | BlockResult], tablefmt: str = "simple") -> list[str]:
    from .amplification import summarize

    bins = summarize(results)
    if not bins:
        return []
    rows = [[b.prompt_tokens, format_joules(b.prefill_j), f"{b.decode_j_per_token * 1000:.4g}",
             f"{b.amplification:+.1%}", b.repeats] for b in bins]
    return ["Amplification: decode energy per token against prompt length", tabulate(
        rows, headers=("prompt tok", "prefill J", "decode mJ/tok", "amplification", "runs"),
        tablefmt=tablefmt, disable_numparse=True)]
