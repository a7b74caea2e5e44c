"""One pytest session's energy state: settings, meter, model, results."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Optional

import pytest

from .backends.base import Backend, BackendLoadError
from .meters import Meter, MeterUnavailable, create_meter
from .options import Settings
from .results import BlockResult, CaseResult, result_from_dict

REPORT_ATTRIBUTE = "llm_energy"


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class EnergySession:
    """Holds what every test shares, and gathers what each test measured.

    The meter is chosen at configure time (so a wrong name is a usage error
    before any test runs) and started lazily; the model is loaded once, when
    the first collected test asks for it.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        extra: dict[str, Any] = {}
        for contributed in config.hook.pytest_llm_energy_meters(config=config):
            extra.update(contributed or {})
        try:
            self.meter, self.notices = create_meter(settings.meter, settings.meter_options, extra)
        except MeterUnavailable as exc:
            raise pytest.UsageError(f"--energy-meter={settings.meter}: {exc}") from None
        self._meter_started = False
        self._backend: Optional[Backend] = None
        # Under pytest-xdist the controller loads no model: workers report theirs.
        self.worker_model: Optional[dict[str, Any]] = None
        self.results: list[CaseResult | BlockResult] = []
        # Results recorded by tests still running; see flush_unreported().
        self._unreported: dict[str, list[CaseResult | BlockResult]] = {}
        self.outcomes: dict[str, str] = {}
        self.started = datetime.now(timezone.utc)

    # -- shared resources ----------------------------------------------------------
    def started_meter(self) -> Meter:
        if not self._meter_started:
            self.meter.start()
            self._meter_started = True
        return self.meter

    def load_backend(self) -> Backend:
        """The model under test, loaded on first call; load errors are usage errors."""
        if self._backend is None:
            from .backends.hf import HFBackend

            try:
                self._backend = HFBackend.load(self.settings.model, self.settings.device, self.settings.dtype)
            except BackendLoadError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._backend

    @property
    def backend_loaded(self) -> Optional[Backend]:
        return self._backend

    # -- results ---------------------------------------------------------------
    def collect_report(self, report: pytest.TestReport) -> None:
        for data in getattr(report, REPORT_ATTRIBUTE, None) or ():
            result = result_from_dict(data)
            self.results.append(result)
            self.config.hook.pytest_llm_energy_result(config=self.config, result=result)
        if report.when == "call" or report.outcome != "passed":
            # A failure in setup or teardown is the test's outcome too.
            if not (report.when == "teardown" and report.outcome == "passed"):
                self.outcomes[report.nodeid] = report.outcome

    def track(self, test_id: str, pending: list[CaseResult | BlockResult]) -> None:
        """Remember a running test's result list until its reports carry them."""
        self._unreported[test_id] = pending

    def untrack(self, test_id: str) -> None:
        self._unreported.pop(test_id, None)

    def flush_unreported(self) -> None:
        """Keep results of tests that never reported (the run was interrupted)."""
        for test_id, pending in self._unreported.items():
            for result in pending:
                self.results.append(result)
                self.config.hook.pytest_llm_energy_result(config=self.config, result=result)
            if pending:
                self.outcomes.setdefault(test_id, "interrupted")
            pending.clear()
        self._unreported.clear()

    def close(self) -> None:
        # Always: a meter that was never started still holds its sensor (NVML).
        self.meter.close()
        self._meter_started = False

    # -- metadata ---------------------------------------------------------------
    def _model_description(self) -> dict[str, Any]:
        if self._backend is not None:
            return self._backend.describe()
        if self.worker_model is not None:
            return dict(self.worker_model)
        return {"id": self.settings.model, "loaded": False}

    @property
    def model_loaded(self) -> bool:
        return self._backend is not None or self.worker_model is not None

    def metadata(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "model": self._model_description(),
            "meter": self.meter.describe(),
            "notices": list(self.notices),
            "generation": {
                "max_new_tokens": self.settings.generation.max_new_tokens,
                "temperature": self.settings.generation.temperature,
                "top_p": self.settings.generation.top_p,
                "seed": self.settings.generation.seed,
            },
            "host": {
                "platform": platform.platform(),
                "machine": platform.machine(),
                "processor": platform.processor(),
            },
            "versions": {
                "python": sys.version.split()[0],
                "pytest": pytest.__version__,
                "pytest-llm-energy": _version("pytest-llm-energy"),
                "torch": _version("torch"),
                "transformers": _version("transformers"),
                "nvidia-ml-py": _version("nvidia-ml-py"),
            },
        }
