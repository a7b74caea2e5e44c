"""The model-under-test interface the runner drives.

A backend turns text into token ids and back, runs the prompt's forward pass
and then one forward pass per token. The runner owns the loop, so it decides
where the metered windows begin and end.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence


class BackendLoadError(Exception):
    """The model could not be loaded; the message says what to do."""


class Decoding(abc.ABC):
    """The state of one generation: the KV cache and the position in it."""

    @abc.abstractmethod
    def prefill(self, prompt_ids: Sequence[int]) -> Any:
        """Run the prompt's forward pass; return next-token logits (1-D)."""

    @abc.abstractmethod
    def step(self, token_id: int) -> Any:
        """Feed one token; return next-token logits (1-D)."""


class Backend(abc.ABC):
    """A loaded model. ``describe()`` says what it is for reports."""

    model_id: str = ""
    device: str = "cpu"

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, with the special tokens the model expects."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens dropped."""

    @abc.abstractmethod
    def start(self) -> Decoding:
        """A fresh generation state."""

    @property
    @abc.abstractmethod
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end a generation."""

    def synchronize(self) -> None:
        """Wait for queued device work, so a meter read covers it."""

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "device": self.device}
