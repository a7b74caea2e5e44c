"""Saved runs (``--energy-save``), and comparing this run with one (``--energy-compare``).

Runs are stored as ``.llm-energy/NNNN_NAME.json`` under the rootdir, one file
per save (never overwritten), holding the JSON report plus a machine
fingerprint. A comparison matches tests by id and repetitions by test, and
judges each metric with :mod:`pytest_llm_energy.stats`.
"""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from .results import BlockResult, CaseResult, result_from_dict
from .judgement import DEFAULT_RUN_TOLERANCE, RunModel, Verdict, comparisons, holm, model_metric
from .stats import Change, Noise, pooled_noise, relative_change, total_change

STORE = ".llm-energy"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9._-]+)\.json$")
ENERGY_METRICS = ("prefill_j", "decode_j", "total_j", "decode_j_per_token")
ACCURACY_METRICS = ("pass_at_1",)
METRICS = ENERGY_METRICS + ACCURACY_METRICS
# What must match for two runs to compare like with like (time and commit may differ).
FINGERPRINT_KEYS = ("gpus", "cpu", "torch", "transformers", "model", "model_revision", "model_weights",
                    "meter", "meter_kind", "babbling", "device", "dtype", "served_model", "server_version",
                    "server_command")


class BaselineError(Exception):
    """A baseline cannot be saved or read; the message says what to do."""


# --------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------
def store_dir(rootdir: Path) -> Path:
    return Path(rootdir) / STORE


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BaselineError(f"baseline name {name!r} may only hold letters, digits, '.', '_' and '-' (64 at most)")
    return name


def saved_runs(rootdir: Path) -> list[Path]:
    directory = store_dir(rootdir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _FILE.match(p.name))


def save_run(rootdir: Path, name: str, document: dict[str, Any]) -> Path:
    """Write a new numbered file; an existing save is never overwritten."""
    directory = store_dir(rootdir)
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [int(_FILE.match(p.name).group(1)) for p in saved_runs(rootdir)]  # type: ignore[union-attr]
    number = max(numbers, default=0) + 1
    while True:
        path = directory / f"{number:04d}_{check_name(name)}.json"
        try:
            with open(path, "x", encoding="utf-8") as handle:  # "x": fail rather than overwrite
                json.dump(document, handle, indent=2)
                handle.write("\n")
            return path
        except FileExistsError:
            number += 1  # a parallel save took the number


def find_run(rootdir: Path, reference: str) -> Path:
    """``latest``, a number (``3``, ``0003``), a name (its latest save) or a file path."""
    candidate = Path(reference)
    if reference.endswith(".json") and candidate.is_file():
        return candidate
    runs = saved_runs(rootdir)
    if not runs:
        raise BaselineError(f"no saved runs in {store_dir(rootdir)}; save one first with --energy-save=NAME")
    if reference == "latest":
        return runs[-1]
    if reference.isdigit():
        matches = [p for p in runs if int(_FILE.match(p.name).group(1)) == int(reference)]  # type: ignore[union-attr]
    else:
        matches = [p for p in runs if _FILE.match(p.name).group(2) == reference]  # type: ignore[union-attr]
    if not matches:
        names = ", ".join(p.stem for p in runs[-5:])
        raise BaselineError(f"no saved run {reference!r} in {store_dir(rootdir)} (latest: {names})")
    return matches[-1]


@dataclass(frozen=True)
class Baseline:
    path: Path
    results: list["CaseResult | BlockResult"]
    fingerprint: dict[str, Any]


