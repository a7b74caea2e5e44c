"""Models under test behind one interface."""

from .base import Backend, BackendLoadError, Decoding

__all__ = ["Backend", "BackendLoadError", "Decoding"]
