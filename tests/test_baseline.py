"""Saving runs, comparing with them, and the regression gate."""

import json

import pytest

from pytest_llm_energy.baseline import BaselineError, parse_bounds

METER = """
import os
from pytest_llm_energy.meters import Meter, Reading

class Scaled(Meter):
    # Every read adds LLM_ENERGY_TEST_JOULES joules, one second apart: energy is exact.
    name = "scaled"

    def __init__(self):
        super().__init__()
        self.reads = 0

    def read(self):
        self.reads += 1
        step = float(os.environ.get("LLM_ENERGY_TEST_JOULES", "1"))
        return Reading(t=float(self.reads), joules=self.reads * step)

def pytest_llm_energy_meters(config):
    return {"scaled": lambda options: Scaled()}
"""

TESTS = """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_gen(energy, n):
    energy.generate("def f():\\n", max_new_tokens=4)
"""


@pytest.fixture
def project(pytester):
    pytester.makeconftest(METER)
    pytester.makepyfile(TESTS)
    return pytester


def run(pytester, *args):
    # Three repetitions in rounds: each of the 3 tests runs as 3 items.
    return pytester.runpytest("-p", "no:cacheprovider", "--energy-meter=scaled", "--energy-repeat=3", *args)


def test_save_then_compare_without_change_passes(project):
    run(project, "--energy-save=main").assert_outcomes(passed=9)
    saved = project.path / ".llm-energy" / "0001_main.json"
    document = json.loads(saved.read_text())
    assert document["name"] == "main" and document["fingerprint"]["meter"] == "scaled"
    assert {"gpus", "cpu", "torch", "transformers", "model", "model_revision", "babbling", "commit", "time"} \
        <= document["fingerprint"].keys()
    result = run(project, "--energy-compare", "--energy-compare-fail=total_j:5%,decode_j_per_token:5%",
                 "--energy-json=c.json")
    result.assert_outcomes(passed=9)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["comparison with *0001_main.json", "suite prompt *+0.0%*"])
    comparison = json.loads((project.path / "c.json").read_text())["comparison"]
    assert comparison["fingerprint_differences"] == []
    assert all(t["change"] == pytest.approx(0.0) for t in comparison["tests"])


def test_regression_beyond_the_bound_fails_the_session(project, monkeypatch):
    run(project, "--energy-save=main").assert_outcomes(passed=9)
    monkeypatch.setenv("LLM_ENERGY_TEST_JOULES", "1.3")
    result = run(project, "--energy-compare=main", "--energy-compare-fail=total_j:10%")
    result.assert_outcomes(passed=9)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # Every test moved alike: one regression of the whole run, not one per test.
    result.stdout.fnmatch_lines([
        "*ENERGY GATES*",
        "FAILED the whole run: total_j +30.0% (interval * is beyond total_j:10%",
    ])
    assert "FAILED *test_gen" not in result.stdout.str()
    # Within the bound: passes.
    assert run(project, "--energy-compare=main", "--energy-compare-fail=total_j:40%").ret == 0


def test_saves_are_numbered_and_never_overwritten(project):
    run(project, "--energy-save=main")
    run(project, "--energy-save=main")
    run(project, "--energy-save=other")
    names = sorted(p.name for p in (project.path / ".llm-energy").iterdir())
    assert names == ["0001_main.json", "0002_main.json", "0003_other.json"]
    result = run(project, "--energy-compare=main")
    result.stdout.fnmatch_lines(["comparison with *0002_main.json"])
    result = run(project, "--energy-compare=1")
    result.stdout.fnmatch_lines(["comparison with *0001_main.json"])


@pytest.mark.parametrize("content", ['{"schema": "pytest-llm-energy/1", "results": [', "not json at all", ""])
def test_corrupt_or_truncated_baseline_is_one_clear_error_and_untouched(project, content):
    store = project.path / ".llm-energy"
    store.mkdir()
    damaged = store / "0001_main.json"
    damaged.write_text(content)
    result = run(project, "--energy-compare=main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --energy-compare=main: *0001_main.json is not a saved run "
                                 "(truncated or not JSON: *); delete it or save a new one with --energy-save"])
    assert "Traceback" not in result.stderr.str()
    assert damaged.read_text() == content
    run(project, "--energy-save=main").assert_outcomes(passed=9)
    assert damaged.read_text() == content and (store / "0002_main.json").is_file()


