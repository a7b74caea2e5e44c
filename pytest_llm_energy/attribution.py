"""Prefill and decode energy from a generation's three edges.

Both phases are windows on the same energy curves, so prefill + decode is the
energy of the whole generation by construction. A phase too short for its own
edges to be read (a 10 ms prefill against a counter that moves every 100 ms)
is measured by repetition instead: the same forward pass run back to back for
at least ``min_repeat_s``, starting just after a counter update and ending
just after another, in one window divided by the number of runs (what
optimum-benchmark and the ML.ENERGY benchmark do for whole runs). The decode is
then the whole generation less that prefill. The repetitions' energy is
excluded from every enclosing window, so no case or ``measure`` block pays for
it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .backends.base import Backend, ModelBackend
from .meters.base import COUNTER, DIFFERENCE, REPEATED, Meter, Reading, ShortWindows
from .results import PhaseEnergy

# Past a predicted counter update by this much, the update has happened.
UPDATE_MARGIN_S = 0.002


def too_wide(phase: PhaseEnergy, policy: ShortWindows, share_of_bound: float = 1.0) -> bool:
    share = phase.relative_bound
    return share is not None and share > policy.max_bound * share_of_bound


def attribute(
    meter: Meter,
    backend: ModelBackend,
    edges: tuple[Reading, Reading, Reading],
    prompt_ids: Sequence[int],
    generated: Sequence[int],
) -> tuple[PhaseEnergy, PhaseEnergy]:
    """``(prefill, decode)`` of a generation whose windows were marked at ``edges``."""
    start, first, end = edges
    policy = meter.short_windows
    decode_tokens = len(generated) - 1
    # Every window of the generation is read off the curves in one state, once
    # the counters have moved past its end: then they add up exactly.
    meter.settle(end.t)
    prefill = meter.window(start, first, tokens=len(prompt_ids))
    decode = meter.window(first, end, tokens=decode_tokens)
    # A served model cannot run one forward pass again: its phases are split.
    if policy.mode == "split" or prefill.bound_j is None or not backend.can_repeat:
        return prefill, decode
    repeat_prefill = policy.mode == "repeat" or too_wide(prefill, policy)
    whole = meter.window(start, end, tokens=decode_tokens)
    # The whole generation is prefill + decode: held to half the bound, so the
    # two phases add up to within it.
    # A generation as long as the repetition window would only be run again
    # as a whole: its own window is as good.
    repeat_whole = (decode_tokens > 0 and whole.seconds < policy.min_repeat_s
                    and too_wide(whole, policy, 0.5))
    if not (repeat_prefill or repeat_whole):
        return prefill, decode

    def run_prefill() -> None:
        backend.start().prefill(prompt_ids)

    def run_whole() -> None:
        # The same computation, the tokens fed back instead of chosen.
        decoding = backend.start()
        decoding.prefill(prompt_ids)
        for token in generated[:-1]:
            decoding.step(token)

    if repeat_prefill:
        repeated = measure_repeated(meter, backend, run_prefill, policy)
        prefill = PhaseEnergy(repeated.joules, prefill.seconds, prefill.tokens, prefill.below_resolution,
                              repeated.method, repeated.bound_j, repeated.repeats, repeated.devices)
    if repeat_whole:
        repeated = measure_repeated(meter, backend, run_whole, policy)
        whole = PhaseEnergy(repeated.joules, whole.seconds, decode_tokens, whole.below_resolution,
                            repeated.method, repeated.bound_j, repeated.repeats, repeated.devices)
    bounds = (whole.bound_j, prefill.bound_j)
    decode = PhaseEnergy(
        joules=whole.joules - prefill.joules,
        seconds=decode.seconds,
        tokens=decode_tokens,
        below_resolution=decode.below_resolution,
        method=_labelled(DIFFERENCE, whole.method),
        bound_j=sum(bounds) if None not in bounds else None,  # type: ignore[arg-type]
        repeats=whole.repeats,
        devices={d: j - prefill.devices.get(d, 0.0) for d, j in whole.devices.items()},
    )
    return prefill, decode


def measure_repeated(meter: Meter, backend: Backend, run_once: Callable[[], None],
                     policy: ShortWindows) -> PhaseEnergy:
    """Energy of one ``run_once()``, from back-to-back runs in one long window."""
    clock = meter.clock
    backend.synchronize()
    _sleep_past_update(meter)
    start = meter.mark()
    runs = 0
    target = None
    while True:
        run_once()
        backend.synchronize()
        runs += 1
        now = clock()
        if runs >= policy.max_repeats:
            break
        if now - start.t < policy.min_repeat_s:
            continue
        # End just after a counter update too: then neither edge cuts deep
        # into an update interval.
        if target is None:
            target = meter.next_update(now)
            if target is None or target - now > max(now - start.t, policy.min_repeat_s):
                break
        if now >= target + UPDATE_MARGIN_S:
            break
    end = meter.mark()
    window = meter.window(start, end)
    meter.exclude(start, end)
    return PhaseEnergy(
        joules=window.joules / runs,
        seconds=window.seconds / runs,
        method=_labelled(REPEATED, window.method),
        bound_j=window.bound_j / runs if window.bound_j is not None else None,
        repeats=runs,
        devices={d: j / runs for d, j in window.devices.items()},
    )


def _labelled(method: str, source: str) -> str:
    """``method``, naming its source where that is not the energy counter (``repeat+polled``)."""
    extra = [m for m in source.split("+") if m not in (COUNTER, REPEATED, DIFFERENCE)]
    return "+".join([method, *dict.fromkeys(extra)])


def _sleep_past_update(meter: Meter) -> None:
    now = meter.clock()
    target = meter.next_update(now)
    period = meter.update_period()
    if target is not None and period and target - now <= period:
        meter.timebase.sleep(target - now + UPDATE_MARGIN_S)
