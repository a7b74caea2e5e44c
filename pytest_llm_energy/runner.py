"""Phase-split generation: our own token loop, metered at two window edges.

The **prefill** window is the prompt's forward pass up to and including the
choice of the first new token; the **decode** window is every later token. The
device is synchronised and the meter marked only at window edges, never per
token; how the edges become joules (and when a phase is repeated to be read at
all) is :mod:`.attribution`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

from .attribution import attribute
from .backends.base import Backend, ModelBackend, ServedError, StreamingBackend
from .meters.base import Meter
from .results import PhaseEnergy

STOP_EOS = "eos"
STOP_STRING = "stop"
STOP_LENGTH = "length"
STOP_OBSERVER = "observer"


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass(frozen=True)
class Generation:
    """A completion and what each phase of producing it cost."""

    text: str
    prefill: PhaseEnergy
    decode: PhaseEnergy
    prompt_tokens: int
    new_tokens: int
    stop_reason: str
    token_ids: tuple[int, ...] = field(repr=False, default=())
    # Length of the text after each generated token, when text was tracked
    # (observers or stop strings): maps a character position to the token
    # that produced it.
    text_ends: tuple[int, ...] = field(repr=False, default=())

    def tokens_for(self, chars: int) -> int:
        """How many generated tokens it took to produce the first ``chars`` characters."""
        for index, end in enumerate(self.text_ends):
            if end >= chars:
                return index + 1
        return self.new_tokens

    @property
    def total_joules(self) -> float:
        return self.prefill.joules + self.decode.joules


class TokenObserver(Protocol):
    """Sees the completion grow; returns True to end the generation.

    Observers run inside the decode window, so their cost is metered with it.
    Optionally they have ``cut_at`` (where the completion should end once they
    stopped it) and ``finish()`` (called at the end of generation, still
    inside the decode window, to settle work in flight).
    """

    def on_text(self, text: str, new_text: str) -> bool: ...


class StopStrings:
    """Ends generation at the first stop string; the text is cut before it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)
        self.cut_at: Optional[int] = None

    def on_text(self, text: str, new_text: str) -> bool:
        # A stop string can only end inside the fragment just added.
        window_start = max(0, len(text) - len(new_text) - self._longest + 1)
        first = None
        for stop in self.stops:
            pos = text.find(stop, window_start)
            if pos != -1 and (first is None or pos < first):
                first = pos
        if first is None:
            return False
        self.cut_at = first
        return True


class IncrementalText:
    """Detokenises one token at a time without splitting multi-byte characters.

    Decoding a growing id list token by token can emit half a UTF-8 sequence
    (shown as U+FFFD) or change earlier characters (leading-space rules), so the
    text is read from a short window of recent ids and only emitted once stable.
    """

    def __init__(self, backend: Backend) -> None:
        self._decode = backend.decode
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            new_text = after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
            self.text += new_text
            return new_text
        return ""


class TokenPicker:
    """Greedy argmax, or temperature / top-p sampling from a seeded generator."""

    def __init__(self, config: GenerationConfig, device: Any) -> None:
        import torch

        self._torch = torch
        self._greedy = config.temperature == 0
        self._temperature = config.temperature
        self._top_p = config.top_p
        self._generator = None
        if not self._greedy:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(config.seed)

    def __call__(self, logits: Any) -> int:
        torch = self._torch
        if self._greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / self._temperature, dim=-1)
        if self._top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest head whose mass reaches top_p (always >= 1 token).
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < self._top_p
            sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
            choice = torch.multinomial(sorted_probs, 1, generator=self._generator)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=self._generator))


def generate(
    backend: ModelBackend,
    meter: Meter,
    prompt: str,
    config: GenerationConfig = GenerationConfig(),
    observers: Sequence[TokenObserver] = (),
    prompt_ids: Optional[Sequence[int]] = None,
) -> Generation:
    """Generate a completion of ``prompt`` and meter its two phases.

    ``prompt_ids`` gives the prompt as token ids instead (an exact length).
    """
    prompt_ids = list(prompt_ids) if prompt_ids is not None else backend.encode(prompt)
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens")
    if isinstance(backend, StreamingBackend):
        # Chat messages (a list) go to a served model as they are: it applies its own template.
        messages = prompt if isinstance(prompt, list) else None
        return generate_streamed(backend, meter, prompt_ids, config, observers, messages)
    decoding = backend.start()
    pick = TokenPicker(config, getattr(backend, "torch_device", "cpu"))
    eos = frozenset() if config.ignore_eos else backend.eos_token_ids
    stops = StopStrings(config.stop) if config.stop else None
    watchers: list[TokenObserver] = ([stops] if stops else []) + list(observers)
    text = IncrementalText(backend) if watchers else None

    backend.synchronize()
    start = meter.mark()
    token = pick(decoding.prefill(prompt_ids))
    backend.synchronize()
    first = meter.mark()

    generated = [token]
    text_ends: list[int] = []
    reason = STOP_LENGTH
    while True:
        if token in eos:
            reason = STOP_EOS
            break
        if text is not None:
            new_text = text.push(token)
            text_ends.append(len(text.text))
            if new_text and _any_stops(watchers, text.text, new_text):
                reason = STOP_STRING if stops is not None and stops.cut_at is not None else STOP_OBSERVER
                break
        if len(generated) >= config.max_new_tokens:
            break
        token = pick(decoding.step(token))
        generated.append(token)
    _finish(watchers)
    backend.synchronize()
    end = meter.mark()

    # Both windows are attributed after the fact, once the counter has moved
    # past the generation's end.
    prefill, decode = attribute(meter, backend, (start, first, end), prompt_ids, generated)

    if text is not None:
        completion = _cut(text.text if reason in (STOP_EOS, STOP_STRING, STOP_OBSERVER)
                          else backend.decode(generated), watchers)
        if len(text_ends) < len(generated):  # the EOS token adds no text
            text_ends.append(text_ends[-1] if text_ends else 0)
    else:
        body = generated[:-1] if reason == STOP_EOS else generated
        completion = backend.decode(body)
    return Generation(
        text=completion,
        prefill=prefill,
        decode=decode,
        prompt_tokens=len(prompt_ids),
        new_tokens=len(generated),
        stop_reason=reason,
        token_ids=tuple(generated),
        text_ends=tuple(text_ends),
    )


