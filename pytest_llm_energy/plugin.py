"""pytest hooks of pytest-llm-energy; the logic lives in the modules they call."""

from __future__ import annotations

import time
from typing import Any, Generator, Optional

import pytest

from . import hookspecs
from .fixture import EnergyFixture
from .options import Settings, add_options
from .report import json_document, summary_lines, write_json
from .session import REPORT_ATTRIBUTE, EnergySession

session_key = pytest.StashKey[EnergySession]()
pending_key = pytest.StashKey[EnergyFixture]()
_COLLECTOR_NAME = "llm-energy-collector"
_WORKER_MODEL_KEY = "llm_energy_model"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # trylast: plugins contributing meters are registered by now.
    energy = EnergySession(config, Settings.from_config(config))
    config.stash[session_key] = energy
    config.pluginmanager.register(_ReportCollector(energy), _COLLECTOR_NAME)


class _ReportCollector:
    """Gathers results from every test report (from xdist workers too)."""

    def __init__(self, energy: EnergySession) -> None:
        self.energy = energy

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.energy.collect_report(report)


def _session(config: pytest.Config) -> Optional[EnergySession]:
    return config.stash.get(session_key, None)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workeroutput")


def pytest_report_header(config: pytest.Config) -> list[str]:
    energy = _session(config)
    if energy is None:
        return []
    meter = energy.meter
    lines = [f"llm-energy: model {energy.settings.model}, meter {meter.name} ({meter.kind})"]
    lines += [f"llm-energy: {device}" for device in meter.devices()]
    lines += [f"llm-energy: note: {notice}" for notice in energy.notices]
    return lines


def pytest_collection_finish(session: pytest.Session) -> None:
    # Load the model before the first test, and only if a test needs it, so a
    # model that cannot load is one usage error rather than N test errors.
    energy = _session(session.config)
    if energy is not None and any("energy" in getattr(item, "fixturenames", ()) for item in session.items):
        started = time.perf_counter()
        backend = energy.load_backend()
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and session.config.get_verbosity() >= 0 and not _is_xdist_worker(session.config):
            info = backend.describe()
            reporter.write_line(
                f"llm-energy: loaded {info['id']} on {info['device']} ({info.get('dtype')}, "
                f"{info.get('parameters', 0) / 1e6:.2f} M parameters) in {time.perf_counter() - started:.1f} s"
            )


@pytest.fixture
def energy(request: pytest.FixtureRequest) -> EnergyFixture:
    """Generate with the model under test and meter code; see pytest-llm-energy's README."""
    session = _session(request.config)
    assert session is not None, "pytest-llm-energy is not configured"
    fixture = EnergyFixture(session, request.node.nodeid)
    request.node.stash[pending_key] = fixture
    session.track(request.node.nodeid, fixture.results)
    return fixture


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Results ride on the report itself, so they cross xdist workers with it.
    fixture = item.stash.get(pending_key, None)
    if fixture is not None:
        if fixture.results:
            setattr(report, REPORT_ATTRIBUTE, [r.to_dict() for r in fixture.results])
            fixture.results.clear()
        if report.when == "teardown":
            energy = _session(item.config)
            if energy is not None:
                energy.untrack(item.nodeid)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    energy = _session(config)
    if energy is None or (not energy.results and not energy.model_loaded):
        return
    terminalreporter.section("llm-energy")
    for line in summary_lines(energy.results, energy.metadata(), energy.meter.resolution_s):
        terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    energy = _session(session.config)
    if energy is None:
        return
    # Runs on failures and on Ctrl-C too: measured results are never lost.
    energy.flush_unreported()
    if _is_xdist_worker(session.config):
        # The controller writes the reports; tell it which model the worker ran.
        backend = energy.backend_loaded
        if backend is not None:
            session.config.workeroutput[_WORKER_MODEL_KEY] = backend.describe()  # type: ignore[attr-defined]
        return
    if energy.settings.json_path:
        document = json_document(energy.results, energy.metadata(), energy.outcomes, int(exitstatus))
        write_json(energy.settings.json_path, document)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    # pytest-xdist: a worker finished; adopt its model description.
    energy = _session(node.config)
    model = getattr(node, "workeroutput", {}).get(_WORKER_MODEL_KEY)
    if energy is not None and model:
        energy.worker_model = model


def pytest_unconfigure(config: pytest.Config) -> None:
    energy = _session(config)
    if energy is not None:
        energy.close()
        collector = config.pluginmanager.get_plugin(_COLLECTOR_NAME)
        if collector is not None:
            config.pluginmanager.unregister(collector)