def load_run(path: Path) -> Baseline:
    """Read a saved run; a damaged file is one clear error, never a traceback."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise BaselineError(f"{path} is not a saved run (truncated or not JSON: {exc}); "
                            "delete it or save a new one with --energy-save") from None
    if not isinstance(document, dict) or document.get("schema") != "pytest-llm-energy/1" \
            or not isinstance(document.get("results"), list):
        raise BaselineError(f"{path} is not a pytest-llm-energy saved run (schema pytest-llm-energy/1)")
    try:
        results = [result_from_dict(r) for r in document["results"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BaselineError(f"{path} holds a malformed result ({type(exc).__name__}: {exc})") from None
    return Baseline(path, results, dict(document.get("fingerprint") or {}))


# --------------------------------------------------------------------------
# the fingerprint
# --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(rootdir: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=rootdir, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def fingerprint(metadata: dict[str, Any], gpus: Sequence[dict[str, Any]], rootdir: Path) -> dict[str, Any]:
    model = metadata.get("model", {})
    versions = metadata.get("versions", {})
    meter = metadata.get("meter", {})
    return {
        "gpus": list(gpus),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
        "model": model.get("id"),
        "model_revision": model.get("revision"),
        "model_weights": model.get("weights"),
        "device": model.get("device"),
        "dtype": model.get("dtype"),
        # A served model: what the server serves, its version and (when the plugin
        # started it) its command line, so a serving-stack upgrade warns as a torch one does.
        "served_model": model.get("served_model"),
        "server_version": model.get("server_version"),
        "server_command": model.get("server_command"),
        "meter": meter.get("name"),
        "meter_kind": meter.get("kind"),
        "babbling": metadata.get("babbling"),
        "commit": _git_commit(rootdir),
        "time": datetime.now(timezone.utc).isoformat(),
    }


def fingerprint_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    differences = []
    for key in FINGERPRINT_KEYS:
        if key in baseline and baseline.get(key) != current.get(key):
            differences.append(f"{key}: {baseline.get(key)!r} -> {current.get(key)!r}")
    return differences


# --------------------------------------------------------------------------
# the bounds (--energy-compare-fail)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    metric: str
    limit: float  # relative (0.10 = +10%) for energy, absolute for accuracy
    text: str


def parse_bounds(text: str) -> list[Bound]:
    """``decode_j_per_token:10%,total_j:15%,pass_at_1:-0.02``."""
    bounds = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        metric, colon, value = part.partition(":")
        metric = metric.strip()
        if not colon or metric not in METRICS:
            raise BaselineError(f"cannot read {part!r}: use METRIC:BOUND with METRIC one of {', '.join(METRICS)}")
        value = value.strip()
        try:
            if metric in ENERGY_METRICS:
                if not value.endswith("%"):
                    raise ValueError
                limit = float(value[:-1]) / 100
            else:
                limit = float(value)
        except ValueError:
            expected = "a percentage such as 10%" if metric in ENERGY_METRICS else "a change such as -0.02"
            raise BaselineError(f"cannot read bound {value!r} of {metric}: expected {expected}") from None
        bounds.append(Bound(metric, limit, part))
    if not bounds:
        raise BaselineError("no bounds given")
    return bounds


# --------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------
def _per_repeat(results: Sequence["CaseResult | BlockResult"]) -> dict[str, dict[int, dict[str, float]]]:
    """test id -> repetition -> metric sums over that test's results.

    Generations repeat (``--energy-repeat``), ``measure`` blocks do not: a test
    with generations is judged on them, a test with blocks only on its blocks.
    ``order`` is where the repetition started in the run: results are kept in
    the order they were measured, so the judge can see which generations ran
    side by side (in rounds, different tests do).
    """
    table: dict[str, dict[int, dict[str, float]]] = {}
    blocks: dict[str, float] = {}
    for index, result in enumerate(results):
        if isinstance(result, BlockResult):
            blocks[result.test_id] = blocks.get(result.test_id, 0.0) + result.total_joules
            continue
        sums = table.setdefault(result.test_id, {}).setdefault(
            result.repeat, {"prefill_j": 0.0, "decode_j": 0.0, "total_j": 0.0, "decode_tokens": 0.0,
                            "order": float(index)})
        sums["prefill_j"] += result.prefill.joules
        sums["decode_j"] += result.decode.joules
        sums["total_j"] += result.total_joules
        sums["decode_tokens"] += result.decode.tokens
    for test_id, joules in blocks.items():
        if test_id not in table:
            table[test_id] = {0: {"prefill_j": 0.0, "decode_j": 0.0, "total_j": joules, "decode_tokens": 0.0,
                                  "order": float(len(results))}}
    return table


def _measured(repeats: dict[int, dict[str, float]], metric: str) -> list[dict[str, float]]:
    return [r for r in repeats.values() if r["decode_tokens"]] if metric == "decode_j_per_token" else list(repeats.values())


def _values(repeats: dict[int, dict[str, float]], metric: str) -> list[float]:
    if metric == "decode_j_per_token":
        return [r["decode_j"] / r["decode_tokens"] for r in _measured(repeats, metric)]
    return [r[metric] for r in _measured(repeats, metric)]


def _places(repeats: dict[int, dict[str, float]], metric: str) -> list[float]:
    return [r["order"] for r in _measured(repeats, metric)]


@dataclass(frozen=True)
class MetricChange:
    scope: str  # a test id, or "suite NAME"
    metric: str
    change: Change


@dataclass(frozen=True)
class AccuracyChange:
    suite: str
    baseline: float
    current: float

    @property
    def delta(self) -> float:
        return self.current - self.baseline


@dataclass(frozen=True)
class Comparison:
    baseline: Path
    tests: list[MetricChange]
    suites: list[MetricChange]
    accuracy: list[AccuracyChange]
    noise: dict[str, Optional[Noise]]
    fingerprint_differences: list[str]
    only_baseline: list[str]
    only_current: list[str]
    # The run-level model of each metric, and the verdicts of the last gate.
    models: dict[str, RunModel] = field(default_factory=dict)
    suite_members: dict[str, list[str]] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)


def _pass_at_1(results: Sequence["CaseResult | BlockResult"], suite: str) -> Optional[float]:
    verdicts = [bool(r.passed) for r in results
                if isinstance(r, CaseResult) and r.suite == suite and r.passed is not None and r.repeat == 0]
    return sum(verdicts) / len(verdicts) if verdicts else None


def compare(baseline: Baseline, current: Sequence["CaseResult | BlockResult"],
            current_fingerprint: dict[str, Any], metrics: Sequence[str] = ENERGY_METRICS) -> Comparison:
    before, after = _per_repeat(baseline.results), _per_repeat(current)
    common = [t for t in after if t in before]
    tests: list[MetricChange] = []
    suites: list[MetricChange] = []
    noise: dict[str, Optional[Noise]] = {}
    suite_of = {r.test_id: r.suite for r in current if isinstance(r, CaseResult)}
    models: dict[str, RunModel] = {}
    floors = _noise_floors(current)
    for metric in metrics:
        pairs = {t: (_values(before[t], metric), _values(after[t], metric)) for t in common}
        pairs = {t: pair for t, pair in pairs.items() if pair[0] and pair[1]}
        noise[metric] = pooled_noise([g for pair in pairs.values() for g in pair])
        places = {t: (_places(before[t], metric), _places(after[t], metric)) for t in pairs}
        model = model_metric(metric, pairs, floors, places)
        if model is not None:
            models[metric] = model
        for test_id, (old, new) in pairs.items():
            tests.append(MetricChange(test_id, metric, relative_change(old, new, noise[metric])))
        if metric in ("prefill_j", "decode_j", "total_j"):
            for suite in sorted({suite_of.get(t, "") for t in pairs} - {""}):
                members = [pair for t, pair in pairs.items() if suite_of.get(t) == suite]
                suites.append(MetricChange(f"suite {suite}", metric, total_change(members, noise[metric])))
    accuracy = []
    for suite in sorted({r.suite for r in current if isinstance(r, CaseResult) and r.passed is not None}):
        old_pass, new_pass = _pass_at_1(baseline.results, suite), _pass_at_1(current, suite)
        if old_pass is not None and new_pass is not None:
            accuracy.append(AccuracyChange(suite, old_pass, new_pass))
    return Comparison(
        baseline=baseline.path,
        tests=tests,
        suites=suites,
        accuracy=accuracy,
        noise=noise,
        fingerprint_differences=fingerprint_differences(baseline.fingerprint, current_fingerprint),
        only_baseline=sorted(set(before) - set(after)),
        only_current=sorted(set(after) - set(before)),
        models=models,
        suite_members={suite: sorted(t for t in common if suite_of.get(t) == suite)
                       for suite in sorted(set(suite_of.values()) - {""})},
    )


def _noise_floors(results: Sequence["CaseResult | BlockResult"]) -> dict[str, float]:
    """A test's least plausible noise from the meter's own bounds (a third of the relative bound)."""
    shares: dict[str, list[float]] = {}
    for result in results:
        if isinstance(result, CaseResult):
            bounds = (result.prefill.bound_j, result.decode.bound_j)
            if None not in bounds and result.total_joules > 0:
                shares.setdefault(result.test_id, []).append(sum(bounds) / result.total_joules)  # type: ignore
    return {t: sorted(v)[len(v) // 2] / 3 for t, v in shares.items()}


def comparison_failures(comparison: Comparison, bounds: Sequence[Bound],
                        run_tolerance: float = DEFAULT_RUN_TOLERANCE, detect: float = 0.15) -> list[str]:
    """One line per regression beyond a bound, the session's false-alarm rate held at 1%.

    Every bounded energy metric contributes the run's shift, each suite and
    each test (judged beyond the run's shift) to one family, judged together
    by weighted Holm (``judgement``). Accuracy bounds are exact comparisons.
    """
    failures = []
    candidates = []
    for bound in bounds:
        if bound.metric in ACCURACY_METRICS:
            for acc in comparison.accuracy:
                if acc.delta < bound.limit - 1e-9:
                    failures.append(f"{acc.suite} pass@1 {acc.baseline:.3f} -> {acc.current:.3f} "
                                    f"({acc.delta:+.3f}) is beyond {bound.text}")
            continue
        model = comparison.models.get(bound.metric)
        if model is None:
            continue
        suites = {}
        for item in comparison.suites:
            if item.metric == bound.metric and item.change.low != item.change.high:
                c = item.change
                # The suite's log change and a variance from its interval's half width.
                half = (math.log1p(c.high) - math.log1p(c.low)) / 2
                suites[item.scope.removeprefix("suite ")] = (math.log1p(c.estimate), (half / 2.6) ** 2, 1000.0)
        for candidate in comparisons(model, bound.limit, suites, run_tolerance):
            candidate.extra["bound_text"] = bound.text
            candidates.append(candidate)
    verdicts = holm(candidates, target=detect) if candidates else []
    comparison.verdicts[:] = verdicts  # kept for the report
    texts = [c.extra["bound_text"] for c in candidates]
    for verdict, text in zip(verdicts, texts):
        if verdict.failed:
            what = ("the whole run" if verdict.scope == "run" else verdict.scope)
            relative = "" if verdict.scope == "run" else " beyond the run's shift"
            failures.append(f"{what}: {verdict.metric} {verdict.estimate:+.1%}{relative} "
                            f"(interval {verdict.low:+.1%} .. {verdict.high:+.1%}) is beyond {text}")
    return failures
