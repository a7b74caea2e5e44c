"""Models under test behind one interface."""

from .base import Backend, BackendLoadError, Decoding, ModelBackend, StreamingBackend

__all__ = ["Backend", "BackendLoadError", "Decoding", "ModelBackend", "StreamingBackend"]
