"""Small frozen records that cross module boundaries.

They are plain data: reports serialise them with :func:`dataclasses.asdict`, and
they travel inside pytest reports (and so across xdist workers) as dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

MEASURED = "measured"
ESTIMATED = "estimated"


@dataclass(frozen=True)
class PhaseEnergy:
    """Energy of one metered window (a generation phase or a ``measure`` block).

    ``method`` says how the joules were obtained (``counter``, ``repeat``,
    ``difference``, ``instant``, ``polled``, ``read``); ``bound_j`` is the
    most the figure can be wrong by, in joules (None: not known, as for
    estimated figures). ``below_resolution`` is true when the window was
    shorter than two of the meter's counter update periods.
    """

    joules: float
    seconds: float
    tokens: int = 0
    below_resolution: bool = False
    method: str = "counter"
    bound_j: Optional[float] = None
    repeats: int = 0
    # Joules per metered device (a GPU's label, "cpu package 0", ...) where the
    # meter tells them apart: a model spread over several GPUs shows each one's share.
    devices: dict[str, float] = field(default_factory=dict)

    @property
    def relative_bound(self) -> Optional[float]:
        """``bound_j`` as a share of the figure (inf for a bounded figure of 0 J)."""
        if self.bound_j is None:
            return None
        if self.joules <= 0:
            return 0.0 if self.bound_j == 0 else float("inf")
        return self.bound_j / self.joules

    @property
    def joules_per_token(self) -> Optional[float]:
        return self.joules / self.tokens if self.tokens else None

    @property
    def watts(self) -> Optional[float]:
        return self.joules / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["joules_per_token"] = self.joules_per_token
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PhaseEnergy":
        return cls(
            joules=data["joules"],
            seconds=data["seconds"],
            tokens=data.get("tokens", 0),
            below_resolution=data.get("below_resolution", False),
            method=data.get("method", "counter"),
            bound_j=data.get("bound_j"),
            repeats=data.get("repeats", 0),
            devices=dict(data.get("devices") or {}),
        )


@dataclass(frozen=True)
class CaseResult:
    """One generation under the meter: what was asked, what it cost, how it scored."""

    case_id: str
    suite: str
    prefill: PhaseEnergy
    decode: PhaseEnergy
    meter: str
    meter_kind: str
    babbling: str = "off"
    prompt_tokens: int = 0
    new_tokens: int = 0
    stop_reason: str = ""
    passed: Optional[bool] = None
    score: Optional[float] = None
    babble_tokens: Optional[int] = None
    test_id: str = ""
    repeat: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_generation(cls, generation: Any, case_id: str, suite: str, meter: Any, **fields: Any) -> "CaseResult":
        """The result of one metered generation (a ``runner.Generation``) by ``meter``."""
        return cls(
            case_id=case_id,
            suite=suite,
            prefill=generation.prefill,
            decode=generation.decode,
            meter=meter.name,
            meter_kind=meter.kind,
            prompt_tokens=generation.prompt_tokens,
            new_tokens=generation.new_tokens,
            stop_reason=generation.stop_reason,
            **fields,
        )

    @property
    def total_joules(self) -> float:
        return self.prefill.joules + self.decode.joules

    @property
    def seconds(self) -> float:
        return self.prefill.seconds + self.decode.seconds

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prefill"] = self.prefill.to_dict()
        data["decode"] = self.decode.to_dict()
        data["total_joules"] = self.total_joules
        data["kind"] = "case"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaseResult":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["prefill"] = PhaseEnergy.from_dict(data["prefill"])
        fields["decode"] = PhaseEnergy.from_dict(data["decode"])
        return cls(**fields)


@dataclass(frozen=True)
class BlockResult:
    """Energy of arbitrary code metered with ``energy.measure(label)``."""

    label: str
    energy: PhaseEnergy
    meter: str
    meter_kind: str
    test_id: str = ""

    @property
    def total_joules(self) -> float:
        return self.energy.joules

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "block",
            "label": self.label,
            "energy": self.energy.to_dict(),
            "meter": self.meter,
            "meter_kind": self.meter_kind,
            "test_id": self.test_id,
            "total_joules": self.total_joules,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BlockResult":
        return cls(
            label=data["label"],
            energy=PhaseEnergy.from_dict(data["energy"]),
            meter=data["meter"],
            meter_kind=data["meter_kind"],
            test_id=data.get("test_id", ""),
        )


def result_from_dict(data: dict[str, Any]) -> "CaseResult | BlockResult":
    if data.get("kind") == "block":
        return BlockResult.from_dict(data)
    return CaseResult.from_dict(data)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _median_phase(phases: list[PhaseEnergy]) -> PhaseEnergy:
    first = phases[0]
    bounds = [p.bound_j for p in phases]
    return replace(
        first,
        joules=_median([p.joules for p in phases]),
        seconds=_median([p.seconds for p in phases]),
        below_resolution=any(p.below_resolution for p in phases),
        # The median lies between repetitions: no wronger than the widest bound.
        bound_j=max(bounds) if None not in bounds else None,  # type: ignore[type-var]
        method="+".join(sorted({p.method for p in phases})),
    )


def collapse_repeats(results: "list[CaseResult | BlockResult]") -> "list[CaseResult | BlockResult]":
    """One result per case, its energies the medians over ``--energy-repeat`` repetitions.

    Tokens, verdicts and babble come from the first repetition (greedy
    decoding repeats them exactly). Order follows first appearance.
    """
    groups: dict[tuple[str, str, str], list[CaseResult]] = {}
    order: list["CaseResult | BlockResult | tuple[str, str, str]"] = []
    for result in results:
        if isinstance(result, CaseResult):
            key = (result.test_id, result.case_id, result.babbling)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(result)
        else:
            order.append(result)
    collapsed: "list[CaseResult | BlockResult]" = []
    for item in order:
        if not isinstance(item, tuple):
            collapsed.append(item)
            continue
        group = sorted(groups[item], key=lambda r: r.repeat)
        if len(group) == 1:
            collapsed.append(group[0])
            continue
        collapsed.append(replace(
            group[0],
            prefill=_median_phase([r.prefill for r in group]),
            decode=_median_phase([r.decode for r in group]),
            extra={**group[0].extra, "repeats": len(group)},
        ))
    return collapsed
