"""The model-under-test interface the runner drives.

Every model turns text into token ids and back (:class:`ModelBackend`). A
:class:`Backend` runs the prompt's forward pass and then one forward pass per
token: the runner owns the loop, so it decides where the metered windows begin
and end. A :class:`StreamingBackend` (a model behind a server) generates whole
completions as a stream, and the windows are read off the stream.
"""

from __future__ import annotations

import abc
from typing import Any, Optional, Sequence


class BackendLoadError(Exception):
    """The model could not be loaded; the message says what to do."""


class ServedError(Exception):
    """A streamed generation failed mid-run (refused, broke off, server gone); the message is one line."""


class Decoding(abc.ABC):
    """The state of one generation: the KV cache and the position in it."""

    @abc.abstractmethod
    def prefill(self, prompt_ids: Sequence[int]) -> Any:
        """Run the prompt's forward pass; return next-token logits (1-D)."""

    @abc.abstractmethod
    def step(self, token_id: int) -> Any:
        """Feed one token; return next-token logits (1-D)."""


class ModelBackend(abc.ABC):
    """What every model under test offers. ``describe()`` says what it is for reports."""

    model_id: str = ""
    device: str = "cpu"
    # Whether one forward pass can be run again on its own (short phases are
    # then measured by repetition, see attribution.py).
    can_repeat: bool = True

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, with the special tokens the model expects."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens dropped."""

    @property
    @abc.abstractmethod
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end a generation."""

    def synchronize(self) -> None:
        """Wait for queued device work, so a meter read covers it."""

    def describe(self) -> dict[str, Any]:
        return {"id": self.model_id, "device": self.device}


class Backend(ModelBackend):
    """A model driven token by token."""

    @abc.abstractmethod
    def start(self) -> Decoding:
        """A fresh generation state."""


class StreamingBackend(ModelBackend):
    """A model that generates whole completions as a stream of chunks (a model server)."""

    can_repeat = False

    @abc.abstractmethod
    def stream(self, prompt_ids: Sequence[int], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0, stop: Sequence[str] = (), ignore_eos: bool = False,
               messages: Optional[list] = None) -> Any:
        """An open stream of chunks (``text``, ``token_ids``, ``finish_reason``, ``stop_reason``,
        ``usage``) with ``close()`` and ``closed_early``; ``messages`` makes it a chat completion."""

    def wait_idle(self, clock: Any, sleep: Any) -> Optional[bool]:
        """Wait until the model runs no request after a stream closed early (None: cannot tell)."""
        return None
