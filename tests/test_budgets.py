"""The budget grammar, every scope, the energy marker, gross and net energy."""

import json

import pytest

from pytest_llm_energy.budgets import (
    Budget,
    BudgetError,
    figures,
    format_energy,
    marker_budgets,
    parse_budget,
    parse_budgets,
    parse_energy,
    run_violations,
    violation,
)
from pytest_llm_energy.results import BlockResult, CaseResult, PhaseEnergy


@pytest.mark.parametrize("text, joules", [
    ("20J", 20.0), ("20 J", 20.0), ("20j", 20.0), ("2.5kJ", 2500.0), ("2.5 KJ", 2500.0),
    ("4mJ", 0.004), ("4 mj", 0.004), ("1Wh", 3600.0), ("0.5 kWh", 1.8e6), (".5J", 0.5), ("1e3 J", 1000.0),
])
def test_energy_units(text, joules):
    assert parse_energy(text) == pytest.approx(joules)


@pytest.mark.parametrize("text, scope", [
    ("2.5kJ", "run"), ("run=1J", "run"), ("per-test=20J", "per-test"), ("prefill=2J", "prefill"),
    ("decode=15 J", "decode"), ("decode-per-token=4mJ", "decode-per-token"),
    ("suite:humaneval=1kJ", "suite:humaneval"), ("marker:slow=500J", "marker:slow"), ("PER-TEST=1J", "per-test"),
])
def test_scopes(text, scope):
    assert parse_budget(text).scope == scope


@pytest.mark.parametrize("text, message", [
    ("per-tst=20J", "unknown budget scope 'per-tst'"),
    ("20", "cannot read energy '20'"),
    ("20 W", "unknown energy unit 'W'"),
    ("decode=lots", "cannot read energy 'lots'"),
    ("suite:=1J", "unknown budget scope 'suite:'"),
])
def test_malformed_budgets_name_the_bad_part(text, message):
    with pytest.raises(BudgetError, match=message):
        parse_budget(text)


def test_comma_separated_and_repeated():
    budgets = parse_budgets(["per-test=20J, decode-per-token=4mJ", "1kJ"])
    assert [b.scope for b in budgets] == ["per-test", "decode-per-token", "run"]


def test_marker_budgets():
    budgets = marker_budgets({"budget": "20 J", "decode_per_token": "5 mJ"})
    assert [(b.scope, b.joules) for b in budgets] == [("per-test", 20.0), ("decode-per-token", 0.005)]
    with pytest.raises(BudgetError, match="unknown energy marker argument 'bugdet'"):
        marker_budgets({"bugdet": "1J"})


def case(test_id, prefill=1.0, decode=4.0, tokens=8, suite="prompt", kind="measured", seconds=1.0):
    return CaseResult(test_id, suite, PhaseEnergy(prefill, seconds, 10), PhaseEnergy(decode, seconds, tokens),
                      "nvml", kind, test_id=test_id)


def test_violation_names_budget_value_and_excess():
    fig = figures([case("t", decode=6.0, tokens=1000)])
    message = violation(Budget("decode-per-token", 0.004, "decode-per-token=4mJ"), fig, "this test")
    assert message == ("this test: gross decode energy per token 6 mJ exceeds budget decode-per-token=4mJ "
                       "by 2 mJ (+50%)")
    assert violation(Budget("decode", 10.0, "decode=10J"), fig, "this test") is None


def test_estimated_figures_are_gated_but_say_so():
    fig = figures([case("t", kind="estimated")])
    message = violation(Budget("per-test", 1.0, "per-test=1J"), fig, "this test")
    assert message.endswith("(an estimate from CPU time, not a sensor reading)")


def test_net_energy_subtracts_idle_power_times_time():
    fig = figures([case("t", prefill=3.0, decode=5.0, seconds=1.0)], idle_watts=2.0)
    assert fig.prefill == pytest.approx(1.0) and fig.decode == pytest.approx(3.0) and fig.total == pytest.approx(4.0)


