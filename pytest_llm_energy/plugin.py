"""pytest hooks of pytest-llm-energy; the logic lives in the modules they call."""

from __future__ import annotations

import os
import time
from typing import Any, Generator, Optional

import pytest

from . import hookspecs
from .budgets import BudgetError, figures, marker_budgets, run_violations, violation
from .fixture import ROUND_ID, EnergyFixture, HumanEvalCase, LongBenchCase
from .gates import accuracy_gates, code_sim_gates
from .plots import write_plots
from .options import Settings, add_options
from .results import collapse_repeats
from .baseline import BaselineError
from .report import (
    comparison_document,
    amplification_lines,
    comparison_lines,
    humaneval_lines,
    longbench_lines,
    json_document,
    junit_properties,
    markdown_document,
    summary_lines,
    write_json,
    write_markdown,
)
from .tasks.humaneval import DataError, humaneval_parameters, load_problems
from .tasks.longbench import DataError as LongBenchDataError
from .tasks.longbench import longbench_parameters
from .session import REPORT_ATTRIBUTE, REPORT_MARKERS, EnergySession

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
    config.addinivalue_line(
        "markers",
        "humaneval(tasks='all'): run the test once per HumanEval task (and babbling mode) "
        "with the humaneval_case fixture; tasks: all, N, N-M, 'HumanEval/N' or a list",
    )
    config.addinivalue_line(
        "markers",
        "energy(budget='20 J', prefill=None, decode=None, decode_per_token='5 mJ'): energy budgets of "
        "this test; it fails when what it measured exceeds one",
    )
    config.addinivalue_line(
        "markers",
        "longbench(subset='lcc', limit=None, languages=None): run the test once per LongBench code "
        "record (lcc or repobench-p) with the longbench_case fixture; data from --longbench-dir",
    )
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    energy = _session(metafunc.config)
    if energy is None:
        return
    if ("llm_energy_round" in metafunc.fixturenames and energy.settings.repeat > 1
            and energy.settings.repeat_order == "rounds"):
        # Each repetition is its own test item; the items are ordered in rounds
        # (pytest_collection_modifyitems), so slow drift does not sit inside
        # one test's repetitions.
        count = energy.settings.repeat
        metafunc.parametrize("llm_energy_round", range(count), indirect=True,
                             ids=[f"{ROUND_ID}{i}" for i in range(count)])
    if "longbench_case" in metafunc.fixturenames:
        _parametrize_longbench(metafunc, energy)
    if "humaneval_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("humaneval")
    spec = energy.settings.humaneval_tasks
    if spec is None and marker is not None:
        spec = marker.kwargs.get("tasks", marker.args[0] if marker.args else "all")
    try:
        params, ids = humaneval_parameters(spec or "all", energy.settings.babbling_modes, energy.settings.samples)
    except (ValueError, DataError) as exc:
        pytest.fail(f"{metafunc.definition.nodeid}: humaneval tasks {spec!r}: {exc}", pytrace=False)
    metafunc.parametrize("humaneval_case", params, ids=ids, indirect=True)


