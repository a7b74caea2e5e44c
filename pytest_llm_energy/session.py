"""One pytest session's energy state: settings, meter, model, results."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Optional

import pytest

from .backends.base import BackendLoadError, ModelBackend
from .baseline import (
    Baseline,
    BaselineError,
    Comparison,
    compare,
    comparison_failures,
    find_run,
    fingerprint,
    load_run,
    save_run,
)
from .meters import EstimateMeter, Meter, MeterUnavailable, create_meter
from .options import Settings
from .results import BlockResult, CaseResult, collapse_repeats, result_from_dict
from .sandbox import Sandbox, SandboxError
from .tasks.longbench import load_records as load_longbench

REPORT_ATTRIBUTE = "llm_energy"
REPORT_MARKERS = "llm_energy_markers"


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
        self.baseline: Optional[Baseline] = None
        if settings.compare_ref is not None:
            try:
                self.baseline = load_run(find_run(config.rootpath, settings.compare_ref))
            except BaselineError as exc:
                raise pytest.UsageError(f"--energy-compare={settings.compare_ref}: {exc}") from None
        self.comparison: Optional[Comparison] = None
        self.saved_to: Optional[str] = None
        self._meter_started = False
        self._backend: Optional[ModelBackend] = None
        self._sandbox: Optional[Sandbox] = None
        self._server: Optional[Any] = None  # a serve.ServerProcess started for the run
        # Under pytest-xdist the controller loads no model: workers report theirs.
        self.worker_model: Optional[dict[str, Any]] = None
        self.results: list[CaseResult | BlockResult] = []
        # Results recorded by tests still running; see flush_unreported().
        self._unreported: dict[str, list[CaseResult | BlockResult]] = {}
        self.outcomes: dict[str, str] = {}
        self.gate_failures: list[str] = []
        self.data_errors: list[str] = []
        self._longbench: dict[str, list[dict[str, Any]]] = {}
        self.plots: list[str] = []
        # Marker names of each test that reported results (for marker:NAME budgets).
        self.markers_of: dict[str, set[str]] = {}
        # Idle power measured before the first test (--energy-idle).
        self.idle_watts: Optional[float] = None
        # Amplification sweeps already measured, for the later rounds of their test.
        self.amplification_sweeps: dict[Any, Any] = {}
        self.started = datetime.now(timezone.utc)

    # -- shared resources ----------------------------------------------------------
    def started_meter(self) -> Meter:
        if not self._meter_started:
            self.meter.start()
            self._meter_started = True
        return self.meter

    def load_backend(self) -> ModelBackend:
        """The model under test, loaded on first call; load errors are usage errors."""
        if self._backend is None:
            from .backends.hf import HFBackend
            from .backends.served import PREFIX as SERVED_PREFIX

            settings = self.settings
            try:
                backend = self.config.hook.pytest_llm_energy_make_backend(
                    config=self.config, model=settings.model, device=settings.device, dtype=settings.dtype,
                    device_map=settings.device_map,
                )
                if backend is None and settings.model.startswith(SERVED_PREFIX):
                    backend = self._load_served(settings)
                self._backend = backend or HFBackend.load(settings.model, settings.device, settings.dtype,
                                                          settings.device_map)
            except BackendLoadError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._backend

    def _load_served(self, settings: Settings) -> ModelBackend:
        from .backends.served import ServedBackend, parse_spec
        from .serve import ProcessTreeCpu, ServeError, ServerProcess

        pid = settings.server_pid
        if settings.serve:
            self._server = ServerProcess(settings.serve, parse_spec(settings.model), settings.serve_timeout)
            try:
                self._server.start()
            except ServeError as exc:
                self._server.stop()
                raise pytest.UsageError(str(exc)) from None
            pid = self._server.pid
        backend = ServedBackend.load(settings.model, settings.served_model, settings.api_key_env)
        backend.server_command = settings.serve or None
        if pid:
            # Without a sensor the estimate would count only this client: follow
            # the server's whole process tree too, read at the same edges.
            estimates = [m for m in getattr(self.meter, "meters", [self.meter]) if hasattr(m, "add_cpu_source")]
            for estimate in estimates:
                estimate.add_cpu_source(ProcessTreeCpu(pid))
                self.notices.append(f"the estimate follows the CPU time of the server's process tree (pid {pid}) "
                                    "as well as this process's")
        return backend

    @property
    def backend_loaded(self) -> Optional[ModelBackend]:
        return self._backend

    def sandbox(self) -> Sandbox:
        """The sandbox that checks generated code, started on first use."""
        if self._sandbox is None:
            settings = self.settings
            sandbox = Sandbox(
                workers=settings.sandbox_workers,
                timeout=settings.sandbox_timeout,
                memory_mb=settings.sandbox_memory_mb,
                isolation=settings.sandbox_isolation,
            )
            try:
                sandbox.start()
            except SandboxError as exc:
                raise pytest.UsageError(f"--sandbox-isolation={settings.sandbox_isolation}: {exc}") from None
            # Checked code runs in other processes: a CPU-time estimate must
            # count it explicitly (RAPL sees it anyway; NVML does not meter CPUs).
            for meter in getattr(self.meter, "meters", [self.meter]):
                if isinstance(meter, EstimateMeter):
                    meter.add_cpu_source(lambda: sandbox.cpu_seconds)
            self._sandbox = sandbox
        return self._sandbox

    @property
    def sandbox_started(self) -> Optional[Sandbox]:
        return self._sandbox

    # -- results ---------------------------------------------------------------
    def measure_idle(self) -> float:
        """Idle power of what the meter sees, over ``--energy-idle`` seconds of sleep."""
        meter = self.started_meter()
        start = meter.mark()
        meter.timebase.sleep(self.settings.idle_seconds)
        end = meter.mark()
        window = meter.window(start, end)
        self.idle_watts = window.joules / window.seconds if window.seconds > 0 else 0.0
        return self.idle_watts

    @property
    def basis_idle_watts(self) -> float:
        """Idle power to subtract when budgets are checked against net energy."""
        return (self.idle_watts or 0.0) if self.settings.budget_basis == "net" else 0.0

    def collect_report(self, report: pytest.TestReport) -> None:
        markers = getattr(report, REPORT_MARKERS, None)
        if markers:
            self.markers_of[report.nodeid] = set(markers)
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

    def longbench_records(self, subset: str) -> list[dict[str, Any]]:
        if subset not in self._longbench:
            self._longbench[subset] = load_longbench(self.settings.longbench_dir or "", subset).records
        return self._longbench[subset]

    def gpu_fingerprint(self) -> list[dict[str, Any]]:
        for meter in getattr(self.meter, "meters", [self.meter]):
            if hasattr(meter, "fingerprint"):
                return meter.fingerprint()
        return []

    def finish_comparison(self, document: dict[str, Any]) -> list[str]:
        """Compare with the baseline and save this run, as asked; returns gate failures."""
        failures: list[str] = []
        current = fingerprint(document["session"], self.gpu_fingerprint(), self.config.rootpath)
        if self.baseline is not None:
            self.comparison = compare(self.baseline, self.results, current)
            failures = comparison_failures(self.comparison, self.settings.compare_bounds,
                                           self.settings.compare_tolerance, self.settings.compare_detect)
        if self.settings.save_name is not None and self.results:
            saved = dict(document, fingerprint=current, name=self.settings.save_name)
            self.saved_to = str(save_run(self.config.rootpath, self.settings.save_name, saved))
        return failures

    @property
    def summary_results(self) -> list[CaseResult | BlockResult]:
        """Results with repetitions collapsed to medians: what reports and gates read."""
        return collapse_repeats(self.results)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
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
            "sandbox": self._sandbox.describe() if self._sandbox is not None else None,
            "babbling": self.settings.babbling,
            "short_windows": {
                "mode": self.settings.meter_options.short_windows.mode,
                "max_bound": self.settings.meter_options.short_windows.max_bound,
                "min_repeat_s": self.settings.meter_options.short_windows.min_repeat_s,
                "mark_bound": self.settings.mark_bound,
            },
            "idle": ({"watts": self.idle_watts, "seconds": self.settings.idle_seconds}
                     if self.idle_watts is not None else None),
            "budget_basis": self.settings.budget_basis,
            "repeat": self.settings.repeat,
            "budgets": [b.text for b in self.settings.budgets],
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
