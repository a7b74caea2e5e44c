"""The ``energy`` fixture: what a test calls to generate and to meter."""

from __future__ import annotations

import abc
import contextlib
import re
from dataclasses import replace
from typing import Any, Iterator, Optional, Sequence

import pytest

from .amplification import DEFAULT_BINS, DEFAULT_NEW_TOKENS, Bin, default_corpus, prompt_ids_for, summarize, usable_bins
from .amplification import SUITE as AMPLIFICATION
from .backends.base import ServedError
from .meters.base import MeterError
from .results import BlockResult, CaseResult, PhaseEnergy
from .runner import Generation, GenerationConfig, TokenObserver, generate
from .session import EnergySession


ROUND_ID = "energy-round-"
_ROUND_IN_ID = re.compile(r"(?:-" + ROUND_ID + r"\d+(?=\]|-))|(?:" + ROUND_ID + r"\d+-?)")


def repeats(count: int, round_index: Optional[int] = None) -> list[Optional[int]]:
    """Repetition indices to run: one unrecorded warm-up (None) first when repeating.

    In rounds (``round_index`` given) this test item runs only its round's
    repetition; the first round warms up first.
    """
    if round_index is not None:
        return [None, round_index] if round_index == 0 and count > 1 else [round_index]
    return list(range(count)) if count <= 1 else [None, *range(count)]


def test_id_without_round(nodeid: str) -> str:
    """``t.py::test[a-energy-round-2]`` -> ``t.py::test[a]``: rounds of one test share an id."""
    stripped = _ROUND_IN_ID.sub("", nodeid)
    return stripped[:-2] if stripped.endswith("[]") else stripped