def test_run_suite_and_marker_scopes():
    results = [
        case("a.py::t1", suite="humaneval"),
        case("a.py::t2", suite="humaneval"),
        case("b.py::t3", suite="prompt"),
        BlockResult("x", PhaseEnergy(10.0, 1.0), "nvml", "measured", test_id="b.py::t3"),
    ]
    budgets = parse_budgets(["run=20J", "suite:humaneval=9J", "suite:prompt=100J", "marker:slow=4J", "per-test=1J"])
    failures = run_violations(budgets, results, {"b.py::t3": {"slow"}})
    assert failures == [
        "run: gross energy 25 J exceeds budget run=20J by 5 J (+25%)",
        "suite humaneval: gross energy 10 J exceeds budget suite:humaneval=9J by 1 J (+11%)",
        "tests marked slow: gross energy 15 J exceeds budget marker:slow=4J by 11 J (+275%)",
    ]


def test_format_energy():
    assert [format_energy(j) for j in (0.004, 2.0, 2500.0, 7.2e6)] == ["4 mJ", "2 J", "2.5 kJ", "2 kWh"]


TESTS = """
import pytest

@pytest.mark.energy(budget="1 mJ")
def test_tight(energy):
    energy.generate("def f():\\n", max_new_tokens=4)

@pytest.mark.energy(decode_per_token="100 J")
def test_roomy(energy):
    energy.generate("def f():\\n", max_new_tokens=4)

def test_unbudgeted(energy):
    energy.generate("def f():\\n", max_new_tokens=4)
"""


def test_marker_budget_fails_only_its_test(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*energy budget exceeded: this test: gross energy * exceeds budget @energy(budget='1 mJ') by *"
        "(an estimate from CPU time, not a sensor reading)",
        "FAILED *test_tight*",
    ])


def test_cli_per_test_budget_and_run_budget(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate",
                                "--energy-budget=per-test=1000J", "--energy-budget=1 mJ", "--energy-json=b.json")
    result.assert_outcomes(passed=2, failed=1)  # only the marker's budget fails a test
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ENERGY GATES*", "FAILED run: gross energy * exceeds budget 1 mJ by *"])
    gates = json.loads((pytester.path / "b.json").read_text())["gates"]["failed"]
    assert len(gates) == 1 and gates[0].startswith("run: gross energy")


def test_run_budget_alone_fails_the_session_with_passing_tests(pytester):
    pytester.makepyfile("def test_a(energy):\n    energy.generate('x', max_new_tokens=4)\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-budget=1mJ")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_ini_budgets_as_lines(pytester):
    pytester.makeini("[pytest]\nenergy_budget =\n    per-test=1 mJ\n    decode=1000 J\n")
    pytester.makepyfile("def test_a(energy):\n    energy.generate('x', max_new_tokens=4)\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*exceeds budget per-test=1 mJ*"])


def test_net_basis_with_idle_measurement(pytester):
    pytester.makepyfile("def test_a(energy):\n    energy.generate('x', max_new_tokens=4)\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate", "--energy-idle=0.1",
                                "--energy-budget-basis=net", "--energy-budget=per-test=1mJ", "--energy-json=n.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*llm-energy: idle power * W over 0.1 s*", "*this test: net energy*"])
    idle = json.loads((pytester.path / "n.json").read_text())["session"]["idle"]
    assert idle["seconds"] == 0.1 and idle["watts"] >= 0


@pytest.mark.parametrize("args, message", [
    (["--energy-budget=per-tst=20J"], "ERROR: --energy-budget: unknown budget scope 'per-tst' in 'per-tst=20J'; *"),
    (["--energy-budget=20 W"], "ERROR: --energy-budget: unknown energy unit 'W' in '20 W': use J, kJ, mJ, Wh or kWh"),
    (["--energy-budget-basis=net"], "ERROR: --energy-budget-basis=net needs --energy-idle=SECONDS*"),
    (["--energy-idle=-1"], "ERROR: --energy-idle='-1': expected seconds in [[]0, 600[]]"),
])
def test_bad_budget_options_are_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_malformed_marker_fails_its_test_with_the_reason(pytester):
    pytester.makepyfile("""
import pytest

@pytest.mark.energy(budget="twenty")
def test_a(energy):
    energy.generate("x", max_new_tokens=2)
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=estimate")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.energy: cannot read energy 'twenty'*"])
