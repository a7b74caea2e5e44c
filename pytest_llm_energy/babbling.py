"""Babbling: code a model keeps writing after its solution is complete.

Detection (always on) finds, for a finished completion, the earliest
line-boundary prefix that passes the task's tests; every token generated after
it is a *babble token*. Suppression ends generation early:

- ``stop``: stop strings and end-of-function detection (a new top-level
  statement after the function body);
- ``tests``: the method of Solovyeva & Castor (2026): at each completed line, if
  the code so far compiles, run the task's tests in the sandbox and stop the
  moment they pass. Checks run in the background while decoding goes on, and
  their time and energy fall inside the metered decode window.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .sandbox import CheckResult, Sandbox

MODES = ("off", "stop", "tests", "both")

# A line that starts in column 0 with something other than whitespace ends
# the function body a base model was asked to complete.
_TOP_LEVEL = re.compile(r"\n(?=\S)")


def compiles(source: str) -> bool:
    """True when ``source`` is valid Python. Compiling executes nothing."""
    try:
        compile(source, "<prefix>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return False
    return True


def line_prefixes(completion: str) -> list[int]:
    """End positions of the completion's line-boundary prefixes, shortest first."""
    ends = [m.end() for m in re.finditer(r"\n", completion)]
    if not ends or ends[-1] != len(completion):
        ends.append(len(completion))
    return ends


@dataclass(frozen=True)
class Detection:
    """Where a completion first passed, if it did."""

    passing_prefix: Optional[int]  # characters of the completion up to and including that line
    checks: int


def find_passing_prefix(sandbox: Sandbox, problem: Mapping[str, Any], completion: str,
                        max_checks: int = 200) -> Detection:
    """The earliest line-boundary prefix of ``completion`` that passes the tests."""
    checks = 0
    for end in line_prefixes(completion):
        prefix = completion[:end]
        if not prefix.strip() or not compiles(problem["prompt"] + prefix):
            continue
        if checks >= max_checks:
            break
        checks += 1
        if sandbox.check(problem, prefix).passed:
            return Detection(end, checks)
    return Detection(None, checks)


class EndOfFunction:
    """``stop`` suppression: end at the first top-level line after the body."""

    def __init__(self) -> None:
        self.cut_at: Optional[int] = None

    def on_text(self, text: str, new_text: str) -> bool:
        start = max(0, len(text) - len(new_text) - 1)
        match = _TOP_LEVEL.search(text, start)
        if match is None:
            return False
        self.cut_at = match.start() + 1  # keep the newline that ended the body
        return True


class TestsPass:
    """``tests`` suppression: stop once the code so far passes the task's tests.

    At each completed line whose code compiles, a check is submitted to the
    sandbox. With ``background=True`` checks run on other threads while
    decoding continues, so a check costs the decode loop nothing but a queue
    put; the cut is still the earliest passing prefix, because a stop waits for
    the checks of earlier prefixes that are still running.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, sandbox: Sandbox, problem: Mapping[str, Any], background: bool = True) -> None:
        self.sandbox = sandbox
        self.problem = problem
        self.background = background
        self.cut_at: Optional[int] = None
        self.checks = 0
        self.check_seconds = 0.0
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: list[tuple[int, Future[CheckResult]]] = []
        # Set from the checking threads when any check passes, so the decode
        # loop asks one flag per token instead of scanning every future.
        self._some_passed = threading.Event()
        self._last_checked = -1

    def on_text(self, text: str, new_text: str) -> bool:
        if "\n" in new_text:
            end = text.rfind("\n") + 1
            if end > self._last_checked:
                self._last_checked = end
                prefix = text[:end]
                if prefix.strip() and compiles(self.problem["prompt"] + prefix):
                    self._submit(end, prefix)
        return self._settle(wait=False)

    def _submit(self, end: int, prefix: str) -> None:
        self.checks += 1
        if not self.background:
            result = self.sandbox.check(self.problem, prefix)
            self.check_seconds += result.seconds
            if result.passed and self.cut_at is None:
                self.cut_at = end
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.sandbox.workers, thread_name_prefix="llm-energy-tests")
        future = self._pool.submit(self.sandbox.check, self.problem, prefix)
        future.add_done_callback(self._note_pass)
        self._pending.append((end, future))

    def _note_pass(self, future: "Future[CheckResult]") -> None:
        if not future.cancelled() and future.exception() is None and future.result().passed:
            self._some_passed.set()

    def _settle(self, wait: bool) -> bool:
        """True once a prefix passed; ``cut_at`` is then the earliest passing one.

        Without ``wait`` it only acts when some finished check passed; it then
        waits for the checks of earlier prefixes, whose answer decides the cut.
        With ``wait`` it waits for every check in flight.
        """
        if self.cut_at is not None:
            return True
        if not wait and not self._some_passed.is_set():
            return False
        passed = [end for end, future in self._pending if future.done() and future.result().passed]
        if not passed and not wait:
            return False
        earliest = min(passed) if passed else None
        for end, future in self._pending:  # submitted in increasing order of end
            if earliest is not None and end >= earliest:
                break
            if future.result().passed:
                earliest = end
                break
        if earliest is None:
            return False
        self.cut_at = earliest
        return True

    def finish(self) -> None:
        """Settle the checks in flight, then drop the rest."""
        if self._pool is not None:
            self._settle(wait=True)
            for _, future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        for _, future in self._pending:
            if future.done() and not future.cancelled():
                self.check_seconds += future.result().seconds
        self._pending = []


def babble_tokens(new_tokens: int, tokens_to_pass: Optional[int]) -> Optional[int]:
    """Tokens generated after the completion first passed (None: it never did)."""
    if tokens_to_pass is None:
        return None
    return max(0, new_tokens - tokens_to_pass)


def observers_for(mode: str, sandbox: Optional[Sandbox], problem: Mapping[str, Any],
                  background: bool = True) -> Sequence[Any]:
    if mode == "off":
        return []
    if mode == "stop":
        return [EndOfFunction()]
    if mode == "tests":
        if sandbox is None:
            raise ValueError("babbling suppression 'tests' needs a sandbox")
        return [TestsPass(sandbox, problem, background=background)]
    raise ValueError(f"unknown babbling mode {mode!r}; choose one of {', '.join(MODES)}")
