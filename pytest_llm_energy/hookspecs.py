"""Hooks this plugin offers to other plugins (registered via ``pytest_addhooks``).

Implement them in a ``conftest.py`` or an installed plugin::

    def pytest_llm_energy_meters(config):
        return {"wallplug": lambda options: WallPlugMeter()}

and select the meter with ``--energy-meter=wallplug``. A plugin can also provide
the model under test (``pytest_llm_energy_make_backend``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .meters import MeterFactory
    from .results import BlockResult, CaseResult

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_llm_energy_meters(config: Any) -> "Mapping[str, MeterFactory]":
    """Contribute meters by name.

    Return a mapping from meter name to a factory called with a
    :class:`pytest_llm_energy.meters.MeterOptions`; the factory returns a
    :class:`pytest_llm_energy.meters.Meter` or raises
    :class:`pytest_llm_energy.meters.MeterUnavailable` with a one-line reason.
    """


@hookspec(firstresult=True)
def pytest_llm_energy_make_backend(config: Any, model: str, device: str, dtype: str, device_map: str) -> Any:
    """Provide the model under test for ``--energy-model=model``.

    ``device_map`` is ``--energy-device-map`` ("" when the model goes on ``device``).

    Return a :class:`pytest_llm_energy.backends.Backend` (driven token by
    token: a scripted backend for tests...), a
    :class:`pytest_llm_energy.backends.StreamingBackend` (whole completions as
    a stream: a client of another serving stack), or None to let the built-in
    backends load it. Raise
    :class:`pytest_llm_energy.backends.BackendLoadError` with a one-line reason
    when it cannot load.
    """


@hookspec
def pytest_llm_energy_result(config: Any, result: "CaseResult | BlockResult") -> None:
    """Called for every result as it is collected (in the controlling process)."""
