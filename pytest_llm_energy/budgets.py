"""Energy budgets: a small grammar, and checking results against it.

An expression is ``[SCOPE=]AMOUNT UNIT``; several are separated by commas or
given as repeated options::

    2.5kJ                  the whole run (scope ``run``)
    per-test=20J           each test's energy
    prefill=2J             each test's prefill energy
    decode=15J             each test's decode energy
    decode-per-token=4mJ   each test's decode energy per decoded token
    suite:humaneval=1kJ    all results of a suite (humaneval, longbench, prompt)
    marker:slow=500J       all tests carrying a marker

Units: J, kJ, mJ, Wh, kWh, case-insensitive, with or without a space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from .results import BlockResult, CaseResult

UNITS = {"mj": 1e-3, "j": 1.0, "kj": 1e3, "wh": 3600.0, "kwh": 3.6e6}
TEST_SCOPES = ("per-test", "prefill", "decode", "decode-per-token")
RUN_SCOPES = ("run",)
GROUP_PREFIXES = ("suite:", "marker:")
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*$")


class BudgetError(ValueError):
    """A malformed budget expression; the message names the bad part."""


@dataclass(frozen=True)
class Budget:
    scope: str  # run, per-test, prefill, decode, decode-per-token, suite:NAME, marker:NAME
    joules: float
    text: str

    @property
    def per_test(self) -> bool:
        return self.scope in TEST_SCOPES


def parse_energy(text: str) -> float:
    """Joules in ``"20 J"``, ``"4mJ"``, ``"1.5 kWh"``."""
    match = _AMOUNT.match(text)
    if match is None:
        raise BudgetError(f"cannot read energy {text.strip()!r}: expected a number and a unit "
                          f"({', '.join(('J', 'kJ', 'mJ', 'Wh', 'kWh'))})")
    unit = match.group(2).lower()
    if unit not in UNITS:
        raise BudgetError(f"unknown energy unit {match.group(2)!r} in {text.strip()!r}: use J, kJ, mJ, Wh or kWh")
    return float(match.group(1)) * UNITS[unit]


def parse_budget(text: str) -> Budget:
    scope, equals, amount = text.partition("=")
    if not equals:
        scope, amount = "run", text
    scope = scope.strip().lower()
    if not (scope in TEST_SCOPES or scope in RUN_SCOPES or
            (scope.startswith(GROUP_PREFIXES) and scope.partition(":")[2])):
        raise BudgetError(
            f"unknown budget scope {scope!r} in {text.strip()!r}; scopes: run, per-test, prefill, decode, "
            "decode-per-token, suite:NAME, marker:NAME"
        )
    return Budget(scope, parse_energy(amount), text.strip())


def parse_budgets(values: Iterable[str]) -> list[Budget]:
    budgets = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                budgets.append(parse_budget(part))
    return budgets


MARKER_KEYWORDS = {"budget": "per-test", "prefill": "prefill", "decode": "decode",
                   "decode_per_token": "decode-per-token"}


def marker_budgets(kwargs: Mapping[str, object]) -> list[Budget]:
    """Budgets of ``@pytest.mark.energy(budget="20 J", decode_per_token="5 mJ", ...)``."""
    budgets = []
    for key, value in kwargs.items():
        if key not in MARKER_KEYWORDS:
            raise BudgetError(f"unknown energy marker argument {key!r}; use {', '.join(MARKER_KEYWORDS)}")
        budgets.append(Budget(MARKER_KEYWORDS[key], parse_energy(str(value)), f"@energy({key}={value!r})"))
    return budgets


@dataclass(frozen=True)
class Figures:
    """What a set of results cost, in the basis budgets are checked against."""

    total: float
    prefill: float
    decode: float
    decode_tokens: int
    estimated: bool

    @property
    def decode_per_token(self) -> Optional[float]:
        return self.decode / self.decode_tokens if self.decode_tokens else None


def figures(results: Sequence["CaseResult | BlockResult"], idle_watts: float = 0.0) -> Figures:
    """Sums over results; ``idle_watts`` > 0 subtracts idle power × time (net energy)."""
    def net(joules: float, seconds: float) -> float:
        return joules - idle_watts * seconds

    prefill = sum(net(r.prefill.joules, r.prefill.seconds) for r in results if isinstance(r, CaseResult))
    decode = sum(net(r.decode.joules, r.decode.seconds) for r in results if isinstance(r, CaseResult))
    blocks = sum(net(r.energy.joules, r.energy.seconds) for r in results if isinstance(r, BlockResult))
    return Figures(
        total=prefill + decode + blocks,
        prefill=prefill,
        decode=decode,
        decode_tokens=sum(r.decode.tokens for r in results if isinstance(r, CaseResult)),
        estimated=any(r.meter_kind != "measured" for r in results),
    )


def format_energy(joules: float) -> str:
    magnitude = abs(joules)
    if magnitude >= 3.6e6:
        return f"{joules / 3.6e6:.4g} kWh"
    if magnitude >= 1e3:
        return f"{joules / 1e3:.4g} kJ"
    if magnitude >= 1 or magnitude == 0:
        return f"{joules:.4g} J"
    return f"{joules * 1e3:.4g} mJ"


def _measured(budget: Budget, fig: Figures) -> Optional[float]:
    if budget.scope == "prefill":
        return fig.prefill
    if budget.scope == "decode":
        return fig.decode
    if budget.scope == "decode-per-token":
        return fig.decode_per_token
    return fig.total


def violation(budget: Budget, fig: Figures, what: str, basis: str = "gross") -> Optional[str]:
    """A one-line message when ``fig`` exceeds ``budget``, else None."""
    value = _measured(budget, fig)
    if value is None or value <= budget.joules:
        return None
    excess = value - budget.joules
    label = "decode energy per token" if budget.scope == "decode-per-token" else (
        f"{budget.scope} energy" if budget.scope in ("prefill", "decode") else "energy")
    estimate = " (an estimate from CPU time, not a sensor reading)" if fig.estimated else ""
    return (
        f"{what}: {basis} {label} {format_energy(value)} exceeds budget {budget.text} "
        f"by {format_energy(excess)} ({excess / budget.joules:+.0%}){estimate}"
    )


def run_violations(budgets: Sequence[Budget], results: Sequence["CaseResult | BlockResult"],
                   markers_of: Mapping[str, set[str]], idle_watts: float = 0.0,
                   basis: str = "gross") -> list[str]:
    """Run-scoped budgets (run, suite:NAME, marker:NAME) checked against the session."""
    failures = []
    for budget in budgets:
        if budget.per_test:
            continue
        if budget.scope == "run":
            selected, what = list(results), "run"
        elif budget.scope.startswith("suite:"):
            name = budget.scope.partition(":")[2]
            selected = [r for r in results if isinstance(r, CaseResult) and r.suite == name]
            what = f"suite {name}"
        else:
            name = budget.scope.partition(":")[2]
            selected = [r for r in results if name in markers_of.get(r.test_id, set())]
            what = f"tests marked {name}"
        if selected:
            message = violation(budget, figures(selected, idle_watts), what, basis)
            if message:
                failures.append(message)
    return failures