def generate_streamed(backend: StreamingBackend, meter: Meter, prompt_ids: Sequence[int], config: GenerationConfig,
                      observers: Sequence[TokenObserver] = (), messages: Optional[list] = None) -> Generation:
    """A served model's generation: the windows are read off its completion stream.

    Prefill: from sending the request to the first streamed token; decode: from
    there to the last one. The same stop strings and observers watch the
    streamed text; one that asks to stop ends the request by closing the
    stream, and the decode window stays open until the server says it runs no
    request (where it exposes that), so what it still spends is not billed to
    the next test.
    """
    stops = StopStrings(config.stop) if config.stop else None
    watchers: list[TokenObserver] = ([stops] if stops else []) + list(observers)
    start = meter.mark()
    stream = backend.stream(prompt_ids, config.max_new_tokens, temperature=config.temperature,
                            top_p=config.top_p, seed=config.seed, stop=config.stop, ignore_eos=config.ignore_eos,
                            messages=messages)
    first = None
    text = ""
    generated: list[int] = []
    text_ends: list[int] = []
    reason = STOP_LENGTH
    usage: dict[str, Any] = {}
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if first is None and (chunk.token_ids or chunk.text):
            first = meter.mark()
        generated.extend(chunk.token_ids)
        text += chunk.text
        # Chunks may carry several tokens: each ends where its chunk's text does.
        text_ends.extend([len(text)] * len(chunk.token_ids))
        if chunk.text and watchers and _any_stops(watchers, text, chunk.text):
            reason = STOP_STRING if stops is not None and stops.cut_at is not None else STOP_OBSERVER
            stream.close()
            break
        if chunk.finish_reason == "stop":
            reason = STOP_STRING if isinstance(chunk.stop_reason, str) else STOP_EOS
        elif chunk.finish_reason == "length":
            reason = STOP_LENGTH
    _finish(watchers)
    if stream.closed_early:
        # The server learns of the close and stops on its own time: keep the
        # decode window open until it runs no request. A stream that finished
        # needs no wait (the server sent its last token and [DONE]).
        backend.wait_idle(meter.clock, meter.timebase.sleep)
    end = meter.mark()
    if first is None:
        raise ServedError("the server streamed no token")
    if not generated:
        # A server that sends no token ids: its usage says how many. Where in
        # the text each one ended is then unknown: all are taken to end at the
        # end (babbling counts are then upper bounds).
        generated = [0] * int(usage.get("completion_tokens") or 0)
        text_ends = [len(text)] * len(generated)
    prefill, decode = attribute(meter, backend, (start, first, end), prompt_ids, generated or [0])
    return Generation(
        text=_cut(text, watchers),
        prefill=prefill,
        decode=decode,
        prompt_tokens=int(usage.get("prompt_tokens") or len(prompt_ids)),
        new_tokens=len(generated),
        stop_reason=reason,
        token_ids=tuple(generated),
        text_ends=tuple(text_ends),
    )


def _finish(watchers: Sequence[TokenObserver]) -> None:
    for watcher in watchers:
        finish = getattr(watcher, "finish", None)
        if finish is not None:
            finish()


def _cut(text: str, watchers: Sequence[TokenObserver]) -> str:
    """The text up to the earliest point a watcher cut it (a stop string, a passing prefix)."""
    cuts = [c for c in (getattr(w, "cut_at", None) for w in watchers) if c is not None]
    return text[: min(cuts)] if cuts else text


def _any_stops(watchers: Sequence[TokenObserver], text: str, new_text: str) -> bool:
    stop = False
    for watcher in watchers:
        # Every watcher sees every fragment, even once another has asked to stop.
        stop = watcher.on_text(text, new_text) or stop
    return stop