def test_wrong_schema_and_malformed_results_are_named(project):
    store = project.path / ".llm-energy"
    store.mkdir()
    (store / "0001_a.json").write_text(json.dumps({"schema": "other"}))
    (store / "0002_b.json").write_text(json.dumps({"schema": "pytest-llm-energy/1", "results": [{"kind": "case"}]}))
    run(project, "--energy-compare=a").stderr.fnmatch_lines(["*is not a pytest-llm-energy saved run*"])
    run(project, "--energy-compare=b").stderr.fnmatch_lines(["*holds a malformed result (KeyError*"])


def test_fingerprint_mismatch_is_warned_about(project):
    run(project, "--energy-save=main")
    saved = project.path / ".llm-energy" / "0001_main.json"
    document = json.loads(saved.read_text())
    document["fingerprint"]["torch"] = "1.0.0"
    saved.write_text(json.dumps(document))
    result = run(project, "--energy-compare")
    result.stdout.fnmatch_lines(["warning: the baseline ran elsewhere: torch: '1.0.0' -> *"])


def test_comparing_with_nothing_saved_says_what_to_do(project):
    result = run(project, "--energy-compare")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --energy-compare=latest: no saved runs in *.llm-energy; "
                                 "save one first with --energy-save=NAME"])


@pytest.mark.parametrize("args, message", [
    (["--energy-compare-fail=total_j:10%"], "ERROR: --energy-compare-fail needs a run to compare with*"),
    (["--energy-compare", "--energy-compare-fail=total:10%"], "ERROR: --energy-compare-fail='total:10%': cannot read*"),
    (["--energy-save=../escape"], "ERROR: --energy-save: baseline name '../escape' may only hold*"),
])
def test_bad_baseline_options(project, args, message):
    result = run(project, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_parse_bounds():
    bounds = parse_bounds("decode_j_per_token:10%, total_j:15%,pass_at_1:-0.02")
    assert [(b.metric, b.limit) for b in bounds] == [("decode_j_per_token", 0.10), ("total_j", 0.15),
                                                     ("pass_at_1", -0.02)]
    with pytest.raises(BaselineError, match="expected a percentage such as 10%"):
        parse_bounds("total_j:10")
    with pytest.raises(BaselineError, match="expected a change such as -0.02"):
        parse_bounds("pass_at_1:lots")


def test_accuracy_regression_fails_the_session(pytester):
    pytester.makeconftest("""
import os
from pytest_llm_energy.backends.hf import HFBackend
from pytest_llm_energy.backends.scripted import ScriptedBackend
from pytest_llm_energy.tasks.humaneval import load_problems

def solution(prompt):
    problem = next(p for p in load_problems()[:2] if "def " + p["entry_point"] + "(" in prompt)
    if os.environ.get("LLM_ENERGY_TEST_WRONG") and problem["task_id"] == "HumanEval/1":
        return "    return []\\n"
    return problem["canonical_solution"]

def pytest_llm_energy_make_backend(config, model, device, dtype):
    return ScriptedBackend(HFBackend.load("builtin:tiny", device="cpu"), solution)
""")
    pytester.makepyfile("""
import pytest

@pytest.mark.humaneval(tasks="0-1")
def test_humaneval(humaneval_case):
    humaneval_case.run()
""")
    base = ("-p", "no:cacheprovider", "--energy-meter=estimate")
    pytester.runpytest(*base, "--energy-save=main").assert_outcomes(passed=2)
    import os

    os.environ["LLM_ENERGY_TEST_WRONG"] = "1"
    try:
        result = pytester.runpytest(*base, "--energy-compare", "--energy-compare-fail=pass_at_1:-0.02")
    finally:
        del os.environ["LLM_ENERGY_TEST_WRONG"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["humaneval pass@1: 1.000 -> 0.500 (-0.500)",
                                 "FAILED humaneval pass@1 1.000 -> 0.500 (-0.500) is beyond pass_at_1:-0.02"])
