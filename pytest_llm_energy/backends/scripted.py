"""A backend that replays a known completion token by token.

It tests what the runner and babbling suppression do with a completion whose
every character is known in advance (say, a canonical solution followed by
babble), and benchmarks them. It borrows a real backend's tokenizer and, with
``run_model=True``, also runs that backend's forward pass for every token, so
decoding costs what a real model's would while the output stays scripted.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from .base import Backend, Decoding


class ScriptedDecoding(Decoding):
    def __init__(self, backend: "ScriptedBackend") -> None:
        self._backend = backend
        self._position = 0
        self._script: list[int] = []
        self._inner: Optional[Decoding] = backend.base.start() if backend.run_model else None

    def _next_logits(self) -> Any:
        script = self._script
        target = script[self._position] if self._position < len(script) else self._backend.end_id
        self._position += 1
        logits = self._backend.torch.full((self._backend.vocab_size,), -1e9)
        logits[target] = 0.0
        return logits

    def prefill(self, prompt_ids: Sequence[int]) -> Any:
        self._script = self._backend.script_for(prompt_ids)
        if self._inner is not None:
            self._inner.prefill(prompt_ids)
        return self._next_logits()

    def step(self, token_id: int) -> Any:
        if self._inner is not None:
            self._inner.step(token_id)
        return self._next_logits()


class ScriptedBackend(Backend):
    """Emits ``script`` (then end-of-sequence); a callable script is given the prompt."""

    def __init__(self, base: Any, script: "str | Callable[[str], str]", run_model: bool = False) -> None:
        import torch

        self.torch = torch
        self.base = base
        self.run_model = run_model
        self.model_id = f"scripted({base.model_id})"
        self.device = base.device
        self.torch_device = getattr(base, "torch_device", "cpu")
        self.script = script
        self.vocab_size = len(base.tokenizer)
        eos = sorted(base.eos_token_ids)
        if not eos:
            raise ValueError("the base backend has no end-of-sequence token")
        self.end_id = eos[0]

    def script_for(self, prompt_ids: Sequence[int]) -> list[int]:
        text = self.script(self.base.decode(prompt_ids)) if callable(self.script) else self.script
        return list(self.base.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.base.decode(ids)

    def start(self) -> ScriptedDecoding:
        return ScriptedDecoding(self)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({self.end_id})

    def synchronize(self) -> None:
        self.base.synchronize()

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "device": self.device, "scripted": True}