class Measurement:
    """Filled in when its ``energy.measure`` block exits."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.energy: Optional[PhaseEnergy] = None


class EnergyFixture:
    """Generate with the model under test, or meter any block of code.

    Every figure is recorded against the running test and reported at the end
    of the session.
    """

    def __init__(self, session: EnergySession, test_id: str, round_index: Optional[int] = None) -> None:
        self._session = session
        self._test_id = test_id_without_round(test_id)
        # With repetitions in rounds, the one repetition this test item runs.
        self.round_index = round_index
        self.results: list[CaseResult | BlockResult] = []

    @property
    def meter_name(self) -> str:
        return self._session.meter.name

    @property
    def estimated(self) -> bool:
        return self._session.meter.kind != "measured"

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: Optional[int] = None,
        stop: Sequence[str] = (),
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        label: Optional[str] = None,
        observers: Sequence[TokenObserver] = (),
    ) -> Generation:
        """Run the model on ``prompt``; return the text and both phases' energy.

        Unset arguments take the session's ``--energy-*`` settings.
        """
        base = self._session.settings.generation
        overrides = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
        }
        try:
            config: GenerationConfig = replace(
                base, stop=tuple(stop), **{k: v for k, v in overrides.items() if v is not None}
            )
        except ValueError as exc:
            pytest.fail(f"energy.generate: {exc}", pytrace=False)
        backend = self._session.load_backend()
        meter = self._session.started_meter()
        first = self.round_index or 0
        index = sum(isinstance(r, CaseResult) and r.repeat == first for r in self.results)
        case_id = label or (self._test_id if index == 0 else f"{self._test_id}#{index}")
        generations = []
        for repeat in repeats(self._session.settings.repeat, self.round_index):
            try:
                generation = generate(backend, meter, prompt, config, observers)
            except MeterError as exc:
                pytest.fail(f"energy meter {meter.name!r} failed: {exc}", pytrace=False)
            except ServedError as exc:
                raise pytest.fail.Exception(f"served model: {exc}", pytrace=False) from None
            if repeat is None:
                continue  # the warm-up: caches, allocator, clocks; not recorded
            generations.append(generation)
            self.results.append(CaseResult.from_generation(
                generation, case_id, "prompt", meter, test_id=self._test_id, repeat=repeat))
        return generations[0]

    def amplification(
        self,
        bins: Sequence[int] = DEFAULT_BINS,
        new_tokens: int = DEFAULT_NEW_TOKENS,
        repeats: int = 3,
        text: Optional[str] = None,
    ) -> list[Bin]:
        """Sweep prompt lengths; return prefill J, decode J/token and amplification per bin.

        Every bin generates ``new_tokens`` tokens (end-of-sequence ignored) after
        a prompt of exactly that many tokens cut from ``text`` (default: source
        code of the standard library), ``repeats`` times after one warm-up. Bins
        that do not fit the model's context are left out.
        """
        from .tasks.longbench import model_context

        # The sweep repeats itself (``repeats``): in rounds, it runs in the
        # first round only and later rounds return that round's summary.
        sweeps = self._session.amplification_sweeps
        key = (self._test_id, tuple(bins), new_tokens, repeats)
        if self.round_index and key in sweeps:
            return sweeps[key]
        backend = self._session.load_backend()
        meter = self._session.started_meter()
        fit, dropped = usable_bins(bins, model_context(backend), new_tokens)
        if not fit:
            pytest.fail(f"energy.amplification: no bin of {list(bins)} fits the model's context "
                        f"with {new_tokens} new tokens", pytrace=False)
        corpus = text or default_corpus()
        config = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True)
        recorded: list[CaseResult] = []
        for length in fit:
            ids = prompt_ids_for(backend, corpus, length)
            for repeat in ([None] if length == fit[0] else []) + list(range(repeats)):
                try:
                    generation = generate(backend, meter, "", config, prompt_ids=ids)
                except MeterError as exc:
                    pytest.fail(f"energy meter {meter.name!r} failed: {exc}", pytrace=False)
                except ServedError as exc:
                    raise pytest.fail.Exception(f"served model: {exc}", pytrace=False) from None
                if repeat is None:
                    continue  # warm-up
                result = CaseResult.from_generation(
                    generation, f"{AMPLIFICATION}/{length}", AMPLIFICATION, meter, test_id=self._test_id,
                    repeat=repeat, extra={"bin": length, "dropped_bins": dropped})
                self.results.append(result)
                recorded.append(result)
        sweeps[key] = summarize(recorded)
        return sweeps[key]

    def record(self, result: "CaseResult | BlockResult") -> None:
        """Attach a result measured elsewhere (a HumanEval or LongBench case) to this test."""
        self.results.append(result)

    @contextlib.contextmanager
    def measure(self, label: str) -> Iterator[Measurement]:
        """Meter the energy of the ``with`` block; the result is recorded under ``label``."""
        meter = self._session.started_meter()
        measurement = Measurement(label)
        try:
            start = meter.mark()
        except MeterError as exc:
            pytest.fail(f"energy meter {meter.name!r} failed: {exc}", pytrace=False)
        try:
            yield measurement
        finally:
            # Record even when the block raised: the energy was spent.
            try:
                end = meter.mark()
            except MeterError as exc:
                pytest.fail(f"energy meter {meter.name!r} failed: {exc}", pytrace=False)
            measurement.energy = meter.window(start, end)
            self.results.append(
                BlockResult(label, measurement.energy, meter.name, meter.kind, test_id=self._test_id)
            )


class _Case(abc.ABC):
    """A benchmark case handed to a test: ``run()`` measures it (with repetitions) and records it."""

    label = "case"

    def __init__(self, energy: EnergyFixture, session: EnergySession) -> None:
        self._energy = energy
        self._session = session
        self.result: Optional[CaseResult] = None

    @abc.abstractmethod
    def _measure_once(self, backend: Any, meter: Any) -> CaseResult:
        """Generate and score the case once."""

    def run(self) -> CaseResult:
        backend = self._session.load_backend()
        meter = self._session.started_meter()
        results = []
        for repeat in repeats(self._session.settings.repeat, self._energy.round_index):
            try:
                result = self._measure_once(backend, meter)
            except MeterError as exc:
                pytest.fail(f"energy meter {meter.name!r} failed: {exc}", pytrace=False)
            except ServedError as exc:
                raise pytest.fail.Exception(f"served model: {exc}", pytrace=False) from None
            except ValueError as exc:
                pytest.fail(f"{self.label}: {exc}", pytrace=False)
            if repeat is None:
                continue  # the warm-up
            result = replace(result, repeat=repeat)
            self._energy.record(result)
            results.append(result)
        self.result = results[0]
        return self.result


class HumanEvalCase(_Case):
    """One HumanEval task in one babbling mode, handed to a test by ``humaneval_case``.

    ``run()`` generates with metered phases, checks the completion in the
    sandbox and returns the CaseResult.
    """

    def __init__(self, problem: dict, mode: str, sample: int, energy: EnergyFixture,
                 session: EnergySession) -> None:
        super().__init__(energy, session)
        self.problem = problem
        self.task_id: str = problem["task_id"]
        self.label = self.task_id
        self.mode = mode
        self.sample = sample

    def _measure_once(self, backend: Any, meter: Any) -> CaseResult:
        from .tasks.humaneval import run_case

        return run_case(self.problem, self.mode, backend, meter, self._session.sandbox(),
                        self._session.settings.humaneval, sample=self.sample, test_id=self._energy._test_id)


class LongBenchCase(_Case):
    """One LongBench code record, handed to a test by ``longbench_case``.

    ``run()`` generates the next line (greedy, 64 tokens) with metered phases
    and returns the scored CaseResult.
    """

    def __init__(self, record: dict, subset: str, energy: EnergyFixture, session: EnergySession) -> None:
        super().__init__(energy, session)
        self.record = record
        self.subset = subset
        self.label = f"{subset}/{record.get('_id', '')}"

    def _measure_once(self, backend: Any, meter: Any) -> CaseResult:
        from .tasks.longbench import run_case

        return run_case(self.record, self.subset, backend, meter, self._session.settings.longbench,
                        test_id=self._energy._test_id)
