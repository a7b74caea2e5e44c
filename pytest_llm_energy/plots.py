"""PNG charts of a run (``--energy-plot=DIR``), drawn with matplotlib (extra ``plot``)."""

from __future__ import annotations

import os
from typing import Sequence

from .results import BlockResult, CaseResult

MAX_BARS = 40


class PlotError(Exception):
    """Plots cannot be drawn (matplotlib missing); the message says what to install."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window, work without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("--energy-plot needs matplotlib: pip install 'pytest-llm-energy[plot]'") from None
    return plt


def _save(plt, figure, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _label(test_id: str) -> str:
    name = test_id.partition("::")[2] or test_id
    return name if len(name) <= 48 else "…" + name[-47:]


def plot_phases(results: Sequence["CaseResult | BlockResult"], path: str) -> str:
    """Stacked prefill and decode energy per test (the costliest first)."""
    plt = _pyplot()
    per_test: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for result in results:
        if isinstance(result, CaseResult):
            key = result.test_id or result.case_id
            totals = per_test.setdefault(key, [0.0, 0.0])
            totals[0] += result.prefill.joules
            totals[1] += result.decode.joules
            labels[key] = _label(key)
    rows = sorted(per_test.items(), key=lambda item: -sum(item[1]))[:MAX_BARS][::-1]
    height = max(2.5, 0.3 * len(rows) + 1.2)
    figure, axes = plt.subplots(figsize=(9, height))
    names = [labels[key] for key, _ in rows]
    prefill = [values[0] for _, values in rows]
    decode = [values[1] for _, values in rows]
    axes.barh(names, prefill, color="#4c72b0", label="prefill")
    axes.barh(names, decode, left=prefill, color="#dd8452", label="decode")
    estimated = any(r.meter_kind != "measured" for r in results)
    axes.set_xlabel("energy [J]" + (" (estimated)" if estimated else ""))
    axes.set_title("Prefill and decode energy per test" + (f" (top {MAX_BARS})" if len(per_test) > MAX_BARS else ""))
    axes.legend(loc="lower right")
    return _save(plt, figure, path)


def plot_babbling(results: Sequence["CaseResult | BlockResult"], path: str) -> str:
    """Decode energy per HumanEval task with suppression off and on, and pass@1 of each."""
    plt = _pyplot()
    cases = [r for r in results if isinstance(r, CaseResult) and r.suite == "humaneval"]
    modes = [m for m in ("off", "stop", "tests") if any(r.babbling == m for r in cases)]
    tasks = sorted({r.case_id for r in cases}, key=lambda t: int(t.rpartition("/")[2]) if t.rpartition("/")[2].isdigit() else 0)
    tasks = tasks[:MAX_BARS]
    figure, axes = plt.subplots(figsize=(max(6, 0.35 * len(tasks) * len(modes) + 2), 4))
    width = 0.8 / max(len(modes), 1)
    colours = {"off": "#c44e52", "stop": "#8172b2", "tests": "#55a868"}
    for offset, mode in enumerate(modes):
        energy = []
        for task in tasks:
            runs = [r.decode.joules for r in cases if r.case_id == task and r.babbling == mode]
            energy.append(sum(runs) / len(runs) if runs else 0.0)
        verdicts = [bool(r.passed) for r in cases if r.babbling == mode and r.passed is not None]
        pass1 = sum(verdicts) / len(verdicts) if verdicts else 0.0
        positions = [i + offset * width for i in range(len(tasks))]
        axes.bar(positions, energy, width=width, color=colours[mode], label=f"{mode} (pass@1 {pass1:.2f})")
    axes.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(tasks))])
    axes.set_xticklabels([t.replace("HumanEval/", "") for t in tasks], rotation=90 if len(tasks) > 20 else 0)
    axes.set_xlabel("HumanEval task")
    axes.set_ylabel("decode energy [J]")
    axes.set_title("Babbling suppression: decode energy per task")
    axes.legend()
    return _save(plt, figure, path)


def plot_amplification(results: Sequence["CaseResult | BlockResult"], path: str) -> str:
    """Decode energy per token and amplification against prompt length."""
    from .amplification import summarize

    plt = _pyplot()
    bins = summarize(results)
    figure, axes = plt.subplots(figsize=(7, 4))
    lengths = [b.prompt_tokens for b in bins]
    axes.plot(lengths, [b.decode_j_per_token * 1000 for b in bins], marker="o", color="#4c72b0")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("prompt tokens")
    axes.set_ylabel("decode energy per token [mJ]")
    for b in bins:
        axes.annotate(f"{b.amplification:+.0%}", (b.prompt_tokens, b.decode_j_per_token * 1000),
                      textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    axes.set_title("Amplification: longer prompts, costlier decode tokens")
    return _save(plt, figure, path)


def write_plots(results: Sequence["CaseResult | BlockResult"], directory: str) -> list[str]:
    """Every chart the results support; returns the files written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    if any(isinstance(r, CaseResult) for r in results):
        written.append(plot_phases(results, os.path.join(directory, "energy_by_test.png")))
    humaneval_modes = {r.babbling for r in results if isinstance(r, CaseResult) and r.suite == "humaneval"}
    if humaneval_modes:
        written.append(plot_babbling(results, os.path.join(directory, "babbling.png")))
    if any(isinstance(r, CaseResult) and r.suite == "amplification" for r in results):
        written.append(plot_amplification(results, os.path.join(directory, "amplification.png")))
    return written