def _parametrize_longbench(metafunc: pytest.Metafunc, energy: EnergySession) -> None:
    marker = metafunc.definition.get_closest_marker("longbench")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    subset = kwargs.get("subset", marker.args[0] if marker is not None and marker.args else "lcc")
    try:
        params, ids, skipped = longbench_parameters(
            energy.settings.longbench_dir or "", subset, kwargs.get("limit"), kwargs.get("languages"))
    except LongBenchDataError as exc:
        # A usage error, raised once collection is over (one line, exit code 4).
        energy.data_errors.append(f"{metafunc.definition.nodeid}: {exc}")
        params, ids, skipped = [], [], []
    for line in skipped:
        if line not in energy.notices:
            energy.notices.append(f"skipped malformed LongBench record {line}")
    metafunc.parametrize("longbench_case", params, ids=ids, indirect=True)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    energy = _session(config)
    if energy is None or energy.settings.repeat <= 1 or energy.settings.repeat_order != "rounds":
        return

    def round_of(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("llm_energy_round", 0) if callspec is not None else 0

    # Stable: within a round, the collection order.
    items[:] = sorted(items, key=round_of)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Load the model before the first test, and only if a test needs it, so a
    # model that cannot load is one usage error rather than N test errors.
    energy = _session(session.config)
    if energy is not None and energy.data_errors:
        raise pytest.UsageError(energy.data_errors[0])
    if energy is not None and any("energy" in getattr(item, "fixturenames", ()) for item in session.items):
        if any("humaneval_case" in getattr(item, "fixturenames", ()) for item in session.items):
            sandbox = energy.sandbox()
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None and not _is_xdist_worker(session.config):
                note = f" (reduced isolation: {sandbox.isolation_note})" if sandbox.isolation_note else ""
                reporter.write_line(f"llm-energy: sandbox {sandbox.isolation}, {sandbox.workers} workers{note}")
        started = time.perf_counter()
        backend = energy.load_backend()
        if energy.settings.idle_seconds > 0 and energy.idle_watts is None:
            watts = energy.measure_idle()
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None and not _is_xdist_worker(session.config):
                reporter.write_line(f"llm-energy: idle power {watts:.3g} W over {energy.settings.idle_seconds:g} s "
                                    f"({energy.meter.name}, {energy.meter.kind})")
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and session.config.get_verbosity() >= 0 and not _is_xdist_worker(session.config):
            info = backend.describe()
            if "served_model" in info:
                what = f"{info['served_model']} served by {info['id']} (version {info.get('server_version') or '?'})"
            else:
                what = (f"{info['id']} on {info['device']} ({info.get('dtype')}, "
                        f"{info.get('parameters', 0) / 1e6:.2f} M parameters)")
            reporter.write_line(f"llm-energy: loaded {what} in {time.perf_counter() - started:.1f} s")


@pytest.fixture
def energy(request: pytest.FixtureRequest, llm_energy_round: Optional[int]) -> EnergyFixture:
    """Generate with the model under test and meter code; see pytest-llm-energy's README."""
    session = _session(request.config)
    assert session is not None, "pytest-llm-energy is not configured"
    fixture = EnergyFixture(session, request.node.nodeid, llm_energy_round)
    request.node.stash[pending_key] = fixture
    session.track(request.node.nodeid, fixture.results)
    return fixture


@pytest.fixture
def llm_energy_round(request: pytest.FixtureRequest) -> Optional[int]:
    """Which repetition this test item is, when repetitions run in rounds (else None)."""
    return getattr(request, "param", None)


def _case_param(request: pytest.FixtureRequest, fixture: str, marker: str, example: str) -> tuple[Any, EnergySession]:
    """The case a marker parametrized this test with, and the session; a clear failure without the marker."""
    param = getattr(request, "param", None)
    if param is None:
        pytest.fail(f"{fixture} needs the {marker} marker: {example}", pytrace=False)
    session = _session(request.config)
    assert session is not None
    return param, session


@pytest.fixture
def humaneval_case(request: pytest.FixtureRequest, energy: EnergyFixture) -> HumanEvalCase:
    """The HumanEval task of this test; ``humaneval_case.run()`` generates, checks and returns a CaseResult."""
    (index, mode, sample), session = _case_param(request, "humaneval_case", "humaneval",
                                                  "@pytest.mark.humaneval(tasks='0-9')")
    return HumanEvalCase(dict(load_problems()[index]), mode, sample, energy, session)


@pytest.fixture
def longbench_case(request: pytest.FixtureRequest, energy: EnergyFixture) -> LongBenchCase:
    """The LongBench record of this test; ``longbench_case.run()`` generates, scores and returns a CaseResult."""
    (subset, index), session = _case_param(request, "longbench_case", "longbench",
                                           "@pytest.mark.longbench(subset='lcc', limit=20)")
    return LongBenchCase(dict(session.longbench_records(subset)[index]), subset, energy, session)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Results ride on the report itself, so they cross xdist workers with it.
    fixture = item.stash.get(pending_key, None)
    if fixture is not None:
        if fixture.results:
            energy = _session(item.config)
            if energy is not None and report.when == "call":
                check_test_budgets(item, report, fixture.results, energy)
            # junitxml writes the properties of the teardown report, which
            # shares the item's list.
            item.user_properties.extend(junit_properties(collapse_repeats(fixture.results)))
            setattr(report, REPORT_ATTRIBUTE, [r.to_dict() for r in fixture.results])
            setattr(report, REPORT_MARKERS, sorted({m.name for m in item.iter_markers()}))
            fixture.results.clear()
        if report.when == "teardown":
            energy = _session(item.config)
            if energy is not None:
                energy.untrack(item.nodeid)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    energy = _session(config)
    if energy is None:
        return
    settings = energy.settings
    asked = bool(settings.budgets or settings.compare_ref or settings.save_name or settings.min_pass_at_1)
    if not energy.results and not energy.model_loaded and not asked:
        return
    terminalreporter.section("llm-energy")
    for line in summary_lines(energy.summary_results, energy.metadata(), energy.settings.mark_bound):
        terminalreporter.write_line(line)
    for line in humaneval_lines(energy.summary_results):
        terminalreporter.write_line(line)
    for line in longbench_lines(energy.summary_results) + amplification_lines(energy.results):
        terminalreporter.write_line(line)
    if energy.comparison is not None:
        for line in comparison_lines(energy.comparison):
            terminalreporter.write_line(line)
    for path in energy.plots:
        terminalreporter.write_line(f"plot: {path}")
    if energy.saved_to:
        terminalreporter.write_line(f"saved run: {energy.saved_to}")
    if energy.gate_failures:
        terminalreporter.section("ENERGY GATES", red=True, bold=True)
        for line in energy.gate_failures:
            terminalreporter.write_line(f"FAILED {line}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    energy = _session(session.config)
    if energy is None:
        return
    # Runs on failures and on Ctrl-C too: measured results are never lost.
    energy.flush_unreported()
    if _is_xdist_worker(session.config):
        # The controller gates and writes the reports; tell it which model the worker ran.
        backend = energy.backend_loaded
        if backend is not None:
            session.config.workeroutput[_WORKER_MODEL_KEY] = backend.describe()  # type: ignore[attr-defined]
        return
    energy.gate_failures = run_violations(
        energy.settings.budgets, energy.summary_results, energy.markers_of, energy.basis_idle_watts,
        energy.settings.budget_basis,
    ) + accuracy_gates(
        energy.summary_results, energy.settings.min_pass_at_1, energy.settings.babbling_max_accuracy_drop
    ) + code_sim_gates(energy.summary_results, energy.settings.min_code_sim)
    document = json_document(energy.results, energy.metadata(), energy.outcomes, int(session.exitstatus))
    try:
        energy.gate_failures += energy.finish_comparison(document)
    except BaselineError as exc:
        energy.gate_failures.append(f"could not save the baseline: {exc}")
    if energy.gate_failures and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if energy.settings.json_path:
        document["session"]["exit_status"] = int(session.exitstatus)
        document["gates"] = {"failed": list(energy.gate_failures)}
        if energy.comparison is not None:
            document["comparison"] = comparison_document(energy.comparison)
        write_json(energy.settings.json_path, document)
    if energy.settings.plot_dir and energy.results:
        energy.plots = write_plots(energy.summary_results, energy.settings.plot_dir)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if energy.settings.markdown_path or (summary_path and energy.results):
        text = markdown_document(energy.summary_results, energy.metadata(), energy.settings.mark_bound,
                                 energy.gate_failures)
        if energy.settings.markdown_path:
            write_markdown(energy.settings.markdown_path, text)
        if summary_path:
            write_markdown(summary_path, text, append=True)


def check_test_budgets(item: pytest.Item, report: pytest.TestReport, results: list, energy: EnergySession) -> None:
    """Fail a passing test whose measured energy exceeds one of its budgets."""
    budgets = [b for b in energy.settings.budgets if b.per_test]
    for marker in item.iter_markers("energy"):
        try:
            budgets += marker_budgets(marker.kwargs)
        except BudgetError as exc:
            report.outcome = "failed"
            report.longrepr = f"@pytest.mark.energy: {exc}"
            return
    if not budgets:
        return
    fig = figures(collapse_repeats(results), energy.basis_idle_watts)
    failures = [m for m in (violation(b, fig, "this test", energy.settings.budget_basis) for b in budgets) if m]
    if failures and report.outcome == "passed":
        report.outcome = "failed"
        report.longrepr = "\n".join(f"energy budget exceeded: {m}" for m in failures)


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
